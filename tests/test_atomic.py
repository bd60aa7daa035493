"""Tests of the atomic-write helpers (real files in tmp_path)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc_curator.atomic import TMP_PREFIX, atomic_path, atomic_write, create_exclusive, temp_name


def leftovers(directory: Path) -> list[str]:
    """Temporary files left behind anywhere below ``directory``."""
    return sorted(p.name for p in directory.rglob(f"{TMP_PREFIX}*"))


def test_temp_name_is_a_unique_hidden_sibling(tmp_path: Path) -> None:
    final = tmp_path / "sub" / "out.h5"
    a, b = temp_name(final), temp_name(final)
    assert a != b
    assert a.parent == b.parent == final.parent
    assert a.name.startswith(f"{TMP_PREFIX}out.h5.")


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
