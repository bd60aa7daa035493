"""No silent wrong results: repeated, malformed and edited records are caught, never merged.

Each test damages a real run directory the way a flaky filesystem, a careless copy or a hand
edit would, then resumes or verifies it and checks the merged state is exact or the error is
one line naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import (
    FIXTURE_PIPELINES,
    assert_stats_equal,
    cli,
    manifest_rows,
    read_manifest,
    stats,
)

SPEC = f"{FIXTURE_PIPELINES}:stats"
N = 40


def run(d: Path, *extra: str) -> tuple[int, str]:
    proc = cli(
        "run", SPEC, "-p", f"n={N}", "--run-dir", str(d), "--commit-every", "5", "-q", *extra
    )
    return proc.returncode, proc.stderr


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, float]]:
    d = tmp_path_factory.mktemp("ref") / "run"
    assert run(d)[0] == 0
    return stats(d)


def journal_lines(d: Path) -> tuple[Path, list[bytes]]:
    path = sorted((d / "journal").glob("*.jsonl"))[0]
    return path, path.read_bytes().splitlines(keepends=True)


def commit_at(lines: list[bytes], k: int) -> int:
    """Line number (0-based) of the k-th commit record."""
    return [i for i, ln in enumerate(lines) if b'"t":"commit"' in ln][k]


def test_a_repeated_commit_line_is_counted_once(
    tmp_path: Path, reference: dict[str, dict[str, float]]
) -> None:
    d = tmp_path / "run"
    assert run(d)[0] == 0
    path, lines = journal_lines(d)
    i = commit_at(lines, 1)
    path.write_bytes(b"".join([*lines[: i + 1], lines[i], *lines[i + 1 :]]))  # exact duplicate
    code, err = run(d)  # a no-op resume re-merges and rewrites the manifest
    assert code == 0, err
    doc = read_manifest(d)
    assert doc["counts"] == {"total": N, "ok": N, "failed": 0, "pending": 0}
    assert doc["journal_duplicate_records"] == {path.name: 1}
    assert [r["index"] for r in manifest_rows(d)] == list(range(N))
    assert_stats_equal(stats(d), reference)  # not merged twice


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("idx", "float", "'idx' holds a value that is not a non-negative integer"),
        ("ok", "short", "'ok' is not a list of"),
        ("err", "stray", "'err' does not name exactly the failed positions"),
        ("seq", "again", "a second commit record with seq"),
    ],
)
def test_malformed_commit_records_are_reported_with_file_and_line_and_rerun(
    tmp_path: Path, field: str, value: str, reason: str, reference: dict[str, dict[str, float]]
) -> None:
    d = tmp_path / "run"
    assert run(d, "--indices", "0:20")[0] == 0
    path, lines = journal_lines(d)
    i = commit_at(lines, 1)
    rec = json.loads(lines[i])
    if value == "float":
        rec["idx"][0] = float(rec["idx"][0]) + 0.5
    elif value == "short":
        rec["ok"] = rec["ok"][:-1]
    elif value == "stray":
        rec["err"] = {"0": {"type": "X", "msg": "", "tb": ""}}
    else:
        rec["seq"] = 0  # collides with the first commit, different content
    lines[i] = json.dumps(rec, separators=(",", ":")).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    doc = json.loads(cli("manifest", str(d), "--json", check=True).stdout)
    (bad,) = doc["journal_bad_records"]
    assert bad["file"] == str(path) and bad["line"] == i + 1 and reason in bad["reason"]
    # the skipped record's indices are pending again (never folded in), and a resume reruns them
    assert doc["counts"]["pending"] == 5 and doc["counts"]["ok"] == 15
    verify = cli("verify", str(d))
    assert verify.returncode == 4 and f"{path}:{i + 1}: malformed commit record" in verify.stderr
    code, err = run(d, "--indices", "0:20")
    assert code == 0, err
    assert sorted(r["index"] for r in manifest_rows(d)) == list(range(20))


def test_an_edited_segment_is_refused_and_the_good_output_is_kept(tmp_path: Path) -> None:
    d = tmp_path / "run"
    assert run(d)[0] == 0
    output = d / "outputs" / "stats.h5"
    good = output.read_bytes()
    assert cli("verify", str(d)).returncode == 0
    seg = sorted((d / "shards" / "stats").glob("*.h5"))[2]
    data = bytearray(seg.read_bytes())
    data[-100] ^= 0xFF
    seg.write_bytes(bytes(data))
    code, err = run(d)  # a no-op resume must not overwrite the good merged output
    assert code == 4, err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("Error:")]
    assert str(seg) in line and "checksum" in line
    assert output.read_bytes() == good
    verify = cli("verify", str(d))
    assert verify.returncode == 4 and str(seg) in verify.stderr
    seg.unlink()
    verify = cli("verify", str(d))
    assert verify.returncode == 4 and "is missing" in verify.stderr


def test_verify_checks_the_merged_outputs_too(tmp_path: Path) -> None:
    d = tmp_path / "run"
    assert run(d)[0] == 0
    ok = cli("verify", str(d))
    assert ok.returncode == 0 and "match their checksums" in ok.stdout
    (d / "outputs" / "stats.h5").write_bytes(b"not the merged statistics")
    bad = cli("verify", str(d))
    assert bad.returncode == 4 and "merged output of 'stats'" in bad.stderr


@pytest.mark.mpi
def test_tree_merge_checks_segment_checksums(tmp_path: Path) -> None:
    """2 ranks with enough segments to merge in a tree: each rank checks its share."""
    d = tmp_path / "run"
    args = ("-p", "n=200", "--commit-every", "1", "--ranks", "2", "-q")
    first = cli("run", SPEC, "--run-dir", str(d), *args)
    assert first.returncode == 0, first.stderr
    assert read_manifest(d)["outputs"]["stats"]["partial_merges"] == 2
    seg = sorted((d / "shards" / "stats").glob("*.rank00001.*"))[-1]
    seg.write_bytes(seg.read_bytes()[:-10])
    again = cli("run", SPEC, "--run-dir", str(d), *args)
    assert again.returncode == 4, again.stderr
    assert str(seg) in again.stderr and "bytes" in again.stderr
