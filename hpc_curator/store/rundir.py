"""Every path in a run directory, and its creation, validation and attempts.

Layout of a run directory ``D``::

    D/run.json                     frozen spec + index list (+ D/indices.npy for large lists)
    D/attempts/NNNN.json           one per launch, created exclusively; rewritten at the end
    D/attempts/NNNN.heartbeat      touched by the live attempt's rank 0
    D/journal/aNNNN-rankRRRRR-wTOKEN.jsonl  append-only, one writer process each (its token)
    D/shards/<filter>/...          committed (and orphan) segments, see shards.py
    D/outputs/<filter>.h5          merged stateful-filter outputs
    D/logs/                        launcher and rank logs
    D/manifest.json, D/manifest.parquet   written last, atomically
    D/manifest-spill/              a large run's manifest in index buckets while rank 0 writes it
    D/revisions/NNNN.json          each extension of the index list, created exclusively
    D/invalidations/NNNN.json      each invalidation (commits that count for nothing)
    D/claims/aNNNN/                an elastic attempt's claim board (elastic.py)

Who writes what: rank 0 (or the parent of an in-process pool) creates ``run.json``, the attempt
record, merged outputs and the manifest; each rank writes its own journal and segments only.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpc_curator.errors import RunDirError
from hpc_curator.runtime.versions import versions
from hpc_curator.runtime.world import hostname
from hpc_curator.store.atomic import atomic_path, atomic_write
from hpc_curator.store.revisions import (
    fold_revisions,
    hash_indices,
    read_index_list,
    write_index_list,
)
from hpc_curator.store.runlayout import FORMAT, check_run_record

if TYPE_CHECKING:  # numpy only where index lists are read or written (a light launcher)
    import numpy as np


def writer_token() -> str:
    """A new writer token: 8 hex digits from the OS's random source, one per writing process
    (its journal, current-index file and segments carry it)."""
    return os.urandom(4).hex()


def inside_path(rd: RunDir, path: str | os.PathLike[str]) -> str | None:
    """``path`` relative to the run dir when it lies inside it, else ``None``: the manifest
    keeps it beside the absolute path, so a copied or moved run dir verifies as itself."""
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(Path(os.path.abspath(rd.path))))
    except ValueError:
        return None


def output_location(rd: RunDir, entry: dict[str, Any]) -> Path:
    """Where a merged output recorded in the manifest is now: inside this run dir when it was
    written inside the run dir (``"relative"``), else its recorded absolute ``"path"``."""
    relative = entry.get("relative")
    return rd.path / relative if isinstance(relative, str) else Path(entry["path"])


def now_iso() -> str:
    """Current UTC time, ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def stable_hash(obj: Any) -> str:
    """SHA-256 of the canonical JSON of ``obj``."""
    import hashlib

    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


