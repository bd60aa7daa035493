"""Nothing outside the run dir is touched: planted symlinks are refused, temp cleanup removes
only this project's temporaries, and no existing directory or file is deleted to place an
output (real runs in subprocesses, real files)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hpc_curator.errors import RunDirError
from hpc_curator.store import atomic
from hpc_curator.store.atomic import TMP_PREFIX, atomic_path, remove, remove_stale_temps, temp_name
from tests.conftest import FIXTURE_PIPELINES, cli

SPEC = f"{FIXTURE_PIPELINES}:stats"
MERGED_TO = f"{Path(__file__).resolve().parent / 'safety_pipelines.py'}:merged_to"


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file below ``directory`` with its content (links not followed)."""
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def outside_dir(tmp_path: Path) -> Path:
    """A directory outside the run dir holding files named like our temporaries."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / temp_name(outside / "stats.h5").name).write_bytes(b"not yours")
    (outside / f"{TMP_PREFIX}precious").write_bytes(b"keep me")
    (outside / "data.txt").write_bytes(b"user data")
    return outside


def assert_refused(proc: subprocess.CompletedProcess[str], link: Path) -> None:
    """Exit 4 and one line on stderr naming ``link``."""
    assert proc.returncode == 4, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(link) in lines[0] and "symbolic link" in lines[0], lines[0]


@pytest.mark.parametrize("fresh", [True, False], ids=["new-run", "resume"])
def test_symlinked_shard_dir_is_refused_and_its_target_untouched(
    tmp_path: Path, fresh: bool
) -> None:
    d = tmp_path / "run"
    base = ["run", SPEC, "-p", "n=20", "--run-dir", str(d), "-q"]
    if not fresh:
        cli(*base, "--indices", "0:10", check=True)
        cli("extend", str(d), "--indices", "10:20", check=True)  # work left for the resume
    outside = outside_dir(tmp_path)
    before = snapshot(outside)
    shards = d / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    if (shards / "stats").exists():
        remove(shards / "stats")
    (shards / "stats").symlink_to(outside)
    proc = cli(*base)
    assert_refused(proc, shards / "stats")
    assert snapshot(outside) == before


@pytest.mark.parametrize("sub", ["journal", "attempts", "outputs", "revisions"])
def test_symlinked_subdirectory_is_refused(tmp_path: Path, sub: str) -> None:
    d = tmp_path / "run"
    outside = outside_dir(tmp_path)
    before = snapshot(outside)
    d.mkdir()
    (d / sub).symlink_to(outside)
    proc = cli("run", SPEC, "-p", "n=20", "--run-dir", str(d), "-q")
    assert_refused(proc, d / sub)
    assert snapshot(outside) == before and sorted(os.listdir(outside)) == sorted(before)


def test_the_run_dir_itself_may_be_a_link(tmp_path: Path) -> None:
    real = tmp_path / "lustre" / "run"
    real.mkdir(parents=True)
    d = tmp_path / "scratch-run"
    d.symlink_to(real)
    proc = cli("run", SPEC, "-p", "n=20", "--run-dir", str(d), "-q")
    assert proc.returncode == 0, proc.stderr
    assert (real / "run.json").is_file() and (real / "outputs" / "stats.h5").is_file()


def test_remove_stale_temps_removes_only_exact_temporaries(tmp_path: Path) -> None:
    here = tmp_path / "dir"
    here.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "precious").write_bytes(b"x")
    stale_file = temp_name(here / "stats.h5")
    stale_file.write_bytes(b"crashed")
    stale_tree = temp_name(here / "stats.zarr")
    (stale_tree / "c").mkdir(parents=True)
    (stale_tree / "c" / "0").write_bytes(b"chunk")
    (stale_tree / "c" / "escape").symlink_to(target)  # a link inside: unlinked, not followed
    stale_link = temp_name(here / "stats.h5")
    stale_link.symlink_to(target)  # named like a temporary: the link goes, its target stays
    keep = [
        here / f"{TMP_PREFIX}precious",  # the prefix alone is not ours
        here / f"{TMP_PREFIX}0123456789ab",  # no final name
        here / f"{TMP_PREFIX}0123456789AB.stats.h5",  # upper case: not what temp_name writes
        here / f"{TMP_PREFIX}0123456789abc.stats.h5",  # 13 digits
        here / f"{TMP_PREFIX}notahexnumber.stats.h5",
    ]
    for p in keep:
        p.write_bytes(b"someone else's")
    assert remove_stale_temps(here) == 3
    assert all(p.read_bytes() == b"someone else's" for p in keep)
    assert not stale_file.exists() and not stale_tree.exists()
    assert not os.path.lexists(stale_link)
    assert (target / "precious").read_bytes() == b"x"
    named = temp_name(here / "a.h5")
    named.write_bytes(b"t")
    other = temp_name(here / "b.h5")
    other.write_bytes(b"t")
    assert remove_stale_temps(here, "a.h5") == 1 and other.exists() and not named.exists()


def test_remove_stale_temps_never_cleans_through_a_linked_directory(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = temp_name(outside / "stats.h5")
    victim.write_bytes(b"not ours")
    link = tmp_path / "linked"
    link.symlink_to(outside)
    assert remove_stale_temps(link) == 0 and remove_stale_temps(link, "stats.h5") == 0
    assert victim.read_bytes() == b"not ours"


def test_remove_never_deletes_through_a_link(tmp_path: Path) -> None:
    target = tmp_path / "target"
    (target / "sub").mkdir(parents=True)
    (target / "sub" / "f").write_bytes(b"x")
    link = tmp_path / "link"
    link.symlink_to(target)
    remove(link)
    assert not os.path.lexists(link) and (target / "sub" / "f").read_bytes() == b"x"


def _write_store(root: Path, value: bytes) -> None:
    (root / "c").mkdir(parents=True)
    (root / "c" / "0").write_bytes(value)


def test_an_output_never_deletes_what_it_would_replace(tmp_path: Path) -> None:
    user_dir = tmp_path / "out.h5"
    user_dir.mkdir()
    (user_dir / "thesis.tex").write_bytes(b"years of work")
    with pytest.raises(RunDirError, match="existing directory"), atomic_path(user_dir) as tmp:
        tmp.write_bytes(b"merged")
    assert (user_dir / "thesis.tex").read_bytes() == b"years of work"
    user_file = tmp_path / "out.zarr"
    user_file.write_bytes(b"a file")
    with pytest.raises(RunDirError, match="existing file"), atomic_path(user_file) as tmp:
        _write_store(tmp, b"store")
    assert user_file.read_bytes() == b"a file"
    user_store = tmp_path / "theirs.zarr"
    _write_store(user_store, b"theirs")
    with pytest.raises(RunDirError, match="did not write"), atomic_path(user_store) as tmp:
        _write_store(tmp, b"ours")
    assert (user_store / "c" / "0").read_bytes() == b"theirs"
    link = tmp_path / "link.h5"
    link.symlink_to(user_dir)
    with pytest.raises(RunDirError, match="symbolic link"), atomic_path(link) as tmp:
        tmp.write_bytes(b"merged")
    assert link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)) == []


def test_an_earlier_directory_output_of_ours_is_replaced(tmp_path: Path) -> None:
    final = tmp_path / "out.zarr"
    with atomic_path(final) as tmp:
        _write_store(tmp, b"first")
    assert (final / atomic.OUTPUT_MARKER).is_dir()
    with atomic_path(final) as tmp:
        _write_store(tmp, b"second")
    assert (final / "c" / "0").read_bytes() == b"second"
    final.with_name("file.h5").write_bytes(b"old")
    with atomic_path(final.with_name("file.h5")) as tmp:  # a file over a file, as always
        tmp.write_bytes(b"new")
    assert final.with_name("file.h5").read_bytes() == b"new"


def test_a_run_refuses_a_merged_output_over_a_user_directory(tmp_path: Path) -> None:
    user_dir = tmp_path / "results"
    user_dir.mkdir()
    (user_dir / "notes.txt").write_bytes(b"mine")
    d = tmp_path / "run"
    proc = cli("run", MERGED_TO, "-p", f"output={user_dir}", "--run-dir", str(d), "-q")
    assert proc.returncode == 4, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(user_dir) in lines[0], proc.stderr
    assert user_dir.is_dir() and (user_dir / "notes.txt").read_bytes() == b"mine"
    assert sorted(os.listdir(user_dir)) == ["notes.txt"]


def test_a_merged_output_over_a_user_directory_is_refused_at_the_merge(tmp_path: Path) -> None:
    """The directory appears while the run works (after the check at its start)."""
    d = tmp_path / "run"
    out = tmp_path / "stats.h5"
    base = ["run", MERGED_TO, "-p", f"output={out}", "--run-dir", str(d), "-q"]
    cli(*base, "--indices", "0:6", check=True)
    assert out.is_file()
    out.unlink()
    out.mkdir()
    (out / "notes.txt").write_bytes(b"mine")
    from hpc_curator.engine.gather import merge_outputs
    from hpc_curator.model.spec import build
    from hpc_curator.store import rundir

    rd = rundir.RunDir(d)
    pipeline = build(rundir.load(rd).spec)
    with pytest.raises(RunDirError, match="existing directory"):
        merge_outputs(rd, pipeline, {"stats": []})
    assert (out / "notes.txt").read_bytes() == b"mine"
