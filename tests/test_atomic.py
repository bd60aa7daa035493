"""Tests of the atomic-write helpers (real files in tmp_path)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc_curator.store.atomic import (
    TMP_PREFIX,
    atomic_path,
    atomic_write,
    create_exclusive,
    temp_name,
)


def leftovers(directory: Path) -> list[str]:
    """Temporary files left behind anywhere below ``directory``."""
    return sorted(p.name for p in directory.rglob(f"{TMP_PREFIX}*"))


def test_temp_name_is_a_unique_hidden_sibling(tmp_path: Path) -> None:
    final = tmp_path / "sub" / "out.h5"
    a, b = temp_name(final), temp_name(final)
    assert a != b
    assert a.parent == b.parent == final.parent
    assert a.name.startswith(TMP_PREFIX) and a.name.endswith(".out.h5")
    assert a.suffix == final.suffix  # libraries that pick a format by suffix still do


@pytest.mark.parametrize("durable", [True, False])
def test_atomic_write_str_and_bytes(tmp_path: Path, durable: bool) -> None:
    text_path = tmp_path / "a.txt"
    assert atomic_write(text_path, "héllo\n", durable=durable) == text_path
    assert text_path.read_text(encoding="utf-8") == "héllo\n"

    bin_path = tmp_path / "b.bin"
    payload = bytes(range(256)) * 3
    atomic_write(bin_path, payload, durable=durable)
    assert bin_path.read_bytes() == payload
    assert leftovers(tmp_path) == []


def test_atomic_write_replaces_existing_and_creates_parents(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "file.json"
    atomic_write(path, "old")
    atomic_write(path, "new content")
    assert path.read_text() == "new content"
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.json"]


def test_atomic_path_renames_on_success(tmp_path: Path) -> None:
    final = tmp_path / "out.dat"
    with atomic_path(final) as tmp:
        assert tmp.parent == final.parent
        assert tmp.name.startswith(TMP_PREFIX)
        tmp.write_bytes(b"payload")
        assert not final.exists()
    assert final.read_bytes() == b"payload"
    assert not tmp.exists()
    assert leftovers(tmp_path) == []


def test_atomic_path_exception_keeps_old_content(tmp_path: Path) -> None:
    final = tmp_path / "out.dat"
    final.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(final) as tmp:
        tmp.write_bytes(b"new but torn")
        raise RuntimeError("boom")
    assert final.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_atomic_path_exception_before_any_write_creates_nothing(tmp_path: Path) -> None:
    final = tmp_path / "never.dat"
    with pytest.raises(KeyError), atomic_path(final):
        raise KeyError("x")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_create_exclusive_first_wins(tmp_path: Path) -> None:
    path = tmp_path / "attempts" / "a0001.json"
    assert create_exclusive(path, "first") is True
    assert path.read_text() == "first"
    assert create_exclusive(path, b"second") is False
    assert path.read_text() == "first"
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in path.parent.iterdir()) == ["a0001.json"]


def test_create_exclusive_does_not_replace_a_file_written_otherwise(tmp_path: Path) -> None:
    path = tmp_path / "x"
    atomic_write(path, b"\x00\x01")
    assert create_exclusive(path, "other") is False
    assert path.read_bytes() == b"\x00\x01"
    assert leftovers(tmp_path) == []


def _tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def _write_store(root: Path, value: bytes) -> None:
    (root / "c" / "0").mkdir(parents=True)
    (root / "zarr.json").write_bytes(b"{}")
    (root / "c" / "0" / "0").write_bytes(value)


def test_directory_outputs_are_published_whole_and_replaced_whole(tmp_path: Path) -> None:
    final = tmp_path / "out.zarr"
    with atomic_path(final) as tmp:
        assert tmp.name.endswith(".out.zarr")
        _write_store(tmp, b"first")
    assert _tree(final) == {"zarr.json": b"{}", "c/0/0": b"first"}
    with atomic_path(final) as tmp:  # over a non-empty directory: os.replace alone fails
        _write_store(tmp, b"second")
        (tmp / "extra").write_bytes(b"x")
    assert _tree(final) == {"zarr.json": b"{}", "c/0/0": b"second", "extra": b"x"}
    assert leftovers(tmp_path) == []


def test_failed_directory_write_leaves_the_old_tree_and_no_temp(tmp_path: Path) -> None:
    final = tmp_path / "out.zarr"
    with atomic_path(final) as tmp:
        _write_store(tmp, b"good")
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        _write_store(tmp, b"half")
        raise RuntimeError("writer died")
    assert _tree(final)["c/0/0"] == b"good"
    assert leftovers(tmp_path) == []


def test_stale_temporaries_are_removed_only_for_the_named_output(tmp_path: Path) -> None:
    from hpc_curator.store.atomic import remove_stale_temps

    mine, other = temp_name(tmp_path / "stats.zarr"), temp_name(tmp_path / "theirs.h5")
    _write_store(mine, b"crashed")
    other.write_bytes(b"another program's")
    (tmp_path / "stats.zarr").mkdir()
    assert remove_stale_temps(tmp_path, "stats.zarr") == 1
    assert not mine.exists() and other.exists() and (tmp_path / "stats.zarr").is_dir()
    assert remove_stale_temps(tmp_path) == 1 and not other.exists()


def test_tree_digest_sees_renames_edits_and_additions(tmp_path: Path) -> None:
    from hpc_curator.store.checksum import file_digest, size_and_digest

    store = tmp_path / "s.zarr"
    _write_store(store, b"abc")
    first = size_and_digest(store)
    assert first[0] == len(b"{}") + 3
    (store / "c" / "0" / "0").write_bytes(b"abd")
    assert file_digest(store) != first[1]
    (store / "c" / "0" / "0").write_bytes(b"abc")
    assert file_digest(store) == first[1]
    (store / "c" / "0" / "0").rename(store / "c" / "0" / "1")
    assert file_digest(store) != first[1]
