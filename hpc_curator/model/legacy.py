"""Stateful filters written for physicsnemo-curator, run transactionally.

The original's stateful filters are duck-typed: a filter with ``flush()`` (writing its
accumulated state to ``self._output_path``) and a static ``merge(paths, output)``. Added to an
hpc-curator pipeline as they are, nothing would ever flush them, so :class:`Pipeline` refuses
them at construction with a one-line error naming :class:`LegacyStatefulFilter`, which runs
them under hpc-curator's commit protocol::

    Pipeline(source).filter(LegacyStatefulFilter(MeanStats(output_path="stats.parquet")))

How it keeps the counts exact:

- one working copy of the filter per commit window; before each index a deep copy of it is
  kept, and a failed index puts that copy back, so a failed index never reaches the state;
- at each commit the working copy's ``_output_path`` is set to the new segment's (temporary)
  path and its own ``flush()`` writes it, file or directory (a Zarr store); a flush that wrote
  nothing there is an error, never a lost shard. A fresh copy of the filter as constructed
  starts the next window;
- the end of the run merges the committed segments with the filter's own ``merge``.

The per-index deep copy costs what copying the filter's accumulated state costs (a few
microseconds for moment sums; keep large read-only members such as models out of it).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hpc_curator.errors import ShardError, UsageError
from hpc_curator.model.pipeline import Item, StatefulFilter


def is_legacy_stateful(f: Any) -> bool:
    """Whether ``f`` follows the original's duck-typed stateful contract."""
    return (
        not isinstance(f, StatefulFilter)
        and callable(getattr(f, "flush", None))
        and hasattr(f, "_output_path")
    )


class LegacyStatefulFilter(StatefulFilter[None]):
    """Adapter for a physicsnemo-curator stateful filter (``flush`` + ``merge``).

    Parameters
    ----------
    inner
        The original filter: ``__call__(items)``, ``flush()`` writing to ``_output_path``,
        and a static (or class) ``merge(paths, output)``.
    name
        Shard directory name (default: the stem of the filter's ``_output_path``).
    output
        Merged output path (default: the filter's ``_output_path``; a ``{worker_id}``
        placeholder becomes ``merged``; without one, ``<run dir>/outputs/<name><suffix>``).
    """

    def __init__(self, inner: Any, name: str | None = None, output: str | None = None) -> None:
        if not (callable(getattr(inner, "flush", None)) and hasattr(inner, "_output_path")):
            raise UsageError(
                f"{type(inner).__qualname__} has no flush() and _output_path",
                "LegacyStatefulFilter wraps physicsnemo-curator style stateful filters only",
            )
        if not callable(getattr(type(inner), "merge", None)):
            raise UsageError(
                f"{type(inner).__qualname__} has flush() but no merge(paths, output)",
                "without it the ranks' shards cannot be combined: add a static merge, or "
                "subclass hpc_curator.StatefulFilter",
            )
        target = getattr(inner, "_output_path", None)
        path = Path(os.fspath(target)) if target else None
        #: the type the user gave ``_output_path`` (a ``pathlib.Path`` stays one: flush() may
        #: call its methods); each segment path is handed back as that type
        self._path_type: Any = Path if isinstance(target, os.PathLike) else str
        self.inner = inner
        self._pristine = copy.deepcopy(inner)
        self._window = copy.deepcopy(inner)
        self._backup: Any = None
        if output is None and path is not None:
            output = str(path).replace("{worker_id}", "merged")
        default = path.name.replace("{worker_id}", "").split(".")[0] if path else ""
        super().__init__(name or default.strip("_-") or type(inner).__name__.lower(), output)
        vars(self)["suffix"] = "".join(path.suffixes[-1:]) if path else ".shard"

    # the state algebra is the inner filter's own (flush/merge), not ours
    @classmethod
    def empty_state(cls) -> None:
        return None

    def observe(self, state: None, item: Item) -> Item:
        return item

    @classmethod
    def combine(cls, a: None, b: None) -> None:
        return None

    @classmethod
    def write_state(cls, state: None, path: str) -> None:
        raise NotImplementedError("LegacyStatefulFilter writes through the inner flush()")

    @classmethod
    def read_state(cls, path: str) -> None:
        raise NotImplementedError("LegacyStatefulFilter reads through the inner merge()")

    # -- the runtime protocol ------------------------------------------------------------
    def __call__(self, items: Iterator[Item]) -> Iterator[Item]:
        yield from self._window(items)

    def begin(self) -> None:
        self._settle()
        self._backup = copy.deepcopy(self._window)

    def _settle(self) -> None:
        """An index neither accepted nor discarded (an exception escaped before its discard,
        e.g. a timeout right at its end) failed: what it observed goes."""
        if self._backup is not None:
            self.discard()

    def accept(self) -> None:
        self.install(None)

    def prepare(self) -> None:
        """Nothing to compute: the index's observations are in the working copy already."""
        return None

    def install(self, prepared: None) -> None:
        """Keep the working copy as it is now (forget the copy from before the index)."""
        self._backup = None
        self._dirty = True

    def discard(self) -> None:
        if self._backup is not None:
            self._window = self._backup
        self._backup = None

    def drop_delta(self) -> None:
        self._window = copy.deepcopy(self._pristine)
        self._backup = None
        self._dirty = False

    def flush(self, path: str) -> None:
        self._settle()
        window = self._window
        window._output_path = self._path_type(path)
        window.flush()
        if not Path(path).exists():
            raise ShardError(
                f"{type(self.inner).__qualname__}.flush() wrote nothing to its _output_path "
                f"({path})",
                "its state would be lost: flush() must write to self._output_path",
            )
        self._window = copy.deepcopy(self._pristine)
        self._dirty = False

    def merge(self, shard_paths: Sequence[str], out_path: str) -> None:  # type: ignore[override]
        """Combine committed segments with the inner filter's own ``merge``.

        With no segments (no index succeeded) nothing is written and the run has no output
        for this filter: the original's merges are not required to accept an empty list.
        """
        if not shard_paths:
            return
        written = type(self.inner).merge(sorted(shard_paths), out_path)
        if isinstance(written, str | os.PathLike) and os.fspath(written) != out_path:
            if Path(written).exists() and not Path(out_path).exists():
                os.replace(written, out_path)  # it wrote elsewhere and said where
        if shard_paths and not Path(out_path).exists():
            raise ShardError(
                f"{type(self.inner).__qualname__}.merge() wrote nothing to {out_path}",
                "merge(paths, output) must write the combined state to output",
            )
