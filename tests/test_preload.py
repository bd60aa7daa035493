"""Rank 0 imports what the manifest needs while it works (``arrow.preload``)."""

from __future__ import annotations

from pathlib import Path


def test_rank_zero_loads_the_manifest_writer_while_it_works(tmp_path: Path) -> None:
    # arrow.preload: pyarrow's import (~45 ms) is hidden behind indices that release the GIL
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import sys, time
        from hpc_curator import Pipeline, Sink
        from hpc_curator.api import run_pipeline
        from hpc_curator.components import SyntheticSource

        class Waits(Sink):
            def __call__(self, items, index):
                for _ in items:
                    pass
                if index == 3:  # sleeping releases the GIL: the preload thread runs
                    deadline = time.monotonic() + 10
                    while "pyarrow.parquet" not in sys.modules and time.monotonic() < deadline:
                        time.sleep(0.01)
                    print("loaded during the loop:", "pyarrow.parquet" in sys.modules)
                return []

        assert "pyarrow" not in sys.modules
        p = Pipeline(SyntheticSource(n=4, shape=(2, 2), fields=("u",))).write(Waits())
        run_pipeline(p, run_dir={str(tmp_path / "r")!r}, progress=False)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "loaded during the loop: True" in proc.stdout
