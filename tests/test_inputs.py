"""Many inputs: folders, globs, compressed files, zips, hostile files; the cache and --resume
notice an added, removed or changed file. The expected texts are built by hand, not by charlm."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from charlm.checkpoint import load_model
from charlm.cli import main
from charlm.errors import CharLMError
from charlm.evaluate import score
from charlm.inputs import Selection, load_inputs, resolve, unescape
from charlm.train import train
from charlm.vocab import Vocab, recode
from tests.conftest import tiny


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The encoded-corpus cache: $CHARLM_CACHE/encoded."""
    monkeypatch.setenv("CHARLM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "encoded"


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Nested text, every kind of compressed file, and one of each thing that must be skipped."""
    root = tmp_path / "tree"
    write(root / "a" / "one.txt", b"first file\n")
    write(root / "a" / "b" / "two.md", "second, é\n".encode())
    write(root / "c" / "three.txt.gz", gzip.compress(b"gzip text\n"))
    write(root / "c" / "four.txt.bz2", bz2.compress(b"bzip2 text\n"))
    write(root / "c" / "five.txt.xz", lzma.compress(b"xz text\n"))
    with zipfile.ZipFile(write(root / "d.zip", b""), "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("z/2.txt", "zip two\n")
        z.writestr("z/1.txt", "zip one\n")
        z.writestr("z/pic.png", b"\x89PNG\r\n\x1a\n\x00\x00")
    write(root / "a" / "image.bin", b"GIF89a\x00\x01\x02")  # binary: a NUL byte
    write(root / "a" / "latin1.txt", "café\n".encode("latin-1"))  # not UTF-8
    write(root / "a" / "empty.txt", b"")
    write(root / "c" / "corrupt.txt.gz", b"not gzip at all")
    write(root / ".git" / "HEAD", b"ref: refs/heads/main\n")
    write(root / ".hidden.txt", b"hidden\n")
    write(root / "venv" / "pyvenv.cfg", b"home = /usr\n")
    write(root / "venv" / "lib.py", b"print('venv')\n")
    os.mkfifo(root / "a" / "fifo")  # opening it would block forever
    os.symlink("..", root / "a" / "b" / "up")  # a loop back to a/
    os.symlink("nowhere", root / "a" / "dangling.txt")
    return root


# the tree's text documents in walk order (sorted names, depth first), then joined with "\n"
TREE_DOCS = [
    "second, é\n",  # a/b/two.md
    "first file\n",  # a/one.txt
    "xz text\n",  # c/five.txt.xz
    "bzip2 text\n",  # c/four.txt.bz2
    "gzip text\n",  # c/three.txt.gz
    "zip one\n",  # d.zip/z/1.txt
    "zip two\n",  # d.zip/z/2.txt
]
TREE_SKIPPED = {
    "binary (NUL bytes)": 2,  # a/image.bin, d.zip/z/pic.png
    "not utf-8 (binary?)": 1,
    "empty": 1,
    "unreadable or corrupt": 1,
    "hidden": 2,  # .git, .hidden.txt
    "virtual environment": 1,
    "special file (pipe, socket, device)": 1,
    "folder seen before (symlink loop)": 1,
    "broken link or unreadable": 1,
}


def text_of(corpus) -> str:
    return corpus.vocab.decode(corpus.ids)


def test_a_folder_is_read_in_sorted_order_skipping_what_is_not_text(tree: Path) -> None:
    corpus = load_inputs([str(tree)])
    assert text_of(corpus) == "\n".join(TREE_DOCS)
    assert dict(resolve([str(tree)]).skipped) == TREE_SKIPPED
    assert corpus.note.startswith("read 7 document(s)")
    assert "2 binary (NUL bytes)" in corpus.note and "1 symlink" not in corpus.note
    assert text_of(load_inputs([str(tree)])) == text_of(corpus)  # same folder, same order


def test_separator_escapes_and_hidden(tree: Path) -> None:
    sep = unescape(r"\n\t--\\n\n")
    assert sep == "\n\t--\\n\n"
    corpus = load_inputs([str(tree / "a" / "one.txt"), str(tree / "c")], separator=sep)
    assert text_of(corpus) == sep.join(["first file\n", "xz text\n", "bzip2 text\n", "gzip text\n"])
    with_hidden = load_inputs([str(tree)], Selection(hidden=True))
    assert "hidden\n" in text_of(with_hidden) and "ref: refs/heads/main\n" in text_of(with_hidden)
    assert "print('venv')\n" in text_of(with_hidden)


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        (("*.txt",), (), [1, 2, 3, 4, 5, 6]),  # compressed files match without their suffix
        (("*.md",), (), [0]),
        ((), ("c",), [0, 1, 5, 6]),  # an excluded folder is not entered
        ((), ("a/b/*",), [1, 2, 3, 4, 5, 6]),  # a pattern with / matches the path below the root
        (("d.zip/z/1.*",), (), [5]),  # zip members by their path in the zip
        ((), ("*.zip",), [0, 1, 2, 3, 4]),  # ... and a zip can be left out like a folder
        (("*.txt",), ("*.xz", "one.*"), [3, 4, 5, 6]),  # ... or with it
    ],
)
def test_include_and_exclude(tree: Path, include, exclude, expected) -> None:
    corpus = load_inputs([str(tree)], Selection(include, exclude))
    assert text_of(corpus) == "\n".join(TREE_DOCS[i] for i in expected)


def test_a_file_named_on_the_command_line_is_always_read(tree: Path) -> None:
    corpus = load_inputs([str(tree / "a" / "b" / "two.md")], Selection(include=("*.py",)))
    assert text_of(corpus) == "second, é\n"
    assert corpus.note == ""  # one plain file: nothing to report


def test_globs(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree)
    assert text_of(load_inputs(["c/*.txt.*"])) == "\n".join(TREE_DOCS[2:5])
    assert text_of(load_inputs(["**/*.md"])) == TREE_DOCS[0]
    with pytest.raises(CharLMError, match=r"no file matches nothing\*"):
        load_inputs(["nothing*"])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t: os.mkfifo(t / "fifo"), "is not a regular file"),
        (lambda t: write(t / "fifo", b"ab\x00cd"), "binary file"),
        (lambda t: write(t / "fifo", b"\xff\xfe"), "not valid utf-8"),
        (lambda t: write(t / "fifo", b""), "no text to read"),
        (lambda t: write(t / "fifo.gz", b"nope") and os.rename(t / "fifo.gz", t / "fifo"), None),
        (lambda t: os.symlink("fifo", t / "fifo"), "symlink loop"),
        (lambda t: (t / "fifo").mkdir(), r"no text to read .* \(nothing skipped\)"),
    ],
)
def test_a_named_file_that_is_not_text_is_one_clear_error(tmp_path: Path, make, message) -> None:
    make(tmp_path)
    if message is None:  # a plain file named .gz is not special: read as it is
        assert text_of(load_inputs([str(tmp_path / "fifo")])) == "nope"
        return
    with pytest.raises(CharLMError, match=message) as e:
        load_inputs([str(tmp_path / "fifo")])
    assert "\n" not in str(e.value)


def test_a_corrupt_compressed_file_named_on_the_command_line(tmp_path: Path) -> None:
    path = write(tmp_path / "t.txt.gz", gzip.compress(b"some text " * 1000)[:-30])  # truncated
    with pytest.raises(CharLMError, match=f"cannot read {path}: Compressed file ended"):
        load_inputs([str(path)])
    write(tmp_path / "z.zip", b"PK\x03\x04 not really")
    with pytest.raises(CharLMError, match=r"cannot read .*z\.zip as a zip archive"):
        load_inputs([str(tmp_path / "z.zip")])


def test_only_binaries_is_an_error_that_counts_them(tmp_path: Path) -> None:
    for k in range(3):
        write(tmp_path / "bin" / f"{k}.so", b"\x7fELF\x00\x00")
    with pytest.raises(CharLMError, match=r"no text to read in .*bin \(skipped: 3 binary"):
        load_inputs([str(tmp_path / "bin")])


def test_mixed_encodings(tmp_path: Path) -> None:
    write(tmp_path / "m" / "a.txt", "naïve\n".encode())
    write(tmp_path / "m" / "b.txt", "café\n".encode("latin-1"))
    assert text_of(load_inputs([str(tmp_path / "m")])) == "naïve\n"  # b.txt skipped, counted
    replaced = load_inputs([str(tmp_path / "m")], errors="replace")
    assert text_of(replaced) == "naïve\n\ncaf\ufffd\n"
    latin = load_inputs([str(tmp_path / "m")], encoding="latin-1")
    assert text_of(latin) == "naÃ¯ve\n\ncafé\n"


def test_a_folder_deeper_than_the_recursion_limit(tmp_path: Path) -> None:
    depth = sys.getrecursionlimit() + 50
    folder = tmp_path / "deep"
    folder.mkdir()
    try:
        os.chdir(folder)  # paths stay short: one level at a time
        for _ in range(depth):
            os.mkdir("d")
            os.chdir("d")
        Path("leaf.txt").write_text("at the bottom\n")
        os.chdir(tmp_path)
        assert text_of(load_inputs([str(folder)])) == "at the bottom\n"
    finally:
        os.chdir(tmp_path)
        # shutil.rmtree (and so pytest's clean-up of old temporary folders) recurses: not here
        subprocess.run(["rm", "-rf", str(folder)], check=True)


def test_a_small_compressed_file_with_a_long_text_goes_to_the_cache(tmp_path: Path) -> None:
    """The decoded length decides, not the size on disk: a zip-bomb-like member is streamed."""
    big = b"abcdefgh" * 250_000  # 2 MB of text in a ~10 KB file
    with zipfile.ZipFile(write(tmp_path / "bomb.zip", b""), "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("text.txt", big)
    assert (tmp_path / "bomb.zip").stat().st_size < 20_000
    corpus = load_inputs([str(tmp_path / "bomb.zip")], in_memory_below=1 << 20, chunk_size=4096)
    assert isinstance(corpus.ids, np.memmap) and len(corpus.ids) == len(big)
    np.testing.assert_array_equal(
        corpus.ids[:16], Vocab(sorted(set("abcdefgh"))).encode("abcdefgh" * 2)
    )


def test_the_cache_notices_added_removed_and_changed_files(tree: Path, cache: Path) -> None:
    first = load_inputs([str(tree)], in_memory_below=0)
    assert isinstance(first.ids, np.memmap)
    assert text_of(load_inputs([str(tree)], in_memory_below=0)) == text_of(first)
    write(tree / "a" / "new.txt", b"added\n")
    added = load_inputs([str(tree)], in_memory_below=0)
    assert text_of(added) == "\n".join([TREE_DOCS[0], "added\n", *TREE_DOCS[1:]])
    os.remove(tree / "a" / "one.txt")
    removed = load_inputs([str(tree)], in_memory_below=0)
    assert "first file" not in text_of(removed)
    write(tree / "a" / "new.txt", b"changed!\n")
    os.utime(tree / "a" / "new.txt", ns=(1, 1))
    changed = load_inputs([str(tree)], in_memory_below=0)
    assert "changed!\n" in text_of(changed)
    assert len(list(cache.glob("*.bin"))) == 1  # older versions of the same inputs are removed


def test_resume_refuses_changed_inputs(tree: Path, tiny_config, tmp_path: Path) -> None:
    cfg = tiny(tiny_config, corpus=str(tree), max_steps=2, val_fraction=0.2, seq_len=8)
    cfg = tiny(cfg, batch_size=2)
    train(cfg, progress_bar=False)
    assert train(tiny(cfg, max_steps=3), resume=True, progress_bar=False).progress.step == 3
    write(tree / "a" / "one.txt", b"first file, edited\n")
    with pytest.raises(CharLMError, match=r"inputs differ .* 1 changed \(.*one.txt\)"):
        train(tiny(cfg, max_steps=4), resume=True, progress_bar=False)
    write(tree / "zzz.txt", b"one more\n")
    with pytest.raises(CharLMError, match=r"1 added \(.*zzz.txt\); 1 changed"):
        train(tiny(cfg, max_steps=4), resume=True, progress_bar=False)


def test_cli_trains_and_scores_a_folder_with_the_state_carried_across_documents(
    tree: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    args = ["--hidden-size", "16", "--embedding-dim", "8", "--seq-len", "8", "--batch-size", "4"]
    result = CliRunner().invoke(
        main,
        ["train", str(tree), str(tree / ".hidden.txt"), "--exclude", "*.md", "--out", str(run),
         "--max-steps", "3", "--val-fraction", "0.2", "--sample-every", "0", "--quiet", *args],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = CliRunner().invoke(
        main,
        ["eval", "perplexity", str(tree), str(tree / ".hidden.txt"), "--exclude", "*.md",
         "--checkpoint", str(run), "--json"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    model, vocab, _ = load_model(run, "cpu")
    joined = "\n".join([*TREE_DOCS[1:], "hidden\n"])
    expected = score(model, vocab.encode(joined), seq_len=256)  # one stream through it all
    got = __import__("json").loads(out.output.splitlines()[-1])
    assert got["chars"] == len(joined) - 1 == expected.chars
    assert got["nll"] == pytest.approx(expected.nll, rel=1e-6)
    assert "read 7 document(s)" in out.output  # the note goes to stderr, mixed in by CliRunner


def test_recode_to_a_models_vocabulary() -> None:
    source, target = Vocab(list("abcx")), Vocab(list("abdx"))
    ids = source.encode("xacab")
    with pytest.raises(CharLMError, match=r"1 character\(s\) not in the model's vocabulary: 'c'"):
        recode(ids, source, target, skip_unknown=False)
    np.testing.assert_array_equal(recode(ids, source, target, True), target.encode("xaab"))
    assert recode(ids, source, source, False) is ids
