"""Dynamic evaluation: scored before learned from, the update Krause et al. describe,
deterministic, the model and checkpoint untouched, clear refusals, CLI, --html and API."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import charlm
from charlm.checkpoint import load_model
from charlm.cli import main
from charlm.dynamic import (
    EPS_FRACTION,
    RMS_DECAY,
    RMS_LR,
    Dynamic,
    adapted_windows,
    gradient_rms,
    rms_dynamic,
)
from charlm.errors import CharLMError, command_line
from charlm.evaluate import windows
from charlm.model import CharLM, ModelConfig
from charlm.train import train
from tests.conftest import TEXT, tiny

T = 16  # window length


@pytest.fixture(scope="module")
def model() -> CharLM:
    torch.manual_seed(0)
    return CharLM(ModelConfig(vocab_size=12, model="lstm", hidden_size=24, embedding_dim=8))


def ids(n: int = 100, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 12, n)


def logits_of(model: CharLM, text: np.ndarray, dyn: Dynamic) -> list[torch.Tensor]:
    return [w[0] for w in adapted_windows(model, text, T, dyn)]


def test_a_window_is_scored_before_the_model_learns_from_it(model) -> None:
    """Change the last character window k predicts: windows 0..k are scored the same, while
    window k+1, predicted by a model that learned from window k, is not."""
    a = ids()
    for k in range(4):
        b = a.copy()
        b[(k + 1) * T] = (a[(k + 1) * T] + 1) % 12  # window k's last target, nothing else
        la, lb = logits_of(model, a, Dynamic(lr=0.5)), logits_of(model, b, Dynamic(lr=0.5))
        assert all(torch.equal(x, y) for x, y in zip(la[: k + 1], lb[: k + 1], strict=True))
        assert not torch.allclose(la[k + 1], lb[k + 1])


def reference_window1(model: CharLM, update) -> torch.Tensor:
    """The NLL of window 1 after a hand-made float64 update on window 0: the gradient of its
    mean NLL, `update(i, W_i, g_i)` moving each weight in place, and the state carried from
    window 0 as the trained weights computed it."""
    ref = copy.deepcopy(model).double().eval()
    text = torch.from_numpy(ids())[:, None]
    logits0, state = ref(text[:T], None)
    loss = F.cross_entropy(logits0.reshape(-1, 12), text[1 : T + 1].reshape(-1))
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    with torch.no_grad():
        for i, (p, g) in enumerate(zip(ref.parameters(), grads, strict=True)):
            update(i, p, g)
        logits1, _ = ref(text[T : 2 * T], tuple(s.detach() for s in state))
    target = text[T + 1 : 2 * T + 1].reshape(-1)
    return F.cross_entropy(logits1.reshape(-1, 12), target, reduction="none")


def test_the_update_is_sgd_on_the_window_then_a_pull_back(model) -> None:
    """Window 1 under dynamic evaluation equals the float64 reference of one SGD step and the
    decay towards the trained weights."""
    lr, decay = 0.3, 0.25

    def sgd(i: int, p: torch.Tensor, g: torch.Tensor) -> None:
        p0 = p.clone()
        p -= lr * g
        p += decay * (p0 - p)

    nll1 = reference_window1(model, sgd)
    wide = copy.deepcopy(model).double()
    got = list(adapted_windows(wide, ids(), T, Dynamic(lr=lr, decay=decay)))
    assert torch.allclose(got[1][1][:, 0].double(), nll1, atol=1e-5)


def test_first_window_is_static_and_later_ones_are_not(model) -> None:
    static = [w[1] for w in windows(model, ids(), T, 1, 0, 1)]
    dynamic = [w[1] for w in adapted_windows(model, ids(), T, Dynamic(lr=0.5))]
    assert len(static) == len(dynamic)
    assert torch.allclose(static[0], dynamic[0], atol=1e-6)
    assert not torch.allclose(static[-1], dynamic[-1], atol=1e-3)


def test_deterministic_and_the_model_is_left_alone(model) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = [w[1] for w in adapted_windows(model, ids(), T, Dynamic(lr=0.5))]
    b = [w[1] for w in adapted_windows(model, ids(), T, Dynamic(lr=0.5))]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"lr": 0.0}, "--dynamic-lr must be > 0"),
        ({"lr": float("nan")}, "--dynamic-lr must be > 0"),
        ({"decay": 1.0}, "--dynamic-decay must be in [0, 1)"),
        ({"lr": "0.1"}, "--dynamic-lr must be a number"),
    ],
)
def test_bad_settings_are_refused_where_they_are_made(settings, message) -> None:
    python = message.replace("--dynamic-", "dynamic_")  # a Python caller: the parameter
    with pytest.raises(CharLMError, match="^" + re.escape(python)):
        Dynamic(**settings)
    with command_line(), pytest.raises(CharLMError, match=re.escape(message)):
        Dynamic(**settings)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dyn")
    corpus = folder / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    cfg = charlm.TrainConfig(
        corpus=str(corpus), out=str(folder / "run"), hidden_size=32, embedding_dim=16,
        seq_len=16, batch_size=8, epochs=1, sample_every=0, device="cpu", amp="off",
    )  # fmt: skip
    train(tiny(cfg), progress_bar=False)
    (folder / "heldout.txt").write_text(TEXT[:3000], encoding="utf-8")
    return folder


def test_api_and_streams_refused(run: Path) -> None:
    model, vocab, _ = load_model(run / "run", "cpu")
    static = charlm.score_text(model, vocab, TEXT[:3000], seq_len=64)
    adapted = charlm.score_text(model, vocab, TEXT[:3000], seq_len=64, dynamic=charlm.Dynamic())
    assert adapted.chars == static.chars and adapted.nll < static.nll  # a repetitive text
    with pytest.raises(CharLMError, match="as one stream"):
        charlm.score_text(model, vocab, TEXT[:3000], streams=2, dynamic=charlm.Dynamic())


def cli(*args: str):
    return CliRunner().invoke(main, ["eval", "perplexity", *args])


def test_cli_dynamic_json_html_and_checkpoint_untouched(run: Path, tmp_path: Path) -> None:
    ckpt = run / "run" / "best.pt"
    before = ckpt.read_bytes()
    base = [str(run / "heldout.txt"), "--checkpoint", str(run / "run"), "--seq-len", "64", "--json"]
    static = json.loads(cli(*base).output)
    page = tmp_path / "page.html"
    result = cli(*base, "--dynamic", "--dynamic-lr", "0.01", "--html", str(page))
    assert result.exit_code == 0, result.output
    adapted = json.loads(result.output.splitlines()[-1])
    assert adapted["dynamic"] == {"lr": 0.01, "decay": 0.0}
    assert adapted["chars"] == static["chars"] and adapted["nll"] != static["nll"]
    assert "Dynamic evaluation" in page.read_text(encoding="utf-8")
    assert ckpt.read_bytes() == before


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dynamic", "--streams", "4"], "cannot score it as --streams 4 pieces"),
        (["--dynamic-lr", "0.1"], "only apply with --dynamic"),
        (["--dynamic-rms", "x.txt"], "only apply with --dynamic"),
        (["--dynamic", "--dynamic-rms", "x.txt", "--dynamic-lr", "nan"], "--dynamic-lr must be"),
        (["--dynamic", "--dynamic-lr", "-1"], "--dynamic-lr must be > 0, got -1"),
        (["--dynamic", "--dynamic-decay", "2"], "--dynamic-decay must be in [0, 1), got 2"),
    ],
)
def test_cli_refusals_are_one_line(run: Path, flags, message) -> None:
    result = cli(str(run / "heldout.txt"), "--checkpoint", str(run / "run"), *flags)
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_gradient_rms_is_the_root_mean_square_of_the_window_gradients(model) -> None:
    """sqrt(MS_g) against a float64 loop written here: the mean over the windows (state
    carried, weights fixed) of each weight's squared gradient of the window's mean NLL."""
    ref = copy.deepcopy(model).double().eval()
    text = torch.from_numpy(ids(3 * T + 5, seed=1))[:, None]
    squares, windows, state = [torch.zeros_like(p) for p in ref.parameters()], 0, None
    for t in range(0, len(text) - 1, T):
        w = min(T, len(text) - 1 - t)
        logits, state = ref(text[t : t + w], state)
        loss = F.cross_entropy(logits.reshape(-1, 12), text[t + 1 : t + w + 1].reshape(-1))
        grads = torch.autograd.grad(loss, list(ref.parameters()))
        squares = [s + g.square() for s, g in zip(squares, grads, strict=True)]
        state, windows = tuple(s.detach() for s in state), windows + 1
    expected = [(s / windows).sqrt() for s in squares]
    got = gradient_rms(copy.deepcopy(model).double(), ids(3 * T + 5, seed=1), T)
    assert windows == 4 and len(got) == len(expected)
    assert all(torch.allclose(g, e, atol=1e-10) for g, e in zip(got, expected, strict=True))


def test_the_rms_update_is_the_papers(model) -> None:
    """Window 1 under the RMS-normalised update equals a float64 reference of Krause et al.'s
    eq.: W - lr g / (sqrt(MS_g) + eps) + min(decay RMS_norm, 1) (W_trained - W)."""
    wide = copy.deepcopy(model).double()
    train_ids = ids(200, seed=2)
    rms = gradient_rms(wide, train_ids, T)
    average = float(sum(r.sum() for r in rms) / sum(r.numel() for r in rms))
    lr, decay = 0.01, 0.2

    def rms_step(i: int, p: torch.Tensor, g: torch.Tensor) -> None:
        p0 = p.clone()
        p -= lr * g / (rms[i] + EPS_FRACTION * average)
        p += torch.clamp(decay * rms[i] / average, max=1.0) * (p0 - p)

    nll1 = reference_window1(wide, rms_step)
    adapt = rms_dynamic(wide, train_ids, T, lr=lr, decay=decay)
    got = list(adapted_windows(wide, ids(), T, adapt))
    plain = list(adapted_windows(wide, ids(), T, Dynamic(lr=lr, decay=decay)))
    assert torch.allclose(got[1][1][:, 0].double(), nll1, atol=1e-6)
    assert not torch.allclose(plain[1][1], got[1][1], atol=1e-4)  # not the plain SGD step


def test_rms_statistics_of_another_model_are_refused(model) -> None:
    other = CharLM(ModelConfig(vocab_size=12, model="lstm", hidden_size=8, embedding_dim=8))
    adapt = rms_dynamic(other, ids(), T)
    with pytest.raises(CharLMError, match="not of this model"):
        next(adapted_windows(model, ids(), T, adapt))
    deeper = CharLM(ModelConfig(vocab_size=12, model="lstm", hidden_size=24, num_layers=2))
    with pytest.raises(CharLMError, match="not of this model"):  # more weights, not other sizes
        next(adapted_windows(model, ids(), T, rms_dynamic(deeper, ids(), T)))
    with pytest.raises(CharLMError, match="at least 2 known characters"):
        rms_dynamic(model, ids(1), T)


def test_cli_rms_variant(run: Path, tmp_path: Path) -> None:
    base = [str(run / "heldout.txt"), "--checkpoint", str(run / "run"), "--seq-len", "64", "--json"]
    plain = json.loads(cli(*base, "--dynamic").output)
    result = cli(*base, "--dynamic", "--dynamic-rms", str(run / "corpus.txt"))
    assert result.exit_code == 0, result.output
    rms = json.loads(result.output.splitlines()[-1])
    assert rms["dynamic"] == {"lr": RMS_LR, "decay": RMS_DECAY, "rms": True}
    assert rms["chars"] == plain["chars"] and rms["nll"] != plain["nll"]
    empty, foreign = tmp_path / "empty.txt", tmp_path / "foreign.txt"
    empty.write_text("", encoding="utf-8")
    foreign.write_text("\u03a9" * 500, encoding="utf-8")  # no character the model knows
    cases = ((empty, "no text to read"), (foreign, "fewer than 2 known"), (tmp_path / "no", "no"))
    for text, message in cases:
        result = cli(*base, "--dynamic", "--dynamic-rms", str(text))
        assert result.exit_code == 1 and result.output.startswith("error: "), result.output
        assert f"--dynamic-rms {text}: " in result.output and message in result.output
        assert len(result.output.strip().splitlines()) == 1
