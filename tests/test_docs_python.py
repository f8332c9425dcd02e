"""The Python examples of the documentation run as shown, twice in a row.

Each page's ```python blocks run in order, in one namespace, in an empty folder; the output of
a block is compared with the ```text block right after it, if any: line by line, digits masked
(they differ from machine to machine), and the texts `charlm.generate` returned replaced on
both sides (in the page, a sample is the one line that starts with its prefix). The whole page
then runs again in the same folder: what a reader re-runs must not fail.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

import charlm
from tests.conftest import ROOT

PAGES = ["README.md", "docs/python-api.md"]
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
SAMPLE = "<generated text>"


def examples(page: str) -> list[tuple[str, str | None]]:
    """(code, its output as the page shows it, or None) for each ```python block."""
    blocks = BLOCK.findall((ROOT / page).read_text(encoding="utf-8"))
    found = []
    for k, (language, text) in enumerate(blocks):
        if language == "python":
            after = blocks[k + 1] if k + 1 < len(blocks) else ("", "")
            found.append((text, after[1] if after[0] == "text" else None))
    return found


def shape(output: str, samples: list[str], prefixes: list[str]) -> list[str]:
    """The output's lines, digits masked, each generated text one SAMPLE line."""
    for text in samples:
        output = output.replace(text + "\n", SAMPLE + "\n", 1)
    lines = output.splitlines()
    lines = [SAMPLE if any(line.startswith(p) for p in prefixes) else line for line in lines]
    return [re.sub(r"\d+", "#", line) for line in lines]


def run_page(page: str, monkeypatch) -> None:
    made: list[tuple[str, list[str]]] = []  # (prefix, texts) of every generate call
    real = charlm.generate

    def recording(model, vocab, prefix="", *args, **kwargs):
        texts = real(model, vocab, prefix, *args, **kwargs)
        made.append((prefix, texts))
        return texts

    monkeypatch.setattr(charlm, "generate", recording)
    namespace: dict = {"__name__": "__main__"}
    for n, (code, shown) in enumerate(examples(page)):
        made.clear()
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, f"{page}, Python block {n + 1}", "exec"), namespace)
        if shown is None:
            continue
        texts = [text for _, found in made for text in found]
        prefixes = sorted({prefix for prefix, _ in made if prefix})
        got = shape(printed.getvalue(), texts, [])
        assert got == shape(shown, [], prefixes), f"{page}, block {n + 1}"


@pytest.mark.parametrize("page", PAGES)
def test_the_python_examples_run_as_shown_twice_in_a_row(
    page, tmp_path: Path, monkeypatch, torch_one_thread
):
    assert examples(page), f"no Python examples in {page}"
    monkeypatch.setenv("CHARLM_CACHE", str(tmp_path / "cache"))  # nothing cached or fetched
    monkeypatch.chdir(tmp_path)
    run_page(page, monkeypatch)
    run_page(page, monkeypatch)  # a reader runs it again: it must not fail


def test_the_comparison_can_fail() -> None:
    shown = "stopped by max_steps at step 60\nThe abc\nperplexity 14.58, 3.87 bits\n"
    good = "stopped by max_steps at step 61\nThe x\ny\nperplexity 9.01, 3.17 bits\n"
    assert shape(good, ["The x\ny"], []) == shape(shown, [], ["The "])
    bad = "stopped by epochs at step 61\nThe x\ny\nperplexity 9.01, 3.17 bits\n"
    assert shape(bad, ["The x\ny"], []) != shape(shown, [], ["The "])
