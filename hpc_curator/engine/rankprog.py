"""The rank program's entry: :func:`run_rank`, and the command line launchers give it.

``hpc-curate rank`` (click) is the rank program's command line for people, sbatch scripts and
templates. A launcher that builds the command itself (``run --ranks``: ``mpiexec -n N python
-m hpc_curator.engine.rankprog '<json>'``) passes the same values as one JSON document made by
:func:`argument`, read without click and the CLI's modules (~10 ms of imports less per rank,
on the start-up of every run). Both call :func:`run_rank`: one rank program.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn

from hpc_curator.engine.values import RunSettings
from hpc_curator.errors import CuratorError, UsageError, exit_with


def run_rank(
    run_dir: str,
    settings: RunSettings,
    spec: dict[str, Any] | None = None,
    indices: str | None = None,
    pipeline_blob: str | None = None,
) -> NoReturn:
    """Run this rank's part of the run in ``run_dir``, then exit with the run's exit code.

    ``pipeline_blob`` is the path of a pickled pipeline (:mod:`hpc_curator.model.portable`) for
    objects the spec cannot rebuild. The process ends without the interpreter's teardown,
    MPI finalised (:func:`hpc_curator.runtime.world.exit_process`).
    """
    from hpc_curator.engine.attempt import rank_main
    from hpc_curator.runtime.world import exit_process

    blob = Path(pipeline_blob).read_bytes() if pipeline_blob else None
    _, result, _ = rank_main(run_dir, settings, spec=spec, indices=indices, pipeline_blob=blob)
    exit_process(result.exit_code)


def argument(
    run_dir: str,
    settings: RunSettings,
    spec: dict[str, Any] | None = None,
    indices: str | None = None,
    pipeline_blob: str | None = None,
) -> str:
    """The one argument of ``python -m hpc_curator.engine.rankprog`` for these values."""
    doc = {
        "run_dir": run_dir,
        "settings": asdict(settings),
        "spec": spec,
        "indices": indices,
        "pipeline_blob": pipeline_blob,
    }
    return json.dumps(doc, separators=(",", ":"))


def main(argv: list[str]) -> NoReturn:
    """``python -m hpc_curator.engine.rankprog '<json>'`` (or ``@FILE`` holding it): errors as one
    line and their exit code."""
    try:
        if len(argv) != 1:
            raise UsageError(
                "hpc_curator.engine.rankprog takes one JSON argument (made by launchers)",
                "to start ranks by hand, use: hpc-curate rank --run-dir DIR",
            )
        text = argv[0]
        if text.startswith("@"):  # a launcher's argument too long for a command line
            text = Path(text[1:]).read_text()
        try:
            doc = json.loads(text)
            settings = RunSettings(**doc["settings"])
            run_dir = str(doc["run_dir"])
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(
                f"hpc_curator.engine.rankprog: not a launcher's argument ({exc})"
            ) from None
        run_rank(run_dir, settings, doc.get("spec"), doc.get("indices"), doc.get("pipeline_blob"))
    except (CuratorError, OSError) as exc:
        exit_with(exc)


if __name__ == "__main__":
    main(sys.argv[1:])
