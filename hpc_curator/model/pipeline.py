"""The pipeline model: Source -> Filter* -> Sink, one work item per integer index.

Contracts
---------
- ``Source[i]`` yields the items of index ``i``; ``len(source)`` is the number of indices.
- ``Filter(items)`` maps an iterator of items to an iterator of items (it may drop or expand).
- ``Sink(items, index)`` consumes the items of one index and returns the paths it wrote.
- ``StatefulFilter`` accumulates state across indices *transactionally*: what it observes while
  an index runs is kept aside and folded into the running state only if the whole index
  succeeded (:meth:`StatefulFilter.accept`), so a failed index never leaks into statistics and a
  retried index is counted once. ``flush(path)`` writes the state accumulated since the previous
  flush (a *delta*) and resets it; ``merge(paths, out)`` combines any subset of deltas in any order.

Every component records the arguments it was built with, so a pipeline built in Python can be
frozen into a JSON spec (:meth:`Pipeline.to_spec`) and rebuilt in another process.
"""

from __future__ import annotations

import abc
import functools
import inspect
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from hpc_curator.engine.contributions import accept_together, discard_all
from hpc_curator.errors import UsageError

Item = Any
S = TypeVar("S")
_UNSET: Any = object()


class Param:
    """Metadata for one constructor parameter of a component (for help, specs and the CLI).

    Both argument orders work: hpc-curator's ``Param(name, type, default, help)`` and
    physicsnemo-curator's ``Param(name, description, type=str, default=REQUIRED,
    choices=None)`` (told apart by whether the second argument is a string).

    Parameters
    ----------
    name
        Keyword argument name.
    type
        Callable converting a CLI string to the value (``int``, ``float``, ``str``, ...).
    default
        Default value; ``Param.REQUIRED`` when the argument must be given.
    help, description
        One-line description (the same thing; ``description`` is the original's name).
    choices
        The allowed values (after conversion); ``--param`` refuses anything else.
    """

    REQUIRED: ClassVar[object] = object()
    __slots__ = ("choices", "default", "help", "name", "type")

    def __init__(
        self,
        name: str,
        *args: Any,
        type: Callable[[str], Any] | None = None,
        default: Any = _UNSET,
        help: str | None = None,
        description: str | None = None,
        choices: Sequence[Any] | None = None,
    ) -> None:
        legacy = bool(args) and isinstance(args[0], str)
        names = (
            ("description", "type", "default", "choices") if legacy else ("type", "default", "help")
        )
        if len(args) > len(names):
            raise TypeError(f"Param takes at most {len(names) + 1} positional arguments")
        given: dict[str, Any] = dict(zip(names, args, strict=False))
        for key, value in (
            ("type", type),
            ("help", help),
            ("description", description),
            ("choices", choices),
        ):
            if value is not None:
                if key in given:
                    raise TypeError(f"Param got {key!r} twice")
                given[key] = value
        if default is not _UNSET:
            if "default" in given:
                raise TypeError("Param got 'default' twice")
            given["default"] = default
        self.name = name
        self.type = given.get("type", str)
        self.default = given.get("default", Param.REQUIRED if legacy else None)
        self.help = given.get("help") or given.get("description") or ""
        self.choices = tuple(given["choices"]) if given.get("choices") is not None else None

    @property
    def description(self) -> str:
        """The original's name for :attr:`help`."""
        return self.help

    def __repr__(self) -> str:
        return (
            f"Param({self.name!r}, {getattr(self.type, '__name__', self.type)}, {self.default!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Param):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __hash__(self) -> int:
        return hash((self.name, self.default if self.default.__hash__ else None))

    def convert(self, raw: Any) -> Any:
        """Convert a raw (usually string) value with :attr:`type`; check :attr:`choices`."""
        if not isinstance(raw, str) or self.type is str:
            value = raw
        elif self.type is bool:
            value = raw.strip().lower() in {"1", "true", "yes", "on"}
        else:
            value = self.type(raw)
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(repr(c) for c in self.choices)
            raise ValueError(f"{value!r} is not one of {allowed}")
        return value


class Component:
    """Base of sources, filters and sinks: remembers its constructor arguments.

    Subclasses list their parameters in ``params`` (for ``--help`` and YAML specs); the
    arguments actually passed are captured automatically in ``init_args``.
    """

    params: ClassVar[tuple[Param, ...]] = ()
    init_args: dict[str, Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> Component:
        obj = super().__new__(cls)
        if cls.__init__ is object.__init__:  # no constructor of its own: nothing to bind (the
            obj.init_args = dict(kwargs)  # signature of a builtin is parsed from text: ~6 ms)
            return obj
        try:
            bound = inspect.signature(cls.__init__).bind(obj, *args, **kwargs)
            obj.init_args = {k: v for k, v in bound.arguments.items() if k != "self"}
        except TypeError:
            obj.init_args = dict(kwargs)
        return obj

    def describe(self) -> dict[str, Any]:
        """Return ``{"class": "module:Qualname", "params": {...}}`` for the spec."""
        cls = type(self)
        return {"class": f"{cls.__module__}:{cls.__qualname__}", "params": dict(self.init_args)}


class Source(Component, abc.ABC):
    """A sequence of work items: ``len(source)`` indices, ``source[i]`` yields items."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def __getitem__(self, index: int) -> Iterator[Item]: ...

    def partition_indices(self, indices: Sequence[int]) -> list[list[int]] | None:
        """Groups of ``indices`` that one worker must process together (default: none).

        Groups of source and sink combine as a union (:mod:`hpc_curator.model.groups`).
        """
        return None


class Filter(Component, abc.ABC):
    """Map the items of one index to new items (may drop, transform or expand)."""

    @abc.abstractmethod
    def __call__(self, items: Iterator[Item]) -> Iterator[Item]: ...


class Sink(Component, abc.ABC):
    """Consume the items of one index and return the list of paths written."""

    @abc.abstractmethod
    def __call__(self, items: Iterator[Item], index: int) -> list[str]: ...

    def partition_indices(self, indices: Sequence[int]) -> list[list[int]] | None:
        """Groups of ``indices`` that one worker must write together (default: none)."""
        return None

    def set_source(self, source: Source) -> None:
        """Called with the pipeline's source when the pipeline is built (default: ignored)."""


class StatefulFilter(Filter, Generic[S]):
    """A filter whose state accumulates across indices and is merged across ranks.

    Subclasses implement the state algebra; the base class makes it transactional and
    shardable:

    - :meth:`empty_state`, :meth:`observe` (fold one item into a state, return the item),
      :meth:`combine` (associative, commutative), :meth:`write_state`, :meth:`read_state`.
    - ``name`` identifies the filter's shard directory and output; ``output`` optionally names
      the merged output path (default: ``<run dir>/outputs/<name><suffix>``).
    """

    suffix: ClassVar[str] = ".h5"

    def __init__(self, name: str | None = None, output: str | None = None) -> None:
        self.name = name or type(self).__name__.lower()
        self.output = output
        self._state: S = self.empty_state()
        self._pending: S = self.empty_state()
        self._dirty = False

    # -- the state algebra (subclass API) -------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def empty_state(cls) -> S:
        """Return the identity element of :meth:`combine`."""

    @abc.abstractmethod
    def observe(self, state: S, item: Item) -> Item:
        """Fold ``item`` into ``state`` (in place) and return the item to pass on."""

    @classmethod
    @abc.abstractmethod
    def combine(cls, a: S, b: S) -> S:
        """Return the combination of two states (associative and commutative).

        It must not modify ``a`` or ``b``: an index is accepted into every stateful filter
        together (:mod:`hpc_curator.engine.contributions`), so each filter's combination is computed
        before any is kept, and an error in one must leave the others as they were.
        """

    @classmethod
    @abc.abstractmethod
    def write_state(cls, state: S, path: str) -> None:
        """Write ``state`` to ``path`` (the caller makes it atomic)."""

    @classmethod
    @abc.abstractmethod
    def read_state(cls, path: str) -> S:
        """Read a state written by :meth:`write_state`."""

    @classmethod
    def figures(cls, state: S) -> dict[str, dict[str, float]] | None:
        """What the run report shows of a (merged or partial) state: ``{row: {column:
        number}}``, or ``None`` (the default) for a state it does not tabulate."""
        return None

    # -- the runtime protocol (called by the rank loop) -----------------------------------
    def __call__(self, items: Iterator[Item]) -> Iterator[Item]:
        pending = self._pending
        for item in items:
            yield self.observe(pending, item)

    def begin(self) -> None:
        """Start a new index: forget anything observed but not accepted."""
        self._pending = self.empty_state()

    def accept(self) -> None:
        """The index succeeded: fold what it observed into the running state."""
        self.install(self.prepare())

    def prepare(self) -> S:
        """The running state with the index's observations folded in, not yet kept.

        The first phase of accepting an index
        (:func:`hpc_curator.engine.contributions.accept_together`):
        nothing changes until :meth:`install`.
        """
        return self.combine(self._state, self._pending)

    def install(self, prepared: S) -> None:
        """Keep a state :meth:`prepare` returned (reference assignments only: cannot fail)."""
        self._state = prepared
        self._pending = self.empty_state()
        self._dirty = True

    def discard(self) -> None:
        """The index failed: drop what it observed."""
        self._pending = self.empty_state()

    def drop_delta(self) -> None:
        """Forget every index accepted since the last flush (their commit was abandoned)."""
        self._state = self.empty_state()
        self._pending = self.empty_state()
        self._dirty = False

    @property
    def has_delta(self) -> bool:
        """Whether any index was accepted since the last flush."""
        return self._dirty

    def flush(self, path: str) -> None:
        """Write the state accumulated since the previous flush to ``path`` and reset it."""
        self.write_state(self._state, path)
        self._state = self.empty_state()
        self._dirty = False

    @classmethod
    def merge(cls, shard_paths: Sequence[str], out_path: str) -> None:
        """Merge shard files (any subset, any order) into ``out_path``."""
        state = cls.empty_state()
        for path in sorted(shard_paths):
            state = cls.combine(state, cls.read_state(path))
        cls.write_state(state, out_path)


@dataclass(frozen=True)
class Pipeline:
    """An immutable pipeline: ``Pipeline(source).filter(f).write(sink)``.

    ``pipeline[i]`` returns the lazy iterator of items of index ``i`` after all filters;
    :meth:`run_index` also drives the sink and returns the written paths.
    """

    source: Source
    filters: tuple[Filter, ...] = ()
    sink: Sink | None = None
    spec: dict[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.sink is not None and callable(getattr(self.sink, "set_source", None)):
            self.sink.set_source(self.source)
        for f in self.filters:
            if (
                not isinstance(f, StatefulFilter)
                and callable(getattr(f, "flush", None))
                and hasattr(f, "_output_path")
            ):
                # physicsnemo-curator's duck-typed stateful filter: nothing here would flush
                # it, and its statistics would vanish without a word
                name = type(f).__qualname__
                raise UsageError(
                    f"filter {name} is a physicsnemo-curator stateful filter (flush() and "
                    "_output_path); as it is, its output would be lost",
                    f"wrap it: .filter(hpc_curator.LegacyStatefulFilter({name}(...)))",
                )

    def filter(self, f: Filter) -> Pipeline:
        """Return a new pipeline with ``f`` appended."""
        return Pipeline(self.source, (*self.filters, f), self.sink)

    def write(self, sink: Sink) -> Pipeline:
        """Return a new pipeline ending in ``sink``."""
        return Pipeline(self.source, self.filters, sink)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Iterator[Item]:
        for stateful in self.stateful_filters:
            stateful.begin()
        items: Iterator[Item] = iter(self.source[index])
        for f in self.filters:
            items = f(items)
        return items

    @functools.cached_property
    def stateful_filters(self) -> tuple[StatefulFilter[Any], ...]:
        """The stateful filters, in pipeline order (computed once)."""
        return tuple(f for f in self.filters if isinstance(f, StatefulFilter))

    def run_index(self, index: int) -> list[str]:
        """Run one index through the sink; accept or discard stateful deltas accordingly."""
        stateful = self.stateful_filters
        for f in stateful:
            f.begin()
        try:
            items: Iterator[Item] = self.source[index]
            for filt in self.filters:
                items = filt(items)
            if self.sink is None:
                for _ in items:
                    pass
                paths: list[str] = []
            else:
                paths = checked_paths(self.sink(items, index), self.sink)
            accept_together(stateful)  # every filter's contribution, or none
        except BaseException:
            discard_all(stateful)
            raise
        return paths

    def with_spec(self, spec: dict[str, Any]) -> Pipeline:
        """Return a copy remembering how it was built (factory reference or components)."""
        return Pipeline(self.source, self.filters, self.sink, spec)

    def to_spec(self) -> dict[str, Any]:
        """Return a JSON-serialisable spec that rebuilds this pipeline in another process."""
        if self.spec is not None:
            return self.spec
        return {
            "kind": "components",
            "source": self.source.describe(),
            "filters": [f.describe() for f in self.filters],
            "sink": self.sink.describe() if self.sink is not None else None,
        }


def checked_paths(value: Any, sink: Any) -> list[str]:
    """A sink's return value as a list of path strings; ``TypeError`` for anything else.

    Only a list or tuple of ``str``/``os.PathLike`` (or ``None``: nothing written) is accepted:
    a string would otherwise become one path per character, a dict one per key. Called once
    per index: the common cases (nothing written, a list of strings) take one pass.
    """
    if value is None:
        return []
    if not isinstance(value, _SEQUENCES):
        raise TypeError(
            f"{type(sink).__qualname__} returned a {type(value).__name__}, not a list of paths"
        )
    if all(type(v) is str for v in value):
        return list(value)
    bad = [v for v in value if not isinstance(v, _PATHS)]
    if bad:
        raise TypeError(
            f"{type(sink).__qualname__} returned a list holding a {type(bad[0]).__name__}, "
            "not only paths (str or os.PathLike)"
        )
    return [os.fspath(v) for v in value]


_SEQUENCES = (list, tuple)
_PATHS = (str, os.PathLike)


def check_unique_names(filters: Iterable[StatefulFilter[Any]]) -> None:
    """Raise ``ValueError`` when two stateful filters share a name (their shards would mix)."""
    seen: set[str] = set()
    for f in filters:
        if f.name in seen:
            raise ValueError(
                f"two stateful filters are named {f.name!r}; pass name=... to tell them apart"
            )
        seen.add(f.name)
