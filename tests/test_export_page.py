"""`charlm export --format html`: the page in headless Chromium, against PyTorch and the CLI."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from charlm import cells, checkpoint, page
from charlm.cells import CELLS
from charlm.checkpoint import load_model
from charlm.cli import main
from charlm.model import CharLM, ModelConfig
from charlm.report import evaluate_text
from charlm.train import TrainConfig, train
from charlm.vocab import Vocab
from tests.browser import browser, needs_browser
from tests.conftest import TEXT
from tests.test_export import EVERY_CELL, shape_id

pytestmark = needs_browser

PREFIX = "First"
HELD = " ".join(reversed(TEXT[:3000].split(" ")))  # the corpus's words in another order


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    with browser(tmp_path_factory.mktemp("chromium")) as d:
        yield d


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained model (about a second on the CPU)."""
    folder = tmp_path_factory.mktemp("page")
    corpus = folder / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    cfg = TrainConfig(
        corpus=str(corpus), out=str(folder / "run"), hidden_size=48, embedding_dim=16,
        seq_len=32, batch_size=16, lr=1e-2, epochs=3, sample_every=0, device="cpu", amp="off",
    )  # fmt: skip
    return train(cfg, progress_bar=False).out


def open_page(driver, source: Path, out: Path, *flags: str) -> Path:
    """Export `source` as a page and open it."""
    cli("export", str(source), "--format", "html", "-o", str(out), *flags)
    driver.get(out.as_uri())
    return out


def teacher_forced(source: Path, text: str) -> np.ndarray:
    """PyTorch's logits after each character of `text` from the zero state: (T, V)."""
    model, vocab, _ = load_model(source, "cpu")
    ids = torch.from_numpy(vocab.encode(text))[:, None]
    with torch.no_grad():
        return model(ids, dropout=False)[0][:, 0].numpy()


def random_model(vocab: Vocab, **config: object) -> CharLM:
    """A model with random weights: the biases and gains drawn too (the min cells start them
    at 0 and 1, where a bias or gain in the wrong place would not show)."""
    torch.manual_seed(0)
    model = CharLM(ModelConfig(len(vocab), init="pytorch", **config))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5) if "gain" in name else p.uniform_(-0.3, 0.3)
    return model


def save(folder: Path, model: CharLM, vocab: Vocab) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"model_config": asdict(model.cfg), "vocab": vocab.chars, "model": model.state_dict()}
    checkpoint.save(payload, folder / "best.pt")
    return folder


def page_logits(driver, text: str) -> np.ndarray:
    return np.array(driver.execute_script("return charlm.logits(arguments[0])", text))


# every cell, as in tests/test_export.py (one layer with an embedding, two one-hot), and
# byte-level models: the LSTM's stack and the min cells' residual blocks over 256 inputs
PAGE_CELLS = EVERY_CELL
BYTES = [
    {"model": name, "hidden_size": 16, "num_layers": 2, "embedding_dim": 0, "bytes": True}
    for name in ("lstm", "minlstm")
]


@pytest.mark.parametrize(
    "config",
    [*PAGE_CELLS, *BYTES],
    ids=lambda c: shape_id(c) + ("-bytes" if c.get("bytes") else ""),
)
def test_page_logits_equal_pytorch_for_every_cell(driver, tmp_path: Path, config: dict) -> None:
    """The page's step equations and hooks (float32 weights) against the model's forward pass."""
    config = dict(config)
    vocab = Vocab.of_bytes() if config.pop("bytes", False) else Vocab(sorted(set(TEXT)))
    save(tmp_path, random_model(vocab, **config), vocab)
    open_page(driver, tmp_path, tmp_path / "m.html")
    text = TEXT[:400] if not vocab.is_bytes else "Größe: ĉu vi parolas? 🙂 " * 10
    got, want = page_logits(driver, text), teacher_forced(tmp_path, text)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-4 and np.abs(want).max() > 0.1
    if vocab.is_bytes:  # generates bytes, shown as the UTF-8 text they make
        out = driver.execute_script("return charlm.generate({prefix: 'Größe', length: 50})")
        assert isinstance(out, str) and out


def test_greedy_in_the_page_is_charlm_generate_greedy(driver, run: Path, tmp_path: Path) -> None:
    open_page(driver, run, tmp_path / "m.html")
    want = cli("generate", "--checkpoint", str(run), "--prefix", PREFIX, "--length", "200",
               "--greedy")  # fmt: skip
    got = driver.execute_script(
        "return charlm.generate({prefix: arguments[0], length: 200, temperature: 0})", PREFIX
    )
    assert len(set(got)) > 5  # not one character over and over
    if PREFIX + got + "\n" != want:  # float32 rounding flipped a near-tie: compare the logits
        text = want.rstrip("\n")
        assert np.abs(page_logits(driver, text) - teacher_forced(run, text)).max() <= 1e-4


def test_int8_page_scores_within_a_hundredth_of_a_bit(driver, run: Path, tmp_path: Path) -> None:
    float32 = open_page(driver, run, tmp_path / "f.html")
    bits = driver.execute_script("return charlm.bits(arguments[0])", HELD)
    model, vocab, _ = load_model(run, "cpu")
    assert bits == pytest.approx(
        evaluate_text(model, vocab, HELD).as_dict()["bits_per_char"], abs=1e-4
    )
    int8 = open_page(driver, run, tmp_path / "q.html", "--quantize", "int8")
    bits_int8 = driver.execute_script("return charlm.bits(arguments[0])", HELD)
    assert bits_int8 != bits and abs(bits_int8 - bits) <= 0.01
    assert int8.stat().st_size < 0.5 * float32.stat().st_size