class RunDir:
    """The paths of one run directory (this class owns every file-name pattern)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).absolute()

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    run_json = property(lambda self: self.path / "run.json")
    indices_npy = property(lambda self: self.path / "indices.npy")
    attempts_dir = property(lambda self: self.path / "attempts")
    journal_dir = property(lambda self: self.path / "journal")
    invalidations_dir = property(lambda self: self.path / "invalidations")
    shards_dir = property(lambda self: self.path / "shards")
    outputs_dir = property(lambda self: self.path / "outputs")
    logs_dir = property(lambda self: self.path / "logs")
    manifest_json = property(lambda self: self.path / "manifest.json")
    manifest_parquet = property(lambda self: self.path / "manifest.parquet")
    #: scratch of a streamed manifest (fold.py): index buckets, removed when it is written
    spill_dir = property(lambda self: self.path / "manifest-spill")
    slurm_dir = property(lambda self: self.path / "slurm")
    revisions_dir = property(lambda self: self.path / "revisions")
    report_html = property(lambda self: self.path / "report.html")

    def exists(self) -> bool:
        """Whether the run has been created (``run.json`` present)."""
        return self.run_json.exists()

    def journal_path(self, attempt: int, rank: int, writer: str) -> Path:
        """Journal of ``rank`` in ``attempt`` written by the process whose token is ``writer``.

        The token (:func:`writer_token`) makes the name unique per process: two processes that
        both believe they are rank ``rank`` (a requeue race, an orphan beside its relaunch)
        never write the same file; the scan's acceptance rule decides between their records.
        """
        return self.journal_dir / f"a{attempt:04d}-rank{rank:05d}-w{writer}.jsonl"

    def current_path(self, attempt: int, rank: int, writer: str) -> Path:
        """The index ``rank`` is running right now (memory-mapped; see :mod:`poison`)."""
        return self.journal_dir / f"a{attempt:04d}-rank{rank:05d}-w{writer}.current"

    def rank_log(self, attempt: int, rank: int) -> Path:
        """What the user code of ``rank`` printed and logged in ``attempt`` (ranklog.py)."""
        return self.logs_dir / f"a{attempt:04d}-rank{rank:05d}.log"

    def claims_dir(self, attempt: int) -> Path:
        """The claim board of an elastic attempt (:mod:`hpc_curator.engine.elastic`)."""
        return self.path / "claims" / f"a{attempt:04d}"

    def board(self, attempt: int) -> BoardPaths:
        """Every file of an elastic attempt's claim board."""
        return BoardPaths(self.claims_dir(attempt))

    def current_files(self) -> list[Path]:
        """Every current-index file, in (attempt, rank) order."""
        if not self.journal_dir.is_dir():
            return []
        return sorted(self.journal_dir.glob("a*-rank*.current"))

    def journal_files(self) -> list[Path]:
        """Every journal, in (attempt, rank) order."""
        if not self.journal_dir.is_dir():
            return []
        return sorted(p for p in self.journal_dir.glob("a*-rank*.jsonl"))

    def shard_dir(self, filter_name: str) -> Path:
        """Directory of one stateful filter's segments."""
        return self.shards_dir / filter_name

    def output_path(self, filter_name: str, suffix: str) -> Path:
        """Default merged output of a stateful filter."""
        return self.outputs_dir / f"{filter_name}{suffix}"

    groups_path = property(lambda self: self.path / "groups.npy")

    def save_groups(self, labels: np.ndarray | None) -> None:
        """Record each frozen index's group (its component's smallest index), or none."""
        if labels is None:
            self.groups_path.unlink(missing_ok=True)
            return
        import numpy as np

        with atomic_path(self.groups_path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, labels.astype(np.int64))

    def load_groups(self) -> np.ndarray | None:
        """Labels saved by :meth:`save_groups`, aligned with the frozen index list."""
        import numpy as np

        try:
            return np.asarray(np.load(self.groups_path))
        except FileNotFoundError:
            return None

    def attempt_path(self, attempt: int) -> Path:
        """Attempt record."""
        return self.attempts_dir / f"{attempt:04d}.json"

    def heartbeat_path(self, attempt: int) -> Path:
        """Heartbeat file of a live attempt."""
        return self.attempts_dir / f"{attempt:04d}.heartbeat"

    def attempt_records(self) -> list[Path]:
        """Every attempt record file, oldest first."""
        if not self.attempts_dir.is_dir():
            return []
        return sorted(self.attempts_dir.glob("[0-9][0-9][0-9][0-9]*.json"))

    @staticmethod
    def parse_journal_name(path: str | os.PathLike[str]) -> tuple[int, int]:
        """``(attempt, rank)`` of a journal file name ``aNNNN-rankRRRRR-wTOKEN.jsonl`` (or
        ``aNNNN-rankRRRRR.jsonl``, the name before writer tokens)."""
        stem = Path(path).name.removesuffix(".jsonl").removesuffix(".current")
        attempt, _, rest = stem.partition("-rank")
        return int(attempt[1:]), int(rest.partition("-w")[0])

    @staticmethod
    def journal_writer(path: str | os.PathLike[str]) -> str:
        """The writer token of a journal or current-index file name (``""`` before tokens)."""
        stem = Path(path).name.removesuffix(".jsonl").removesuffix(".current")
        return stem.partition("-rank")[2].partition("-w")[2]

    def partial_merge(self, filter_name: str, attempt: int, rank: int, suffix: str) -> Path:
        """One rank's partial merge of its share of a filter's segments (never journaled)."""
        return self.shard_dir(filter_name) / f".partial-a{attempt:04d}-r{rank:05d}{suffix}"

    # -- Slurm -----------------------------------------------------------------------------
    slurm_logs_dir = property(lambda self: self.slurm_dir / "logs")
    #: submitit's LocalExecutor folder of ``submit --cluster local``
    local_job_dir = property(lambda self: self.slurm_dir / "local")
    submissions_dir = property(lambda self: self.slurm_dir / "submissions")

    def submission_path(self, job_id: str) -> Path:
        """Record of one submission (options, settings, script path)."""
        return self.submissions_dir / f"{job_id}.json"

    def submission_script(self, job_id: str) -> Path:
        """The script submitit handed to sbatch for ``job_id``."""
        return self.slurm_logs_dir / f"{job_id}_submission.sh"

    def submitit_log_pattern(self) -> str:
        """Per-task log path pattern of submitted jobs (submitit's ``<job>_<task>_log``).

        A ``%`` of the run dir's path is doubled: Slurm reads ``%`` as a filename pattern.
        """
        return _pattern_dir(self.slurm_logs_dir) + "/%j_%t_log"

    def sbatch_log_pattern(self) -> str:
        """Per-task log path pattern of ``sbatch-script`` jobs (``%`` doubled, as above)."""
        return _pattern_dir(self.logs_dir) + "/slurm-%j_%t"

    def task_logs(self, job_id: str, task: int) -> list[Path]:
        """Every possible stdout/stderr file of one task of a job (existing or not)."""
        stems = [
            self.slurm_logs_dir / f"{job_id}_{task}_log",
            self.logs_dir / f"slurm-{job_id}_{task}",
        ]
        return [Path(f"{stem}{suffix}") for stem in stems for suffix in (".err", ".out")]

    def job_task_logs(self, job_id: str) -> list[Path]:
        """The existing stderr files of every task of a job, task 0 first."""
        found = [
            *self.slurm_logs_dir.glob(f"{job_id}_*_log.err"),
            *self.logs_dir.glob(f"slurm-{job_id}_*.err"),
        ]

        def task(p: Path) -> int:
            digits = p.name.removeprefix("slurm-").split("_")[1].split(".")[0]
            return int(digits) if digits.isdigit() else 1 << 30

        return sorted(found, key=task)

    def array_script(self, attempt: int, finisher: bool = False) -> Path:
        """The job script of an elastic attempt's array (or of its finisher job)."""
        return self.slurm_dir / f"{'finish' if finisher else 'array'}-a{attempt:04d}.sbatch"

    def requeue_flag(self, job_id: str) -> Path:
        """The request file rank 0 leaves for the job script to requeue ``job_id``."""
        return requeue_flag(self.slurm_dir, job_id)


