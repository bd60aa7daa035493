"""The fake Slurm 22.05 client commands behind ``tests/fake_slurm/bin``.

Standard library only: the scripts in ``bin/`` run with whatever ``python3`` is first on
``PATH``. Every call appends one JSON line to ``$FAKE_SLURM_DIR/calls.jsonl`` (argv, cwd and the
Slurm-related environment the command saw) and reads or updates the job table
``$FAKE_SLURM_DIR/jobs.json`` (updates under a lock, written to a temporary file and renamed).

Answers follow Slurm 22.05's formats: ``sbatch`` prints ``Submitted batch job N`` (``N`` alone
with ``--parsable``); ``squeue`` lists pending, running and completing jobs (a finished job is
known but not listed; once purged after ``MinJobAge``: ``slurm_load_jobs error: Invalid job id
specified``); ``sacct`` prints every job with ``-o``/``--format``, ``-n``, ``-X``, ``-P``/``-p``
(without accounting: ``Slurm accounting storage is disabled``); ``scancel`` cancels queued
jobs (and signals a running one's processes); ``scontrol requeue`` puts a job back to
``PENDING``.

``sbatch`` does not run anything (unless ``FAKE_SLURM_AUTO_RUN=1``): a test runs a job with
``python3 commands.py run-job JOB`` (:meth:`tests.fake_slurm.FakeSlurm.run_job`), which runs the
saved script with ``bash`` in the submit directory with the job's ``SLURM_*`` variables, as
``slurmd`` would; the fake ``srun`` inside starts the tasks with their step variables.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
STATE_DIR_ENV = "FAKE_SLURM_DIR"
AUTO_RUN_ENV = "FAKE_SLURM_AUTO_RUN"
FIRST_JOB_ID = 7_000_001
NODE_PREFIX = "fake"
CLUSTER = "fakecluster"
#: Seconds between SIGTERM and SIGKILL of a job's processes (Slurm's KillWait).
KILL_WAIT_S = 30.0
#: Environment recorded for every call (names with these prefixes, with their values).
RECORDED = ("SLURM_", "SLURMD_", "SRUN_", "SBATCH_", "SUBMITIT_", "HPC_CURATOR_", "PMI_")
#: Job states squeue still lists.
QUEUED = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED")

#: sbatch 22.05 long options that take a value, and those that do not.
SBATCH_VALUED = frozenset(
    (
        "account acctg-freq array batch begin chdir cluster-constraint clusters comment "
        "constraint container core-spec cores-per-socket cpu-freq cpus-per-gpu cpus-per-task "
        "deadline delay-boot dependency distribution error exclude export export-file "
        "extra-node-info gid gpu-bind gpu-freq gpus gpus-per-node gpus-per-socket gpus-per-task "
        "gres gres-flags hint input job-name kill-on-invalid-dep licenses mail-type mail-user "
        "mcs-label mem mem-bind mem-per-cpu mem-per-gpu mincpus network nodefile nodelist "
        "nodes ntasks ntasks-per-core ntasks-per-gpu ntasks-per-node ntasks-per-socket open-mode "
        "output partition power prefer priority profile qos reservation signal sockets-per-node "
        "switches thread-spec threads-per-core time time-min tmp uid wait-all-nodes wckey wrap "
    ).split()
)
SBATCH_FLAGS = frozenset(
    (
        "contiguous hold ignore-pbs no-kill no-requeue overcommit "
        "oversubscribe parsable quiet reboot requeue spread-job test-only "
        "use-min-nodes verbose wait "
    ).split()
)
#: Options whose value is optional (``--exclusive`` or ``--exclusive=user``).
SBATCH_OPTIONAL = frozenset(("exclusive", "get-user-env", "nice", "propagate"))
SBATCH_LONG = {**dict.fromkeys(SBATCH_VALUED, True), **dict.fromkeys(SBATCH_FLAGS, False)}
SBATCH_LONG.update(dict.fromkeys(SBATCH_OPTIONAL, False))
SBATCH_SHORT = {
    "A": "account",
    "a": "array",
    "b": "begin",
    "C": "constraint",
    "c": "cpus-per-task",
    "D": "chdir",
    "d": "dependency",
    "e": "error",
    "G": "gpus",
    "H": "hold",
    "i": "input",
    "J": "job-name",
    "L": "licenses",
    "M": "clusters",
    "m": "distribution",
    "N": "nodes",
    "n": "ntasks",
    "o": "output",
    "O": "overcommit",
    "p": "partition",
    "Q": "quiet",
    "q": "qos",
    "s": "oversubscribe",
    "t": "time",
    "v": "verbose",
    "W": "wait",
    "w": "nodelist",
    "x": "exclude",
}
_TIME = re.compile(r"^(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d{1,2}(:\d{1,2}){0,2})$")


class SlurmError(Exception):
    """An error the fake command reports on stderr before exiting with ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# -- state ------------------------------------------------------------------------------------
