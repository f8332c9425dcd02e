"""The one atomic writer and the one cache folder (charlm/storage.py)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from charlm.errors import CharLMError
from charlm.storage import atomic_write, cache_dir, write_text


def test_replaces_the_file_with_the_umask_permissions(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("old")
    old = os.umask(0o027)
    try:
        write_text(path, "new")
    finally:
        os.umask(old)
    assert path.read_text() == "new"
    assert path.stat().st_mode & 0o777 == 0o640  # not the private 0600 of a temporary file
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "the disk is full"),
        (OSError(errno.EIO, "Input/output error"), "Input/output error"),
    ],
)
def test_a_failed_write_keeps_the_old_file_and_no_temporary(
    tmp_path: Path, error: OSError, message: str
) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")

    def fill(f) -> None:
        f.write(b"half")
        raise error

    with pytest.raises(CharLMError, match=message) as caught:
        atomic_write(path, fill)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_an_interrupt_while_writing_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"

    def fill(f) -> None:
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, fill)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(CharLMError, match="cannot write"):
        write_text(tmp_path / "no" / "such" / "f.txt", "x")


def test_cache_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARLM_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir("corpora") == tmp_path / "c" / "corpora"
    assert cache_dir("encoded") == tmp_path / "c" / "encoded"
    monkeypatch.delenv("CHARLM_CACHE")
    assert cache_dir("encoded") == tmp_path / "xdg" / "charlm" / "encoded"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir("corpora") == tmp_path / "home" / ".cache" / "charlm" / "corpora"
    with pytest.raises(ValueError):
        cache_dir("models")


def test_a_device_or_folder_is_never_replaced(tmp_path: Path) -> None:
    """Renaming over /dev/full would turn the device into a file (as root, it can)."""
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "fifo")
    for target in (tmp_path / "folder", tmp_path / "fifo"):
        with pytest.raises(CharLMError, match="not a regular file"):
            write_text(target, "x")
    assert (tmp_path / "folder").is_dir() and not (tmp_path / "fifo").is_file()


def test_a_symlink_is_written_through(tmp_path: Path) -> None:
    (tmp_path / "real.txt").write_text("old")
    (tmp_path / "link.txt").symlink_to(tmp_path / "real.txt")
    write_text(tmp_path / "link.txt", "new")
    assert (tmp_path / "link.txt").is_symlink() and (tmp_path / "real.txt").read_text() == "new"