@dataclass(frozen=True)
class BoardPaths:
    """The files of one elastic attempt's claim board ``D/claims/aNNNN/``
    (:mod:`hpc_curator.engine.elastic`, :mod:`hpc_curator.engine.beats`)."""

    dir: Path

    plan = property(lambda self: self.dir / "plan.pkl")
    chunks = property(lambda self: self.dir / "chunks.npy")
    finisher = property(lambda self: self.dir / "finisher")

    def claim(self, chunk: int, generation: int) -> Path:
        """The ``generation``-th claim of ``chunk`` (0: first claim, K: K-th reclaim)."""
        return self.dir / f"c{chunk:07d}.g{generation}"

    def done(self, chunk: int) -> Path:
        """The mark that ``chunk`` is committed."""
        return self.dir / f"c{chunk:07d}.done"

    def heartbeat(self, task: int) -> Path:
        """A task's heartbeat."""
        return self.dir / f"task-{task:05d}.alive"

    @staticmethod
    def parse(name: str) -> tuple[str, int, int]:
        """``("claim", chunk, generation)``, ``("done", chunk, -1)``, ``("task", task, -1)``
        or ``("", -1, -1)`` for a board file name."""
        if name.startswith("c") and name[1:8].isdigit():
            if name[8:10] == ".g" and name[10:].isdigit():
                return "claim", int(name[1:8]), int(name[10:])
            if name[8:] == ".done":
                return "done", int(name[1:8]), -1
        if name.startswith("task-") and name.endswith(".alive"):
            digits = name[5:-6]
            if digits.isdigit():
                return "task", int(digits), -1
        return "", -1, -1


def _pattern_dir(path: Path) -> str:
    return str(path).replace("%", "%%")


def requeue_flag(directory: str | os.PathLike[str], job_id: str) -> Path:
    """The requeue request file of ``job_id`` in ``directory`` (the run's ``slurm/``)."""
    return Path(directory) / f"requeue-{job_id}"


@dataclass(frozen=True)
class RunInfo:
    """The frozen content of ``run.json`` plus the index array."""

    spec: dict[str, Any]
    indices: np.ndarray
    meta: dict[str, Any]

    @property
    def n(self) -> int:
        """Number of frozen indices."""
        return len(self.indices)


