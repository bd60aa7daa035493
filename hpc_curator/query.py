"""A run you can query and correct from Python: ``Run("D")``.

Everything is read from the run directory (journals, ``run.json``, the manifest), so a
``Run`` works for a finished run, a crashed one and one that is still going; nothing is
cached between calls except the index list::

    from hpc_curator import Run

    r = Run("runs/demo")
    r.status, r.summary()["counts"]
    r.failed                      # {index: "ValueError: bad mesh"}
    r.outputs(17), r.index_for("/data/out/00000017.h5")
    r.table().to_pandas()         # one row per index, as manifest.parquet
    r.invalidate([17, 18])        # pending again (their stateful contributions excluded)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from hpc_curator.model.intcheck import integer_indices
from hpc_curator.store import attempt_records, journal, manifest, rundir


class Run:
    """One run directory.

    Parameters
    ----------
    run_dir
        The run directory (must hold a ``run.json``).
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.rd = rundir.RunDir(run_dir)
        self.info = rundir.load(self.rd)

    def __repr__(self) -> str:
        return f"Run({str(self.rd.path)!r})"

    def _scan(self, with_outputs: bool = False) -> journal.JournalScan:
        self.info = rundir.load(self.rd)  # extend may have changed the index list
        return journal.scan(self.rd, with_outputs=with_outputs)

    def _latest(self, scan: journal.JournalScan) -> np.ndarray:
        pos = scan.latest()
        return pos[np.isin(scan.idx[pos], self.info.indices)]

    @property
    def running(self) -> bool:
        """Whether an attempt is alive now."""
        return any(
            attempt_records.attempt_alive(self.rd, a)
            for a in attempt_records.list_attempts(self.rd)
        )

    @property
    def status(self) -> str:
        """``running``, ``complete``, ``failed`` (done, some indices failed) or ``incomplete``."""
        if self.running:
            return "running"
        return str(manifest.summarize(self.rd, self._scan())["status"])

    @property
    def completed(self) -> list[int]:
        """Indices that succeeded (current status), sorted."""
        scan = self._scan()
        pos = self._latest(scan)
        return sorted(scan.idx[pos][scan.ok[pos] == 1].tolist())

    @property
    def failed(self) -> dict[int, str]:
        """Failed indices (current status) and their error, ``"Type: message"``."""
        scan = self._scan()
        out = {}
        for p in self._latest(scan).tolist():
            if scan.ok[p] == 0:
                err = scan.errors.get(p) or {}
                out[int(scan.idx[p])] = f"{err.get('type', 'Error')}: {err.get('msg', '')}"
        return dict(sorted(out.items()))

    @property
    def pending(self) -> list[int]:
        """Indices with no committed record, in the frozen order."""
        scan = self._scan()
        recorded = scan.idx[self._latest(scan)]
        return self.info.indices[~np.isin(self.info.indices, recorded)].tolist()

    def summary(self) -> dict[str, Any]:
        """The manifest's summary, computed now from the journals."""
        doc = manifest.summarize(self.rd, self._scan())
        if self.running:
            doc["status"] = "running"
        return doc

    def outputs(self, index: int) -> list[str]:
        """The output paths the sink returned for ``index`` (``[]``: failed or pending)."""
        scan = self._scan(with_outputs=True)
        pos = self._latest(scan)
        hit = pos[scan.idx[pos] == int(index)]
        if not len(hit) or scan.ok[hit[0]] == 0:
            return []
        outputs = scan.outputs_array()
        return [] if outputs is None else list(outputs[int(hit[0])].as_py())

    def index_for(self, path: str | os.PathLike[str]) -> int | None:
        """The index whose outputs include ``path`` (compared as absolute paths)."""
        target = str(Path(path).absolute())
        scan = self._scan(with_outputs=True)
        outputs = scan.outputs_array()
        if outputs is None:
            return None
        for p in self._latest(scan).tolist():
            paths = outputs[p].as_py() or []
            if any(str(Path(x).absolute()) == target for x in paths):
                return int(scan.idx[p])
        return None

    def table(self) -> Any:
        """One row per recorded index as a ``pyarrow.Table`` (``.to_pandas()`` for pandas)."""
        return manifest.build_table(self.rd, self._scan(with_outputs=True))

    def report(self, out_html: str | os.PathLike[str] | None = None) -> Path:
        """Write the HTML report (default ``D/report.html``) and return its path."""
        from hpc_curator.report import build_report

        return build_report(self.rd.path, Path(out_html or self.rd.report_html))

    def invalidate(self, indices: Any) -> list[int]:
        """Make ``indices`` pending again (see :func:`hpc_curator.store.revise.invalidate`).

        Returns every index that is pending again: the named ones and those that shared a
        commit batch with them (their stateful state was committed together).
        """
        from hpc_curator.store import revise

        return revise.invalidate(self.rd, integer_indices(indices, "Run.invalidate got")).tolist()

    def extend(self, indices: Any) -> None:
        """Append ``indices`` to the run (a new revision of its index list)."""
        from hpc_curator.model import spec as specmod
        from hpc_curator.store import revise

        source_length = len(specmod.build(self.info.spec).source)
        self.info = revise.extend(
            self.rd, integer_indices(indices, "Run.extend got"), source_length
        )