def as_int8_pages_read_it(model: CharLM) -> None:
    """Every matrix the page stores as int8 (all but the embedding) replaced by what the page
    reads back: rounded to steps of max |w| / 127 per output unit (a row of nn.LSTM's and
    nn.GRU's weight_*, a column of charlm's x W matrices)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and not name.startswith("embedding."):
                rows = p if name.rsplit(".", 1)[-1].startswith("weight_") else p.t()
                scale = rows.abs().amax(1, keepdim=True) / 127
                scale[scale == 0] = 1
                rows.copy_(torch.round(rows / scale) * scale)


@pytest.mark.parametrize("name", list(CELLS))
def test_int8_page_logits_equal_pytorch_on_the_weights_it_reads(
    driver, tmp_path: Path, name: str
) -> None:
    """--quantize int8, for every cell: the page's logits are PyTorch's for the model whose
    matrices are what the page reads back, within the float32 pages' tolerance."""
    vocab = Vocab(sorted(set(TEXT)))
    model = random_model(vocab, model=name, hidden_size=16, num_layers=2, embedding_dim=8)
    open_page(
        driver, save(tmp_path / "run", model, vocab), tmp_path / "q.html", "--quantize", "int8"
    )
    got = page_logits(driver, TEXT[:400])
    want = teacher_forced(tmp_path / "run", TEXT[:400])
    assert np.abs(got - want).max() > 1e-4  # int8 changed the weights
    as_int8_pages_read_it(model)
    want = teacher_forced(save(tmp_path / "read", model, vocab), TEXT[:400])
    assert np.abs(got - want).max() <= 1e-4 and np.abs(want).max() > 0.1


def _generate_in_the_ui(driver, prefix: str, seed: int, **controls: object) -> str:
    """Fill the controls, click Generate, wait for the end; the text shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    for name, value in {"prefix": prefix, "seed": seed, **controls}.items():
        box = driver.find_element(By.ID, name)
        box.clear()
        box.send_keys(str(value))
    driver.find_element(By.ID, "go").click()
    wait = WebDriverWait(driver, 30)
    wait.until(lambda d: d.find_element(By.ID, "go").is_enabled())
    return driver.find_element(By.ID, "out").text


def test_the_page_generates_offline_from_its_controls(driver, run: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    out = open_page(driver, run, tmp_path / "m.html", "--quantize", "int8")
    html = out.read_text(encoding="utf-8")
    assert not re.search(r"https?://|\bsrc=|<link|@import|url\(", html)  # nothing to fetch
    controls = {"temperature": 0.8, "topk": 10, "length": 300}
    first = _generate_in_the_ui(driver, PREFIX, 3, **controls)
    status = driver.find_element(By.ID, "status").text
    assert re.fullmatch(r"300 characters, \d+ per second", status), status
    assert first.startswith(PREFIX) and len(first) == len(PREFIX) + 300
    assert _generate_in_the_ui(driver, PREFIX, 3, **controls) == first  # seeded
    assert _generate_in_the_ui(driver, PREFIX, 4, **controls) != first
    api = driver.execute_script(
        "return charlm.generate({prefix: arguments[0], length: 300, temperature: 0.8, topK: 10,"
        " seed: 3})",
        PREFIX,
    )
    assert PREFIX + api == first  # the controls and the script hook are the same generator
    assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
    _generate_in_the_ui(driver, "Zebra ♞", 1)
    status = driver.find_element(By.ID, "status")
    assert "not in the model's vocabulary" in status.text and "error" in status.get_attribute(
        "class"
    )
    _generate_in_the_ui(driver, PREFIX, 1, length=-5)
    assert "length must be an integer >= 1" in driver.find_element(By.ID, "status").text


def test_the_cells_of_charlm_each_have_a_page_step() -> None:
    """Every registered cell has its step and its hooks in JavaScript, and the tests above
    compare each one's page with PyTorch."""
    assert {c["model"] for c in PAGE_CELLS} == set(CELLS)
    for name, cell in CELLS.items():
        assert page.has_step(name) and page.cell_step(name).startswith("//")
        assert page.cell_hooks(cell).startswith("//")
    residual = page.cell_hooks(cells.MinCell)
    assert float(re.search(r"const EPS = ([0-9.e+-]+);", residual)[1]) == cells.EPS


def test_the_page_config_is_json_the_html_cannot_break(run: Path, tmp_path: Path) -> None:
    """The vocabulary sits in a <script> element: '<', '>' and '&' are escaped, so a corpus
    holding '</script>' cannot end it early (no browser needed)."""
    cli("export", str(run), "--format", "html", "-o", str(tmp_path / "m.html"))
    html = (tmp_path / "m.html").read_text(encoding="utf-8")
    config = html.split('id="charlm-config">', 1)[1].split("</script>", 1)[0]
    assert "<" not in config and json.loads(config)["vocab"] == sorted(set(TEXT))


def test_the_page_benchmark_measures_both_pages(run: Path, tmp_path: Path) -> None:
    """benchmarks/export_page.py keeps working (no speed is asserted: it depends on the load)."""
    from benchmarks.export_page import measure

    rows = measure(run, tmp_path, HELD[:500])
    assert rows.keys() == {"float32", "int8"}
    assert rows["int8"]["bytes"] < 0.5 * rows["float32"]["bytes"]
    for row in rows.values():
        assert (
            row["chars_per_s"] > 0 and row["chars_per_cpu_s"] > 0 and 0 < row["bits_per_char"] < 8
        )