def create_or_open(
    rd: RunDir,
    spec: dict[str, Any] | None,
    indices: np.ndarray | None,
    settings: dict[str, Any],
    code: dict[str, str] | None = None,
) -> RunInfo:
    """Create the run directory, or open it and check it belongs to the same run.

    Parameters
    ----------
    rd
        The run directory.
    spec, indices
        The pipeline spec and frozen indices of this launch; ``None`` to open an existing run.
    settings
        Schedule and commit settings recorded at creation (not part of the identity).

    Raises
    ------
    RunDirError
        When opening a run that does not exist, when the spec or indices conflict, or when a
        subdirectory is a symbolic link (:func:`check_layout`).
    """
    check_layout(rd)
    if rd.exists():
        info = load(rd)
        if spec is not None and stable_hash(spec) != info.meta["spec_hash"]:
            raise RunDirError(
                f"run dir {rd.path} was created for a different pipeline "
                f"({_spec_label(info.spec)}, now {_spec_label(spec)})",
                "use a new --run-dir, or resume it with the original spec",
            )
        if indices is not None and hash_indices(indices) != info.meta["indices_hash"]:
            raise RunDirError(
                f"run dir {rd.path} froze a different index list "
                f"({info.n} indices, now {len(indices)})",
                "use a new --run-dir, or omit --indices to resume",
            )
        return info
    if spec is None or indices is None:
        raise RunDirError(
            f"{rd.path} is not a run directory (no run.json)",
            "give a pipeline spec to create it, or check the path",
        )
    return _create(rd, spec, indices, settings, code)


def _create(
    rd: RunDir,
    spec: dict[str, Any],
    indices: np.ndarray,
    settings: dict[str, Any],
    code: dict[str, str] | None = None,
) -> RunInfo:
    from hpc_curator.store.nofollow import ensure_dir

    rd.path.mkdir(parents=True, exist_ok=True)  # the run dir itself may be a link
    for d in (rd.attempts_dir, rd.journal_dir, rd.shards_dir, rd.logs_dir):
        ensure_dir(d, rd.path)
    index_meta = write_index_list(rd, indices, rd.indices_npy)
    meta = {
        "format": FORMAT,
        "spec": spec,
        "spec_hash": stable_hash(spec),
        "indices": {**index_meta, "count": len(indices)},
        "indices_hash": hash_indices(indices),
        "settings": settings,
        "code": code,
        "cwd": os.getcwd(),
        "created": now_iso(),
        "host": hostname(),
        "argv": sys.argv,
        "versions": versions(),
    }
    atomic_write(rd.run_json, json.dumps(meta, indent=2, default=repr))
    import numpy as np

    return RunInfo(spec, np.asarray(indices, dtype=np.int64), meta)


def load(rd: RunDir) -> RunInfo:
    """Read ``run.json`` (and ``indices.npy``) and fold in every revision record.

    The index list is ``run.json``'s followed by what each ``D/revisions/NNNN.json`` added, in
    order (:mod:`hpc_curator.store.revisions`); ``meta`` is ``run.json``'s with ``revisions``
    listing every revision and ``indices_hash`` that of the whole list.

    Raises
    ------
    RunDirError
        ``run.json`` or a revision record is missing, unreadable or inconsistent.
    """
    try:
        meta = json.loads(rd.run_json.read_text())
    except FileNotFoundError:
        raise RunDirError(
            f"{rd.path} is not a run directory (no run.json)", "check the --run-dir path"
        ) from None
    except (OSError, ValueError) as exc:
        raise RunDirError(f"cannot read {rd.run_json}: {exc}") from exc
    meta = check_run_record(meta, rd.run_json)  # another layout: one line naming the file
    try:
        indices = read_index_list(rd, meta["indices"])
    except (OSError, ValueError) as exc:
        raise RunDirError(f"cannot read the index list of {rd.run_json}: {exc}") from None
    if hash_indices(indices) != meta["indices_hash"]:
        raise RunDirError(f"the index list of {rd.path} does not match its recorded hash")
    indices, meta = fold_revisions(rd, indices, meta)
    return RunInfo(meta["spec"], indices, meta)


#: subdirectories of a run dir that must be real ones (and, for shards and claims, children)
SUBDIRS = "attempts journal shards outputs logs invalidations claims manifest-spill slurm revisions"


def check_layout(rd: RunDir) -> None:
    """Refuse, with one line (:class:`RunDirError`), a run dir whose known subdirectories are
    symbolic links (``lstat``): a planted ``D/shards/<filter>`` or ``D/journal`` link would
    have the run delete or write files elsewhere. The run dir itself may be a link."""
    from hpc_curator.store.nofollow import check_subdirs

    if rd.path.exists() and not rd.path.is_dir():
        raise RunDirError(f"{rd.path} is not a directory", "--run-dir must be a directory")
    check_subdirs(rd.path, SUBDIRS.split(), children=("shards", "claims"))


def _spec_label(spec: dict[str, Any]) -> str:
    if spec.get("kind") == "factory":
        return str(spec.get("ref"))
    if spec.get("kind") == "components":
        return str(spec.get("source", {}).get("class"))
    return str(spec.get("kind"))
