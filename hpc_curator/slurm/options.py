"""Slurm settings as one validated value object.

Every value that ends up in an sbatch script is checked here: no newlines or control
characters (they could inject ``#SBATCH`` lines or shell code), well-formed times, positive
counts, sbatch option names that look like options. Values are shell-quoted by the renderer
(``script.py``); refusing what cannot be quoted safely happens here, once.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass, fields, replace
from typing import Any

from hpc_curator.errors import UsageError
from hpc_curator.runtime.container import Container

MPI_PLUGINS = ("auto", "pmi2", "pmix", "none")
_TIME = re.compile(
    r"^(?:(?P<d>\d+)-(?P<dh>\d{1,2})(?::(?P<dm>\d{1,2})(?::(?P<ds>\d{1,2}))?)?"
    r"|(?P<h>\d+):(?P<m>\d{1,2}):(?P<s>\d{1,2})"
    r"|(?P<mm>\d+):(?P<ss>\d{1,2})"
    r"|(?P<min>\d+))$"
)
_KEY = re.compile(r"^[a-z][a-z0-9-]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def parse_time(text: str) -> int:
    """Parse a Slurm time limit into minutes (rounded up).

    Accepts ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``.
    """
    m = _TIME.match(text.strip())
    if not m or text.strip() in ("0", "00"):
        raise UsageError(
            f"--time {text!r} is not a Slurm time limit",
            "use MINUTES, MM:SS, HH:MM:SS or D-HH:MM:SS, e.g. --time 2:00:00",
        )
    g = {k: int(v) for k, v in m.groupdict().items() if v is not None}
    if "min" in g:
        return g["min"]
    if "mm" in g:
        return g["mm"] + (1 if g["ss"] else 0)
    if "h" in g:
        return g["h"] * 60 + g["m"] + (1 if g["s"] else 0)
    return g["d"] * 1440 + g["dh"] * 60 + g.get("dm", 0) + (1 if g.get("ds") else 0)


def check_value(name: str, value: str) -> str:
    """Refuse values with newlines or control characters (script injection)."""
    if _CONTROL.search(value):
        raise UsageError(
            f"{name} value {value!r} contains a newline or control character",
            "such values could inject #SBATCH lines or shell code; remove them",
        )
    return value


@dataclass(frozen=True)
class SlurmOptions:
    """The settings of one Slurm submission (resources, MPI, setup, escape hatches).

    Parameters
    ----------
    nodes, ntasks_per_node, cpus_per_task
        Allocation shape; the MPI world size is ``nodes * ntasks_per_node``.
    time
        Time limit (Slurm syntax); ``None`` for the partition default.
    partition, account, qos, mem, constraint, job_name, dependency, begin
        Passed as the sbatch options of the same name.
    gpus_per_node
        GPUs per node (``--gpus-per-node``).
    gpus_per_rank
        GPUs each rank sees (:mod:`hpc_curator.runtime.gpus` binds them by node-local rank).
    exclusive
        Request whole nodes.
    mpi
        ``srun --mpi`` plugin: ``auto`` (default: the one the MPI library mpi4py loads needs,
        see :mod:`hpc_curator.slurm.mpi_plugin`), ``pmi2``, ``pmix`` or ``none`` (ranks then
        come up as singletons and refuse to run).
    setup
        Shell lines run before ``srun`` (``module load ...``, ``source venv/bin/activate``).
    sbatch_opts
        Extra ``(key, value)`` sbatch options.
    srun_args
        Extra srun arguments.
    signal_delay
        Seconds before the time limit at which ranks get SIGUSR2 to commit and requeue.
    requeue
        Let the job requeue itself on time limit / be requeued on pre-emption.
    max_requeues
        Stop requeuing after this many restarts.
    python
        Interpreter on the compute nodes (default: the one running ``hpc-curate``; inside a
        container ``python3``). Split like a shell line, so a wrapper command works too.
    modules
        Environment modules loaded before ``srun`` (``module load NAME`` each).
    container, container_runtime, container_bind, launch_prefix
        Run every rank inside this image with this runtime and these extra binds, behind
        this launch prefix (see :class:`hpc_curator.runtime.container.Container`).
    array, array_parallel
        Submit an elastic job array of this many tasks (at most ``array_parallel`` at once)
        instead of one MPI job (:mod:`hpc_curator.slurm.array`).
    workers
        With ``array``: claiming processes per array task (one srun step of that many tasks).
    """

    nodes: int = 1
    ntasks_per_node: int = 1
    cpus_per_task: int | None = None
    time: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    mem: str | None = None
    gpus_per_node: int | None = None
    gpus_per_rank: int | None = None
    constraint: str | None = None
    exclusive: bool = False
    job_name: str = "hpc-curate"
    mpi: str = "auto"
    setup: tuple[str, ...] = ()
    sbatch_opts: tuple[tuple[str, str], ...] = ()
    srun_args: tuple[str, ...] = ()
    dependency: str | None = None
    begin: str | None = None
    signal_delay: int = 90
    requeue: bool = True
    max_requeues: int = 3
    python: str | None = None
    modules: tuple[str, ...] = ()
    container: str | None = None
    container_runtime: str = "apptainer"
    container_bind: tuple[str, ...] = ()
    launch_prefix: str | None = None
    array: int | None = None
    array_parallel: int | None = None
    workers: int | None = None

    def __post_init__(self) -> None:
        _ = self.container_spec  # validates the container settings
        if self.python is not None:
            try:
                if not shlex.split(self.python):
                    raise ValueError("empty")
            except ValueError as exc:
                raise UsageError(f"--python {self.python!r} is not a command ({exc})") from None
        for name in ("nodes", "ntasks_per_node"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} must be >= 1, got {getattr(self, name)}")
        for name in (
            "cpus_per_task", "gpus_per_node", "gpus_per_rank", "array", "array_parallel",
            "workers",
        ):  # fmt: skip
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if self.signal_delay < 0 or self.max_requeues < 0:
            raise UsageError("--signal-delay and --max-requeues must be >= 0")
        if self.mpi not in MPI_PLUGINS:
            raise UsageError(f"--mpi {self.mpi!r} is not one of {', '.join(MPI_PLUGINS)}")
        if self.time is not None:
            parse_time(self.time)
        for f in fields(self):
            value = getattr(self, f.name)
            values = value if isinstance(value, tuple) else (value,)
            for v in values:
                for part in v if isinstance(v, tuple) else (v,):
                    if isinstance(part, str):
                        check_value(f"--{f.name.replace('_', '-')}", part)
        for line in self.setup:
            if line.lstrip().upper().startswith("#SBATCH"):
                raise UsageError(
                    f"--setup line {line!r} is an #SBATCH directive; sbatch ignores those after "
                    "the first command",
                    "pass it as --sbatch-opt KEY=VALUE, or use the option of the same name",
                )
        for key, _ in self.sbatch_opts:
            if not _KEY.match(key):
                raise UsageError(
                    f"--sbatch-opt key {key!r} is not an sbatch option name",
                    "use KEY=VALUE with a lowercase option name, e.g. --sbatch-opt mail-type=END",
                )

    @property
    def container_spec(self) -> Container:
        """How each rank's command is wrapped."""
        return Container(
            image=self.container,
            runtime=self.container_runtime,
            binds=self.container_bind,
            launch_prefix=self.launch_prefix,
            gpus=bool(self.gpus_per_node or self.gpus_per_rank),
        )

    @property
    def python_argv(self) -> list[str]:
        """The interpreter command on the compute nodes."""
        if self.python:
            return shlex.split(self.python)
        return ["python3"] if self.container else [sys.executable]

    @property
    def world_size(self) -> int:
        """Ranks in the job."""
        return self.nodes * self.ntasks_per_node

    @property
    def timeout_min(self) -> int | None:
        """Time limit in minutes."""
        return parse_time(self.time) if self.time else None

    def override(self, **changes: Any) -> SlurmOptions:
        """A copy with the non-``None`` ``changes`` applied (for ``resume --nodes 2``)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_json(self) -> dict[str, Any]:
        """JSON-able form (recorded in the run dir for ``resume``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["setup"] = list(self.setup)
        out["sbatch_opts"] = [list(kv) for kv in self.sbatch_opts]
        for name in ("srun_args", "modules", "container_bind"):
            out[name] = list(getattr(self, name))
        return out

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SlurmOptions:
        """Inverse of :meth:`to_json`."""
        doc = dict(doc)
        doc["setup"] = tuple(doc.get("setup", ()))
        doc["sbatch_opts"] = tuple(tuple(kv) for kv in doc.get("sbatch_opts", ()))
        for name in ("srun_args", "modules", "container_bind"):
            doc[name] = tuple(doc.get(name, ()))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})


def parse_sbatch_opts(pairs: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Parse repeated ``--sbatch-opt KEY=VALUE`` (``KEY`` alone for flags)."""
    out = []
    for pair in pairs:
        key, _, value = pair.partition("=")
        out.append((key.strip().lstrip("-"), value))
    return tuple(out)