def state_dir() -> Path:
    """``$FAKE_SLURM_DIR`` (created if missing)."""
    value = os.environ.get(STATE_DIR_ENV)
    if not value:
        raise SlurmError(f"{STATE_DIR_ENV} is not set (fake Slurm used outside a test)")
    path = Path(value)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_table(root: Path | None = None) -> dict[str, Any]:
    """The job table: ``{"next_id": int, "jobs": {id: record}}``."""
    path = (root or state_dir()) / "jobs.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {"next_id": FIRST_JOB_ID, "jobs": {}}


@contextlib.contextmanager
def locked_table(root: Path | None = None) -> Iterator[dict[str, Any]]:
    """Read-modify-write the job table under an exclusive lock; written atomically on exit."""
    root = root or state_dir()
    with open(root / "jobs.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        table = read_table(root)
        yield table
        _atomic_write(root / "jobs.json", json.dumps(table, indent=1, sort_keys=True))


def record_call(command: str, argv: list[str], **extra: Any) -> None:
    """Append one JSON line describing this call to ``calls.jsonl``."""
    env = {k: v for k, v in os.environ.items() if k.startswith(RECORDED)}
    line = {
        "cmd": command,
        "argv": argv,
        "cwd": os.getcwd(),
        "time": time.time(),
        "pid": os.getpid(),
        "env": env,
        **extra,
    }
    with open(state_dir() / "calls.jsonl", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(json.dumps(line) + "\n")


# -- formatting -------------------------------------------------------------------------------
def node_list(count: int) -> str:
    """Slurm's compressed host list of the first ``count`` fake nodes."""
    return f"{NODE_PREFIX}1" if count == 1 else f"{NODE_PREFIX}[1-{count}]"


def node_names(count: int) -> list[str]:
    """Every fake node name of a job with ``count`` nodes."""
    return [f"{NODE_PREFIX}{i}" for i in range(1, count + 1)]


def elapsed_seconds(job: Mapping[str, Any], now: float | None = None) -> int:
    """Seconds the job ran (or has been running)."""
    start = job.get("start_time")
    if not start:
        return 0
    end = job.get("end_time") or (now or time.time())
    return max(0, int(end - start))


def squeue_time(seconds: int) -> str:
    """squeue's ``%M``: ``M:SS``, ``H:MM:SS`` or ``D-HH:MM:SS``."""
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    if d:
        return f"{d}-{h:02d}:{m:02d}:{s:02d}"
    if h:
        return f"{h}:{m:02d}:{s:02d}"
    return f"{m}:{s:02d}"


def sacct_time(seconds: int) -> str:
    """sacct's ``Elapsed``: ``HH:MM:SS`` or ``D-HH:MM:SS``."""
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{d}-{h:02d}:{m:02d}:{s:02d}" if d else f"{h:02d}:{m:02d}:{s:02d}"


def _iso(ts: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ts)) if ts else "Unknown"


# -- sbatch -----------------------------------------------------------------------------------
def parse_sbatch_args(args: list[str], where: str) -> tuple[dict[str, str | None], list[str]]:
    """Parse sbatch options (command line or ``#SBATCH`` lines); return options and the rest."""
    opts: dict[str, str | None] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return opts, args[i + 1 :]
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if name not in SBATCH_LONG:
                raise SlurmError(f"sbatch: unrecognized option '{arg}'{where}")
            if SBATCH_LONG[name] and not eq:
                if i + 1 >= len(args):
                    raise SlurmError(f"sbatch: option '--{name}' requires an argument{where}")
                i += 1
                value = args[i]
            elif not SBATCH_LONG[name] and eq and name not in SBATCH_OPTIONAL:
                raise SlurmError(f"sbatch: option '--{name}' doesn't allow an argument{where}")
            opts[name] = value if SBATCH_LONG[name] or eq else None
        elif arg.startswith("-") and len(arg) > 1:
            letter = arg[1]
            if letter not in SBATCH_SHORT:
                raise SlurmError(f"sbatch: invalid option -- '{letter}'{where}")
            name = SBATCH_SHORT[letter]
            if SBATCH_LONG[name]:
                value = arg[2:]
                if not value:
                    if i + 1 >= len(args):
                        raise SlurmError(f"sbatch: option requires an argument -- '{letter}'")
                    i += 1
                    value = args[i]
                opts[name] = value
            else:
                opts[name] = None
        else:
            return opts, args[i:]
        i += 1
    return opts, []


def script_directives(text: str) -> list[str]:
    """The arguments of the ``#SBATCH`` lines before the first command (sbatch's rule)."""
    out: list[str] = []
    for line in text.splitlines()[1:]:
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("#"):
            break
        if stripped.startswith("#SBATCH"):
            body = stripped[len("#SBATCH") :].split(" #", 1)[0]
            out += shlex.split(body)
    return out


def _positive(opts: Mapping[str, str | None], name: str, default: int) -> int:
    value = opts.get(name)
    if value is None:
        return default
    low = value.split("-")[0]
    if not low.isdigit() or int(low) < 1:
        raise SlurmError(f"sbatch: error: Invalid --{name} specification")
    return int(low)


def sbatch(args: list[str]) -> int:
    """``sbatch [options] script [args]``: queue the job as PENDING and print its id."""
    record_call("sbatch", args)
    cli_opts, rest = parse_sbatch_args(args, "")
    fail = state_dir() / "sbatch_fail"
    if fail.exists():  # a test asked the controller to refuse the next submission
        message = fail.read_text().strip() or "Batch job submission failed"
        fail.unlink()
        raise SlurmError(f"sbatch: error: {message}")
    if "wrap" in cli_opts:
        text = f"#!/bin/sh\n# This script was created by sbatch --wrap.\n\n{cli_opts['wrap']}\n"
        script_args: list[str] = []
    else:
        if not rest:
            raise SlurmError("sbatch: error: Batch script is empty!")
        path, script_args = Path(rest[0]), rest[1:]
        try:
            text = path.read_text()
        except OSError as exc:
            raise SlurmError(f"sbatch: error: Unable to open file {path}") from exc
        if not text.strip():
            raise SlurmError("sbatch: error: Batch script is empty!")
        if not text.startswith("#!"):
            raise SlurmError(
                "sbatch: error: This does not look like a batch script.  The first\n"
                "sbatch: error: line must start with #! followed by the path to an interpreter.\n"
                "sbatch: error: For instance: #!/bin/sh"
            )
    opts, _ = parse_sbatch_args(script_directives(text), " in the batch script")
    opts.update(cli_opts)  # the command line wins over #SBATCH lines
    if opts.get("time") is not None and not _TIME.match(str(opts["time"])):
        raise SlurmError("sbatch: error: Invalid --time specification")
    if opts.get("open-mode") not in (None, "append", "truncate"):
        raise SlurmError("sbatch: error: Invalid --open-mode specification")
    nodes = _positive(opts, "nodes", 1)
    per_node = _positive(opts, "ntasks-per-node", 1)
    ntasks = _positive(opts, "ntasks", nodes * per_node)
    root = state_dir()
    with locked_table(root) as table:
        job_id = str(table["next_id"])
        table["next_id"] += 1
        saved = root / "scripts" / f"{job_id}.sh"
        saved.parent.mkdir(exist_ok=True)
        saved.write_text(text)
        table["jobs"][job_id] = {
            "job_id": job_id,
            "name": opts.get("job-name") or (Path(rest[0]).name if rest else "wrap"),
            "state": "HELD" if "hold" in opts else "PENDING",
            "reason": "JobHeldUser" if "hold" in opts else "Priority",
            "exit_code": "0:0",
            "submit_time": time.time(),
            "start_time": None,
            "end_time": None,
            "nodes": nodes,
            "ntasks": ntasks,
            "ntasks_per_node": per_node,
            "node_list": None,
            "options": opts,
            "script": str(saved),
            "script_args": script_args,
            "submit_dir": opts.get("chdir") or os.getcwd(),
            "env": {k: v for k, v in os.environ.items() if k.startswith(RECORDED)},
            "restarts": 0,
            "steps": [],
            "pgid": None,
            "cancelled_by": None,
            "signals": [],
        }
    print(job_id if "parsable" in opts else f"Submitted batch job {job_id}", flush=True)
    if os.environ.get(AUTO_RUN_ENV) == "1":
        spawn_runner(job_id)
    return 0


def spawn_runner(job_id: str) -> int:
    """Start ``run-job JOB`` in the background (its own session); return its PID."""
    log = open(state_dir() / f"runner-{job_id}.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "commands.py"), "run-job", job_id],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    log.close()
    with locked_table() as table:
        table["jobs"][job_id]["runner_pid"] = proc.pid
    return proc.pid


# -- squeue -----------------------------------------------------------------------------------
STATE_CODES: dict[str, str] = {
    "PENDING": "PD",
    "RUNNING": "R",
    "COMPLETING": "CG",
    "CONFIGURING": "CF",
    "SUSPENDED": "S",
    "REQUEUED": "RQ",
    "COMPLETED": "CD",
    "FAILED": "F",
    "CANCELLED": "CA",
    "TIMEOUT": "TO",
    "HELD": "PD",
}
SQUEUE_FIELDS = {
    "i": lambda j: j["job_id"],
    "A": lambda j: j["job_id"],
    "j": lambda j: j["name"],
    "T": lambda j: j["state"],
    "t": lambda j: STATE_CODES.get(j["state"], j["state"][:2]),
    "N": lambda j: j["node_list"] or "",
    "M": lambda j: squeue_time(elapsed_seconds(j)),
    "r": lambda j: j["reason"] or "None",
    "R": lambda j: (j["node_list"] or "") if j["state"] == "RUNNING" else f"({j['reason']})",
    "D": lambda j: str(j["nodes"]),
    "C": lambda j: str(j["ntasks"]),
    "P": lambda j: j["options"].get("partition") or "debug",
    "u": lambda j: os.environ.get("USER", "user"),
    "l": lambda j: j["options"].get("time") or "UNLIMITED",
}


def _squeue_format(fmt: str, job: Mapping[str, Any]) -> str:
    def field(m: re.Match[str]) -> str:
        width, code = m.group(1), m.group(2)
        if code == "%":
            return "%"
        value = SQUEUE_FIELDS[code](job) if code in SQUEUE_FIELDS else ""
        if width:
            n = int(width.lstrip("-."))
            value = value[:n].ljust(n) if width.startswith("-") else value[:n].rjust(n)
        return value

    return re.sub(r"%([-.]?\d*)([A-Za-z%])", field, fmt)


def squeue(args: list[str]) -> int:
    """``squeue [-h] [-j[ids]] [-o fmt] [-t states] [-u user|--me]``."""
    record_call("squeue", args)
    header, fmt, states = True, "%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R", None
    job_flag, jobs, positional = False, None, []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if arg in ("-h", "--noheader"):
            header = False
        elif arg in ("-o", "--format", "-t", "--states", "-u", "--user", "-p", "--partition"):
            if i + 1 >= len(args):
                raise SlurmError(f"squeue: option '{arg}' requires an argument")
            i += 1
            if arg in ("-o", "--format"):
                fmt = args[i]
            elif arg in ("-t", "--states"):
                states = args[i]
        elif eq and name in ("--format", "--states", "--user", "--partition", "--jobs"):
            if name == "--format":
                fmt = value
            elif name == "--states":
                states = value
            elif name == "--jobs":
                job_flag, jobs = True, value
        elif arg.startswith("-o") and len(arg) > 2:
            fmt = arg[2:]
        elif arg in ("-j", "--jobs"):
            job_flag = True  # the argument is optional: "-j 12" leaves "12" a positional
        elif arg.startswith("-j"):
            job_flag, jobs = True, arg[2:]
        elif arg in ("--me", "-a", "--all", "-r", "--array"):
            pass
        elif arg.startswith("-"):
            raise SlurmError(f"squeue: unrecognized option '{arg}'\nTry \"squeue --help\"")
        else:
            positional.append(arg)
        i += 1
    if positional:
        if job_flag and jobs is None:
            jobs = positional.pop(0)
        if positional:
            raise SlurmError(f"squeue: error: Unrecognized option: {positional[0]}")
    table = {k: j for k, j in read_table()["jobs"].items() if not j.get("purged")}
    wanted = None
    if jobs is not None:
        wanted = [j.strip() for j in jobs.split(",") if j.strip()]
        if len(wanted) == 1 and wanted[0] not in table:  # never existed, or past MinJobAge
            raise SlurmError("slurm_load_jobs error: Invalid job id specified")
    allowed = {s.strip().upper() for s in states.split(",")} if states else None
    rows = []
    for job_id, job in sorted(table.items()):
        if wanted is not None and job_id not in wanted:
            continue
        if allowed is None:
            if job["state"] not in QUEUED:  # the default: pending, running, completing
                continue
        elif "ALL" not in allowed and job["state"] not in allowed:
            if STATE_CODES.get(job["state"]) not in allowed:
                continue
        rows.append(_squeue_format(fmt, job))
    if header:
        heads = {"i": "JOBID", "T": "STATE", "N": "NODELIST", "M": "TIME", "D": "NODES"}
        print(re.sub(r"%[-.]?\d*([A-Za-z])", lambda m: heads.get(m.group(1), m.group(1)), fmt))
    for row in rows:
        print(row)
    return 0


# -- sacct ------------------------------------------------------------------------------------
def _sacct_state(job: Mapping[str, Any]) -> str:
    if job["state"] == "CANCELLED" and job.get("cancelled_by") is not None:
        return f"CANCELLED by {job['cancelled_by']}"
    if job["state"] == "HELD":
        return "PENDING"
    return str(job["state"])


SACCT_FIELDS = {
    "jobid": lambda j, s: j["job_id"] if s is None else f"{j['job_id']}.{s['id']}",
    "jobidraw": lambda j, s: j["job_id"] if s is None else f"{j['job_id']}.{s['id']}",
    "jobname": lambda j, s: j["name"] if s is None else s["name"],
    "state": lambda j, s: _sacct_state(j) if s is None else s["state"],
    "nodelist": lambda j, s: (j["node_list"] or "None assigned") if s is None else s["nodes"],
    "elapsed": lambda j, s: sacct_time(elapsed_seconds(j if s is None else s)),
    "elapsedraw": lambda j, s: str(elapsed_seconds(j if s is None else s)),
    "exitcode": lambda j, s: j["exit_code"] if s is None else s["exit_code"],
    "derivedexitcode": lambda j, s: "0:0",
    "nnodes": lambda j, s: str(j["nodes"]),
    "ntasks": lambda j, s: "" if s is None else str(s["ntasks"]),
    "ncpus": lambda j, s: str(j["ntasks"]),
    "partition": lambda j, s: j["options"].get("partition") or "debug",
    "account": lambda j, s: j["options"].get("account") or "",
    "submit": lambda j, s: _iso(j["submit_time"]),
    "start": lambda j, s: _iso(j["start_time"] if s is None else s["start_time"]),
    "end": lambda j, s: _iso(j["end_time"] if s is None else s["end_time"]),
    "restarts": lambda j, s: str(j["restarts"]),
    "reason": lambda j, s: j["reason"] or "None",
    "timelimit": lambda j, s: j["options"].get("time") or "UNLIMITED",
    "workdir": lambda j, s: j["submit_dir"],
}


def sacct(args: list[str]) -> int:
    """``sacct [-n] [-X] [-P|-p] [-j ids]... [-o fields]`` (default fields as Slurm's)."""
    record_call("sacct", args)
    if (state_dir() / "no_accounting").exists():  # AccountingStorageType=accounting_storage/none
        raise SlurmError("Slurm accounting storage is disabled")
    header, allocations, sep, trailing = True, False, None, False
    fields = ["JobID", "JobName", "Partition", "Account", "AllocCPUS", "State", "ExitCode"]
    jobs: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if arg in ("-n", "--noheader"):
            header = False
        elif arg in ("-X", "--allocations"):
            allocations = True
        elif arg in ("-P", "--parsable2"):
            sep, trailing = "|", False
        elif arg in ("-p", "--parsable"):
            sep, trailing = "|", True
        elif arg in ("-j", "--jobs", "-o", "--format", "-S", "--starttime", "-E", "--endtime"):
            if i + 1 >= len(args):
                raise SlurmError(f"sacct: option '{arg}' requires an argument")
            i += 1
            if arg in ("-j", "--jobs"):
                jobs += [j for j in args[i].split(",") if j]
            elif arg in ("-o", "--format"):
                fields = [f for f in args[i].split(",") if f]
        elif eq and name in ("--jobs", "--format", "--starttime", "--endtime"):
            if name == "--jobs":
                jobs += [j for j in value.split(",") if j]
            elif name == "--format":
                fields = [f for f in value.split(",") if f]
        elif arg.startswith("-j") and len(arg) > 2:
            jobs += [j for j in arg[2:].split(",") if j]
        elif arg.startswith("-o") and len(arg) > 2:
            fields = [f for f in arg[2:].split(",") if f]
        elif arg in ("-a", "--allusers", "-D", "--duplicates", "-b", "--brief", "-l", "--long"):
            pass
        else:
            raise SlurmError(f"sacct: unrecognized option '{arg}'")
        i += 1
    keys = []
    for f in fields:
        key = f.split("%")[0].lower()
        if key == "alloccpus":
            key = "ncpus"
        if key not in SACCT_FIELDS:
            raise SlurmError(f'sacct: error: Invalid field requested: "{f.split("%")[0]}"')
        keys.append(key)
    table = read_table()["jobs"]
    selected = [table[j.split(".")[0]] for j in jobs if j.split(".")[0] in table]
    if not jobs:
        selected = [table[k] for k in sorted(table)]
    rows: list[list[str]] = []
    for job in selected:
        rows.append([SACCT_FIELDS[k](job, None) for k in keys])
        if not allocations:
            for step in job["steps"]:
                rows.append([SACCT_FIELDS[k](job, step) for k in keys])
    lines = []
    if sep:
        if header:
            lines.append(sep.join(fields) + (sep if trailing else ""))
        lines += [sep.join(r) + (sep if trailing else "") for r in rows]
    else:
        width = [max(10, len(f)) for f in fields]
        if header:
            lines.append(" ".join(f.rjust(w) for f, w in zip(fields, width, strict=True)))
            lines.append(" ".join("-" * w for w in width))
        for r in rows:
            lines.append(" ".join(v[:w].rjust(w) for v, w in zip(r, width, strict=True)))
    for line in lines:
        print(line)
    return 0


# -- scancel / scontrol -----------------------------------------------------------------------
def _signal_job(job: Mapping[str, Any], sig: int) -> None:
    pgid = job.get("pgid")
    if pgid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(pgid), sig)


def _signal_steps(job: Mapping[str, Any], sig: int) -> None:
    for step in job["steps"]:
        if step["state"] != "RUNNING" or step["id"] == "batch":
            continue
        for pid in step.get("pids", ()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(pid), sig)


def _signal_number(name: str) -> int:
    name = name.upper()
    if name.isdigit():
        return int(name)
    try:
        return int(signal.Signals[name if name.startswith("SIG") else f"SIG{name}"])
    except KeyError as exc:
        raise SlurmError(f"scancel: error: Invalid job signal: {name}") from exc


def scancel(args: list[str]) -> int:
    """``scancel [--signal=SIG|-s SIG] [-b] ids...``: cancel (or signal) queued jobs."""
    record_call("scancel", args)
    sig: int | None = None
    batch = False
    ids: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--signal="):
            sig = _signal_number(arg.split("=", 1)[1])
        elif arg in ("-s", "--signal"):
            i += 1
            sig = _signal_number(args[i])
        elif arg in ("-b", "--batch"):
            batch = True
        elif arg in ("-f", "--full", "-Q", "--quiet", "-v", "--verbose"):
            pass
        elif arg.startswith("-"):
            raise SlurmError(f"scancel: unrecognized option '{arg}'")
        else:
            ids.append(arg)
        i += 1
    if not ids:
        raise SlurmError("scancel: error: No job identification provided")
    code = 0
    with locked_table() as table:
        for job_id in ids:
            job = table["jobs"].get(job_id.split("_")[0])
            if job is None:
                print(f"scancel: error: Invalid job id {job_id}", file=sys.stderr)
                code = 1
                continue
            if job["state"] not in (*QUEUED, "HELD"):
                print(
                    f"scancel: error: Kill job error on job id {job_id}: "
                    "Job/step already completing or completed",
                    file=sys.stderr,
                )
                continue
            if sig is not None:  # steps only, unless --batch (as Slurm does)
                job["signals"].append(int(sig))
                if batch:
                    _signal_job(job, sig)
                else:
                    _signal_steps(job, sig)
                continue
            running = job["state"] == "RUNNING"
            job.update(
                state="CANCELLED",
                cancelled_by=os.getuid(),
                end_time=time.time(),
                exit_code="0:15" if running else "0:0",
                reason="None",
            )
            if not job.get("start_time"):
                job["start_time"] = job["end_time"]
            if running:
                _signal_job(job, signal.SIGTERM)
    return code


def scontrol(args: list[str]) -> int:
    """``scontrol requeue ID`` and ``scontrol show job ID`` (enough for the job script)."""
    record_call("scontrol", args)
    if len(args) >= 2 and args[0] == "requeue":
        with locked_table() as table:
            for job_id in args[1].split(","):
                job = table["jobs"].get(job_id)
                if job is None:
                    raise SlurmError(f"Requeue of job {job_id} failed: Invalid job id specified")
                if "no-requeue" in job["options"]:
                    raise SlurmError(
                        f"Requeue of job {job_id} failed: Requested operation is presently disabled"
                    )
                job.update(state="PENDING", reason="BeginTime", end_time=None, start_time=None)
                job["restarts"] += 1
                job["requeued"] = True
        return 0
    if len(args) >= 3 and args[0] == "show" and args[1] == "job":
        job = read_table()["jobs"].get(args[2])
        if job is None:
            raise SlurmError("slurm_load_jobs error: Invalid job id specified")
        print(
            f"JobId={job['job_id']} JobName={job['name']}\n"
            f"   JobState={job['state']} Reason={job['reason'] or 'None'} "
            f"Restarts={job['restarts']} ExitCode={job['exit_code']}\n"
            f"   NumNodes={job['nodes']} NumTasks={job['ntasks']} "
            f"NodeList={job['node_list'] or '(null)'}\n"
            f"   WorkDir={job['submit_dir']} Command={job['script']}"
        )
        return 0
    raise SlurmError(f"invalid or unsupported fake scontrol command: {' '.join(args)}")


# -- running a job ----------------------------------------------------------------------------
def _expand(pattern: str, job_id: str, task: int, step: str, node: str) -> str:
    subs = {"j": job_id, "J": job_id, "A": job_id, "t": str(task), "s": step, "N": node}
    subs.update({"n": "0", "u": os.environ.get("USER", "user"), "x": "job", "%": "%"})
    return re.sub(r"%([a-zA-Z%])", lambda m: subs.get(m.group(1), m.group(0)), pattern)


def job_env(job: Mapping[str, Any], base: Mapping[str, str]) -> dict[str, str]:
    """The batch script's environment: the submission's, plus what slurmd sets."""
    env = {k: v for k, v in base.items() if not k.startswith(RECORDED[:5])}
    env.update(job["env"])  # --export=ALL: the environment sbatch saw
    nodes = node_list(job["nodes"])
    per_node = str(job["ntasks_per_node"])
    env.update(
        SLURM_JOB_ID=job["job_id"],
        SLURM_JOBID=job["job_id"],
        SLURM_JOB_NAME=job["name"],
        SLURM_JOB_NUM_NODES=str(job["nodes"]),
        SLURM_NNODES=str(job["nodes"]),
        SLURM_JOB_NODELIST=nodes,
        SLURM_NODELIST=nodes,
        SLURM_NTASKS=str(job["ntasks"]),
        SLURM_NPROCS=str(job["ntasks"]),
        SLURM_NTASKS_PER_NODE=per_node,
        SLURM_TASKS_PER_NODE=f"{per_node}(x{job['nodes']})" if job["nodes"] > 1 else per_node,
        SLURM_JOB_CPUS_PER_NODE=per_node,
        SLURM_CPUS_ON_NODE=per_node,
        SLURM_SUBMIT_DIR=job["submit_dir"],
        SLURM_SUBMIT_HOST=os.uname().nodename,
        SLURM_CLUSTER_NAME=CLUSTER,
        SLURM_JOB_PARTITION=job["options"].get("partition") or "debug",
        SLURM_NODEID="0",
        SLURM_PROCID="0",
        SLURM_LOCALID="0",
        SLURMD_NODENAME=node_names(job["nodes"])[0],
        SLURM_GTIDS="0",
        ENVIRONMENT="BATCH",
    )
    if job["restarts"]:
        env["SLURM_RESTART_COUNT"] = str(job["restarts"])
    if job["options"].get("cpus-per-task"):
        env["SLURM_CPUS_PER_TASK"] = str(job["options"]["cpus-per-task"])
    signal_opt = job["options"].get("signal")
    if signal_opt:
        env["SLURM_SIGNAL"] = signal_opt
    return env


def run_job(job_id: str, timeout: float | None = None) -> int:
    """Run a queued job's script as slurmd would; set its final state; return the exit code."""
    root = state_dir()
    with locked_table(root) as table:
        job = table["jobs"].get(job_id)
        if job is None:
            raise SlurmError(f"run-job: no job {job_id}")
        if job["state"] not in ("PENDING", "REQUEUED"):
            raise SlurmError(f"run-job: job {job_id} is {job['state']}, not PENDING")
        job.update(
            state="RUNNING",
            reason="None",
            start_time=time.time(),
            end_time=None,
            node_list=node_list(job["nodes"]),
            requeued=False,
        )
        job["steps"] = [
            {
                "id": "batch",
                "name": "batch",
                "state": "RUNNING",
                "nodes": node_names(job["nodes"])[0],
                "ntasks": 1,
                "exit_code": "0:0",
                "start_time": job["start_time"],
                "end_time": None,
            }
        ]
        snapshot = dict(job)
    record_call("run-job", [job_id])
    env = job_env(snapshot, os.environ)
    opts = snapshot["options"]
    node = node_names(snapshot["nodes"])[0]
    out_pattern = opts.get("output") or "slurm-%j.out"
    err_pattern = opts.get("error") or out_pattern
    mode = "w" if opts.get("open-mode") == "truncate" else "a"
    cwd = Path(snapshot["submit_dir"])
    out_path = cwd / _expand(out_pattern, job_id, 0, "batch", node)
    err_path = cwd / _expand(err_pattern, job_id, 0, "batch", node)
    with open(out_path, mode) as out, open(err_path, mode) as err:
        proc = subprocess.Popen(
            ["bash", snapshot["script"], *snapshot["script_args"]],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        with locked_table(root) as table:
            table["jobs"][job_id]["pgid"] = proc.pid
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
            reap_group(proc.pid, 0)
            finish_job(job_id, "TIMEOUT", "0:0")
            return code
        reap_group(proc.pid, KILL_WAIT_S)
    if code < 0:
        exit_code = f"0:{-code}"
    else:
        exit_code = f"{code}:0"
    finish_job(job_id, "COMPLETED" if code == 0 else "FAILED", exit_code)
    return code


def reap_group(pgid: int, grace: float) -> None:
    """Wait for every process of the job's group to exit; SIGKILL them after ``grace`` s."""
    deadline = time.monotonic() + grace
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            return
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            deadline = time.monotonic() + 5
        time.sleep(0.05)


def finish_job(job_id: str, state: str, exit_code: str) -> None:
    """Record the end of a job's batch script (kept CANCELLED/requeued if it was)."""
    with locked_table() as table:
        job = table["jobs"][job_id]
        job["pgid"] = None
        now = time.time()
        for step in job["steps"]:
            if step["id"] == "batch":
                step.update(state=state, exit_code=exit_code, end_time=now)
        if job.get("requeued"):
            job["requeued"] = False
            return  # scontrol requeue put it back to PENDING
        if job["state"] == "CANCELLED":
            return
        job.update(state=state, exit_code=exit_code, end_time=now, reason="None")
        if state != "COMPLETED":
            job["reason"] = "NonZeroExitCode"


def srun(args: list[str]) -> int:
    """``srun [options] cmd...`` inside a job: start one step's tasks with their variables."""
    record_call("srun", args)
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        raise SlurmError(
            "srun: error: the fake srun runs only inside a job (FakeSlurm.run_job)", code=1
        )
    out_pattern = err_pattern = None
    ntasks = int(os.environ.get("SLURM_NTASKS", "1"))
    cpus = os.environ.get("SRUN_CPUS_PER_TASK")
    mpi = "none"
    kill_on_bad_exit = False
    with_value = {"--output", "-o", "--error", "-e", "--ntasks", "-n", "--nodes", "-N"}
    with_value |= {"--cpus-per-task", "-c", "--mpi", "--job-name", "-J", "--export"}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if name in with_value:
            if not eq:
                i += 1
                value = args[i]
            if name in ("--output", "-o"):
                out_pattern = value
            elif name in ("--error", "-e"):
                err_pattern = value
            elif name in ("--ntasks", "-n"):
                ntasks = int(value)
            elif name in ("--cpus-per-task", "-c"):
                cpus = value
            elif name == "--mpi":
                mpi = value
        elif name == "--kill-on-bad-exit" or name == "-K":
            kill_on_bad_exit = value != "0"
        i += 1
    command = args[i:]
    if not command:
        raise SlurmError("srun: fatal: No command given to execute.")
    with locked_table() as table:
        job = table["jobs"][job_id]
        step_id = str(sum(1 for s in job["steps"] if s["id"] not in ("batch", "extern")))
        step = {
            "id": step_id,
            "name": Path(command[0]).name,
            "state": "RUNNING",
            "nodes": job["node_list"],
            "ntasks": ntasks,
            "exit_code": "0:0",
            "start_time": time.time(),
            "end_time": None,
            "argv": args,
        }
        job["steps"].append(step)
        nodes, per_node = job["nodes"], job["ntasks_per_node"]
    procs = []
    files = []
    for task in range(ntasks):
        node_index = min(task // max(per_node, 1), nodes - 1)
        node = node_names(nodes)[node_index]
        env = dict(os.environ)
        env.update(
            SLURM_STEP_ID=step_id,
            SLURM_STEPID=step_id,
            SLURM_PROCID=str(task),
            SLURM_LOCALID=str(task % max(per_node, 1)),
            SLURM_NODEID=str(node_index),
            SLURMD_NODENAME=node,
            SLURM_STEP_NUM_TASKS=str(ntasks),
            SLURM_STEP_NUM_NODES=str(nodes),
            SLURM_STEP_NODELIST=node_list(nodes),
            SLURM_STEP_TASKS_PER_NODE=str(per_node),
            SLURM_NTASKS=str(ntasks),
            SLURM_NPROCS=str(ntasks),
            SLURM_MPI_TYPE=mpi,
            SLURM_TOPOLOGY_ADDR=node,
            SLURM_GTIDS=str(task),
        )
        if cpus:
            env["SLURM_CPUS_PER_TASK"] = str(cpus)
        out = open(_expand(out_pattern, job_id, task, step_id, node), "a") if out_pattern else None
        err = open(_expand(err_pattern, job_id, task, step_id, node), "a") if err_pattern else out
        files += [f for f in (out, err) if f is not None]
        procs.append(subprocess.Popen(command, env=env, stdout=out, stderr=err))
    with locked_table() as table:
        for s in table["jobs"][job_id]["steps"]:
            if s["id"] == step_id:
                s["pids"] = [p.pid for p in procs]
    codes: list[int | None] = [None] * ntasks
    try:
        while any(c is None for c in codes):
            for n, p in enumerate(procs):
                if codes[n] is None:
                    codes[n] = p.poll()
                    bad = codes[n] is not None and codes[n] != 0
                    if bad and kill_on_bad_exit:
                        for other in procs:
                            if other.poll() is None:
                                other.kill()
            time.sleep(0.02)
    except BaseException:  # SIGTERM from scancel reaches srun too: pass it on to the tasks
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait()
        raise
    finally:
        for f in set(files):
            f.close()
    final = [int(c) for c in codes if c is not None]
    for task, c in enumerate(final):
        if c:
            print(
                f"srun: error: {NODE_PREFIX}: task {task}: Exited with exit code {c}",
                file=sys.stderr,
            )
    code = max(final, key=lambda c: (c != 0, abs(c)))
    code = 128 - code if code < 0 else code
    with locked_table() as table:
        for s in table["jobs"][job_id]["steps"]:
            if s["id"] == step_id:
                s.update(
                    state="COMPLETED" if code == 0 else "FAILED",
                    exit_code=f"{code}:0",
                    end_time=time.time(),
                )
    return code


COMMANDS = {
    "sbatch": sbatch,
    "squeue": squeue,
    "sacct": sacct,
    "scancel": scancel,
    "scontrol": scontrol,
    "srun": srun,
}


def main(command: str, args: list[str]) -> int:
    """Run one fake command; errors go to stderr as Slurm prints them."""
    try:
        if command == "run-job":
            return run_job(args[0], float(args[1]) if len(args) > 1 else None)
        return COMMANDS[command](args)
    except SlurmError as exc:
        print(str(exc), file=sys.stderr)
        return exc.code


def _on_sigterm(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_sigterm)
    sys.exit(main(sys.argv[1], sys.argv[2:]))
