"""`eval perplexity --html`: the surprisal page is well-formed, faithful to the text and to
the reported bits per character."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from charlm.checkpoint import load_model
from charlm.cli import main
from charlm.evaluate import char_predictions
from charlm.surprisal import EDGES, Surprisal, bin_of, render_html
from charlm.train import TrainConfig, train
from tests.conftest import ROOT, TEXT, char_nll

FIXTURES = ROOT / "tests" / "fixtures" / "surprisal"
TEMPLATE = "charlm/templates/surprisal.html"

VOID = {"meta", "br", "link", "img", "input", "hr"}


class Page(HTMLParser):
    """Checks that tags balance; collects the shown text, the data blob and the summary."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.in_text = False
        self.chars: list[str] = []
        self.classes: list[str] = []
        self.in_data = False
        self.blob = ""
        self.summary: dict[str, str] = {}
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag not in VOID:
            self.stack.append(tag)
        if a.get("src") or (tag == "link" and a.get("href")):
            self.external.append(tag)
        if a.get("id") == "text":
            self.in_text = True
        elif self.in_text and tag == "span":
            self.classes.append(a.get("class") or "")
            self.chars.append("")
        if a.get("id") == "data":
            self.in_data = True
        if a.get("id") == "summary":
            self.summary = {k: v or "" for k, v in attrs}

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}>, open: {self.stack[-3:]}")
            return
        self.stack.pop()
        if tag == "pre":
            self.in_text = False
        if tag == "script":
            self.in_data = False

    def handle_data(self, data: str) -> None:
        if self.in_text:
            assert self.chars, f"text outside a span: {data!r}"
            self.chars[-1] += data
        if self.in_data:
            self.blob += data


