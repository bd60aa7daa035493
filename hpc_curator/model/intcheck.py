"""Indices are integers: anything else is refused, never truncated.

``np.asarray([0.5, 1.7], dtype=np.int64)`` is ``[0, 1]``: a float index silently names
another index than the one meant. Every index a user or a component hands in (an index list,
``partition_indices`` groups, ``Run.invalidate``/``Run.extend``) goes through
:func:`integer_list` or :func:`integer_indices`: Python ``int`` and numpy integers pass; a
float -- also a whole one such as ``3.0``, on purpose: a computed index is never rounded by
accident -- a bool, a string, ``None`` or anything else is refused with one line
(:class:`~hpc_curator.errors.IndexValueError`, also a ``ValueError``) naming who gave it and
the value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hpc_curator.errors import IndexValueError

_INT64_MAX = int(np.iinfo(np.int64).max)

#: How every refusal ends: the rule, stated once
RULE = "indices must be int or numpy integers; floats are refused even when whole, never truncated"


def is_integer(value: Any) -> bool:
    """Whether ``value`` is an integer index: ``int`` or a numpy integer, not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def short(value: Any, width: int = 60) -> str:
    """``repr(value)``, cut to ``width`` characters (an error message stays one line)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def refused(value: Any, what: str) -> IndexValueError:
    """The one-line error for a value that is not an integer index.

    Parameters
    ----------
    value
        The offending value (echoed with ``repr``, shortened).
    what
        Who gave it, e.g. ``"Src.partition_indices returned"`` or ``"Run.invalidate"``.
    """
    text = short(value)
    kind = type(value).__name__
    if is_integer(value):
        return IndexValueError(f"{what} index {text}, which does not fit in int64", RULE)
    return IndexValueError(f"{what} {text} ({kind}), not an integer index", RULE)


def integer_list(values: Any, what: str) -> list[int]:
    """``values`` (an index or an iterable of indices) as a list of Python ints.

    Parameters
    ----------
    values
        An integer, a list/tuple/range/set of integers or a 0-d or 1-d numpy integer array.
    what
        Who gave the values, for the error message.

    Raises
    ------
    IndexValueError
        A value that is not an integer (see :func:`is_integer`), a nested list, a string.
    """
    if isinstance(values, np.ndarray):
        if values.ndim > 1:
            raise IndexValueError(f"{what} an array of shape {values.shape}, not a flat list")
        if values.dtype.kind in "iu":
            out = np.atleast_1d(values).tolist()
            if values.dtype.kind == "u" and out and max(out) > _INT64_MAX:
                raise refused(max(out), what)
            return out
        if values.size == 0:
            return []
        if values.dtype.kind != "O":
            raise refused(np.atleast_1d(values)[0], what)
        values = np.atleast_1d(values).tolist()
    elif is_integer(values):
        return [int(values)]
    elif isinstance(values, str | bytes | bytearray | dict) or not hasattr(values, "__iter__"):
        raise refused(values, what)
    items = values if type(values) is list else list(values)
    if all(type(v) is int for v in items):  # the common case, in one pass
        bad = [v for v in items if v > _INT64_MAX or v < -_INT64_MAX - 1]
        if bad:
            raise refused(bad[0], what)
        return items
    for v in items:
        if not is_integer(v):
            raise refused(v, what)
    return integer_list([int(v) for v in items], what)


def integer_indices(values: Any, what: str) -> np.ndarray:
    """``values`` as a flat ``int64`` array, refusing anything that is not an integer.

    Parameters
    ----------
    values
        As for :func:`integer_list`; an integer numpy array is converted without a copy
        where its dtype allows.
    what
        Who gave the values, for the error message.

    Raises
    ------
    IndexValueError
        See :func:`integer_list`.
    """
    if isinstance(values, np.ndarray) and values.dtype.kind == "i" and values.ndim == 1:
        return values.astype(np.int64, copy=False)
    return np.asarray(integer_list(values, what), dtype=np.int64)