def parse(page: str) -> Page:
    p = Page()
    p.feed(page)
    p.close()
    assert not p.errors, p.errors
    assert p.stack == [], f"unclosed tags: {p.stack}"
    assert p.external == [], "the page must not load anything"
    return p


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One tiny trained model for the whole module (the settings of conftest's tiny_config)."""
    folder = tmp_path_factory.mktemp("surprisal")
    (folder / "corpus.txt").write_text(TEXT, encoding="utf-8")
    cfg = TrainConfig(
        corpus=str(folder / "corpus.txt"), out=str(folder / "run"), hidden_size=32,
        embedding_dim=16, seq_len=16, batch_size=8, epochs=1, sample_every=0, log_every=5,
        device="cpu",
    )  # fmt: skip
    train(cfg, progress_bar=False)
    return cfg.out


def _eval(run: str, file: Path, *extra: str) -> tuple[dict, Page]:
    out = file.parent / "surprisal.html"
    result = CliRunner().invoke(
        main,
        ["eval", "perplexity", str(file), "--checkpoint", run, "--json", "--html", str(out),
         "--seq-len", "7", *extra],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("{")]  # click < 8.2 mixes
    return json.loads(line), parse(out.read_text(encoding="utf-8"))


def test_page_is_faithful_to_text_and_score(run: str, tmp_path: Path) -> None:
    text = "First Citizen:\nSpeak, speak.\n\nAll:\nYou are all resolved rather to die."
    file = tmp_path / "t.txt"
    file.write_text(text, encoding="utf-8")
    score, page = _eval(run, file)
    assert "".join(page.chars) == text  # one span per character, newlines kept
    assert all(len(c) == 1 for c in page.chars)
    data = json.loads(page.blob)
    bits = data["bits"]
    assert len(bits) == len(text) and bits[0] is None  # the first character is not scored
    scored = [b for b in bits if b is not None]
    assert len(scored) == score["chars"] == len(text) - 1
    assert sum(scored) / len(scored) == pytest.approx(score["bits_per_char"], abs=1e-6)
    assert float(page.summary["data-bits-per-char"]) == pytest.approx(
        score["bits_per_char"], abs=1e-6
    )
    assert float(page.summary["data-perplexity"]) == pytest.approx(score["perplexity"], rel=1e-6)
    # colours follow the values; top-5 probabilities are sorted, a distribution's head
    assert page.classes[0] == "u"
    for cls, b in zip(page.classes[1:], scored, strict=True):
        assert cls.split()[0] == f"b{bin_of(b)}"
    for chars, probs in (t for t in data["top"] if t is not None):
        assert len(chars) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.0001


def test_unknown_characters_are_shown_but_skipped(run: str, tmp_path: Path) -> None:
    text = "Speak, speak. \u00e9\u00e9 All: ok"
    file = tmp_path / "t.txt"
    file.write_text(text, encoding="utf-8")
    score, page = _eval(run, file, "--skip-unknown")
    assert "".join(page.chars) == text
    assert [c for c, k in zip(page.chars, page.classes, strict=True) if k == "x"] == ["é", "é"]
    bits = [b for b in json.loads(page.blob)["bits"] if b is not None]
    assert score["skipped"] == 2 and len(bits) == score["chars"]
    assert sum(bits) / len(bits) == pytest.approx(score["bits_per_char"], abs=1e-6)


def test_long_texts_are_capped_with_a_note(run: str, corpus: Path) -> None:
    score, page = _eval(run, corpus, "--html-max-chars", "300", "--seq-len", "256")
    text = corpus.read_text(encoding="utf-8")
    assert "".join(page.chars) == text[:300]
    assert int(page.summary["data-chars"]) == 299 < score["chars"]
    html = (corpus.parent / "surprisal.html").read_text(encoding="utf-8")
    assert f"first 300 of {len(text):,} characters" in html


def test_bad_max_chars_is_a_one_line_error(run: str, corpus: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["eval", "perplexity", str(corpus), "--checkpoint", run, "--html", "x.html",
         "--html-max-chars", "1"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.output == "error: --html-max-chars must be >= 2, got 1\n"


def test_predictions_match_char_nll(run: str, corpus: Path) -> None:
    model, vocab, _ = load_model(run, "cpu")
    ids = vocab.encode(corpus.read_text(encoding="utf-8")[:500])
    nll, top_i, top_p = char_predictions(model, ids, seq_len=13, k=5)
    torch.testing.assert_close(nll, char_nll(model, ids, seq_len=13), rtol=0, atol=1e-6)
    # the true character's probability is exp(-nll); when it is in the top 5, it matches there
    hit = top_i == torch.from_numpy(np.asarray(ids[1:])).view(-1, 1)
    assert hit.any()
    torch.testing.assert_close(top_p[hit], torch.exp(-nll)[hit.any(1)], rtol=1e-5, atol=1e-6)


def test_markup_in_the_text_is_escaped() -> None:
    text = '<script>alert("x")</script> & </pre>\r\n\ttab'
    n = len(text)
    bits = [None] + [(0.7310585786 * i) % 13 for i in range(1, n)]
    top = [None] + [[("<", 0.5), ("/", 0.2), (">", 0.1), ("&", 0.1), ("\n", 0.05)]] * (n - 1)
    page = render_html(Surprisal(text, bits, top, [True] * n), "a <b>.txt", "about & more")
    parsed = parse(page)
    assert "".join(parsed.chars) == text
    assert "<script>alert" not in page
    assert json.loads(parsed.blob)["top"][1][0] == "</>&\n"
    assert math.isclose(float(parsed.summary["data-bits-per-char"]), sum(bits[1:]) / (n - 1))
    shown = json.loads(parsed.blob)["bits"]
    assert shown[0] is None
    assert sum(shown[1:]) / (n - 1) == pytest.approx(sum(bits[1:]) / (n - 1), abs=1e-6)
    assert "\r" not in page  # a raw CR would reach the browser as a newline


def test_bins_cover_every_surprisal() -> None:
    assert bin_of(0.0) == 0
    assert bin_of(0.49) == 0 and bin_of(0.5) == 1
    assert bin_of(1e9) == len(EDGES) - 1


@pytest.mark.parametrize("case", ["full", "plain"])
def test_page_is_byte_for_byte_the_page_before_the_template(case: str) -> None:
    """The fixtures were rendered by the str.format page (tests/fixtures/surprisal/make_pages.py):
    markup, braces, quotes, CR, tab, unknown characters, every bin, with and without a note."""
    spec = json.loads((FIXTURES / f"{case}.json").read_text(encoding="utf-8"))
    s = Surprisal(spec["text"], spec["bits"], spec["top"], spec["known"])
    page = render_html(s, spec["source"], spec["about"], spec["note"])
    assert page.encode("utf-8") == (FIXTURES / f"{case}.html").read_bytes()


def test_dollars_and_braces_in_the_inputs_reach_the_page_as_they_are() -> None:
    """The template's $name placeholders are filled once: `$title` or `{x}` in the text, the
    source or the note stays text."""
    text = "cost: $5, ${title} and {spans} $$"
    n = len(text)
    bits = [None] + [1.0] * (n - 1)
    top = [None] + [[("$", 0.5)]] * (n - 1)
    s = Surprisal(text, bits, top, [True] * n)
    page = render_html(s, "$source {x}.txt", "about $about", "note ${note}")
    assert "".join(parse(page).chars) == text
    assert "<code>$source {x}.txt</code>" in page
    assert "about $about<br>" in page and '<p class="note">note ${note}</p>' in page


def _build(backend_call: str, src: Path, dist: Path) -> Path:
    """Run one setuptools PEP 517 hook in `src`; the path of what it built in `dist`."""
    code = f"import sys; from setuptools import build_meta; print(build_meta.{backend_call})"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(dist)], cwd=src, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return dist / proc.stdout.split()[-1]


def test_the_template_ships_in_the_sdist_and_the_wheel_and_is_found_installed(
    tmp_path: Path,
) -> None:
    """sdist -> wheel (as pip builds it) -> installed: the page renders from the installed copy."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns(".git", ".venv", "*.egg-info", "__pycache__", "runs", "build")
    shutil.copytree(ROOT, src, ignore=ignore)
    sdist = _build("build_sdist(sys.argv[1])", src, tmp_path / "dist")
    with tarfile.open(sdist) as tar:
        assert any(n.endswith("/" + TEMPLATE) for n in tar.getnames())
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12
        tar.extractall(tmp_path / "unpacked", **safe)
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    wheel = _build("build_wheel(sys.argv[1])", unpacked, tmp_path / "wheels")
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read(TEMPLATE) == (ROOT / TEMPLATE).read_bytes()
        zf.extractall(tmp_path / "site")  # what pip installs: the wheel's files, as they are
    fixture = FIXTURES / "plain.json"
    render = (
        "import json, sys, charlm.surprisal as m; spec = json.load(open(sys.argv[1]));"
        "s = m.Surprisal(spec['text'], spec['bits'], spec['top'], spec['known']);"
        "sys.stdout.buffer.write(m.__file__.encode() + b'\\n');"
        "sys.stdout.buffer.write(m.render_html(s, spec['source']).encode())"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    proc = subprocess.run(
        [sys.executable, "-c", render, str(fixture)], cwd=tmp_path, capture_output=True, env=env,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    where, page = proc.stdout.split(b"\n", 1)
    assert Path(where.decode()).is_relative_to(tmp_path / "site")
    assert page == (FIXTURES / "plain.html").read_bytes()
