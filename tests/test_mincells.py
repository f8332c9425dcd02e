"""minGRU and minLSTM (charlm.cells.MinCell): the window's scan against the sequential
recurrence in float64, gradcheck, their residual stack, honest bounds, and a run that trains,
resumes exactly, generates and evaluates.

The step equations (`MinCell.step`) are the recurrence as the paper writes it, one step at a
time; tests/test_stepper.py holds the sequence forward to them and the fast stepper to the plain
one, tests/test_model.py carries their state across windows, for every cell.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from charlm.cells import CELLS, EXPANSION, GatedScan, MinCell, g, log_g, log_scan
from charlm.cli import main
from charlm.config import TrainConfig
from charlm.model import CharLM, ModelConfig
from charlm.settle import AUTO_LONG, AUTO_SHORT, CELL_AUTO, Facts, settle
from charlm.train import train
from tests.conftest import tiny

MIN = ["mingru", "minlstm"]
LENGTHS = [1, 2, 3, 7, 16, 33]  # 1, and lengths that are not powers of two
SCANS = ["sweep", "log"]


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def loop(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """The recurrence as written, h_t = a_t h_{t-1} + b_t: a Python loop, autograd's backward."""
    hs, h = [], h0
    for t in range(a.shape[0]):
        h = a[t] * h + b[t]
        hs.append(h)
    return torch.stack(hs)


def grads(out: torch.Tensor, inputs: list[torch.Tensor], weights: torch.Tensor) -> list:
    """d(sum(out * weights)) / d each input: a loss that touches every output differently."""
    return list(torch.autograd.grad((out * weights).sum(), inputs))


def pre_activations(T: int, seed: int) -> tuple[torch.Tensor, ...]:
    """s, k_h over several units of scale (z from ~0 to ~1, k_h on both sides of 0) and h0 >= 0
    (one row 0: a fresh window), each requiring grad."""
    gen = torch.Generator().manual_seed(seed)
    s, k_h = (torch.randn(T, 3, 5, generator=gen) * 3 for _ in range(2))
    h0 = torch.rand(3, 5, generator=gen) * 3
    h0[0] = 0
    return tuple(x.requires_grad_() for x in (s, k_h, h0))


def the_loop(s: torch.Tensor, k_h: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """The paper's sequential form, z = sigmoid(s): h_t = (1 - z_t) h_{t-1} + z_t g(k_h)."""
    return loop(torch.sigmoid(-s), torch.sigmoid(s) * g(k_h), h0)


@pytest.mark.parametrize("T", LENGTHS)
def test_both_scans_equal_the_loop_outputs_and_gradients(T: int) -> None:
    """The sweep (GatedScan, its backward by hand) and the log-space scan (Heinsen's, through
    autograd) give the loop's states, and the same gradients for s, k_h and the carried
    state h0, within 1e-10 in float64."""
    s, k_h, h0 = pre_activations(T, T)
    w = torch.randn(T, 3, 5, generator=torch.Generator().manual_seed(99))
    want = the_loop(s, k_h, h0)
    want_grads = grads(want, [s, k_h, h0], w)
    log_scanned = log_scan(-F.softplus(s), log_g(k_h) - F.softplus(-s), h0)
    for hs in (GatedScan.apply(s, k_h, h0), log_scanned):
        torch.testing.assert_close(hs, want, rtol=0, atol=1e-10)
        for mine, theirs in zip(grads(hs, [s, k_h, h0], w), want_grads, strict=True):
            torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-10)


def test_gradcheck_of_both_scans() -> None:
    s, k_h, h0 = pre_activations(6, 0)
    assert torch.autograd.gradcheck(GatedScan.apply, (s, k_h, h0))
    a, b = torch.rand(6, 3, 5) * 0.98 + 0.01, torch.rand(6, 3, 5) * 2 + 0.01
    log_a, log_b = (x.log().requires_grad_() for x in (a, b))
    h0_pos = (h0.detach() + 0.1).requires_grad_()  # gradcheck steps h0 both ways: keep it > 0
    assert torch.autograd.gradcheck(log_scan, (log_a, log_b, h0_pos))


@pytest.mark.parametrize("kind", MIN)
@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("T", LENGTHS)
def test_cell_scan_equals_its_step_equations_with_gradients(kind: str, scan: str, T: int) -> None:
    """A window of pre-activations through the cell's scan = `cell.step` applied T times (the
    paper's sequential form), states and gradients of the pre-activations and of h0."""
    torch.manual_seed(T)
    cell = CELLS[kind](4, 6, 1, 0.0, False)
    S = cell.state_size
    k = (torch.randn(T, 3, cell.gates * S) * 3).requires_grad_()
    h0 = (torch.rand(3, S) * 2).requires_grad_()
    w = torch.randn(T, 3, S)
    cls = type(cell)
    cls.scan = scan
    try:
        hs = cell.run_scan(k, h0)
    finally:
        cls.scan = None
    steps, h = [], h0
    for t in range(T):
        h, _ = cell.step(k[t], k[t, :, :0], h, None)
        steps.append(h)
    want = torch.stack(steps)
    torch.testing.assert_close(hs, want, rtol=0, atol=1e-10)
    for mine, theirs in zip(grads(hs, [k, h0], w), grads(want, [k, h0], w), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", MIN)
def test_the_log_scan_trains_the_model_the_sweep_trains(kind: str) -> None:
    """Logits, final states and every parameter's gradient of a 2-layer model, carrying a
    state into the second window: the same under either scan (CUDA runs the log scan)."""
    torch.manual_seed(0)
    model = CharLM(ModelConfig(11, kind, hidden_size=8, num_layers=2, embedding_dim=4, dropout=0))
    X = torch.randint(0, 11, (9, 3))
    results = []
    for scan in SCANS:
        type(model.rnn).scan = scan
        model.zero_grad()
        _, state = model(X[:4])
        logits, final = model(X[4:], state)
        (logits * torch.linspace(-1, 1, logits.numel()).view_as(logits)).sum().backward()
        results.append([logits, final, *(p.grad.clone() for p in model.parameters())])
    type(model.rnn).scan = None
    for mine, theirs in zip(*results, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", MIN)
def test_on_cuda_the_log_scan_equals_the_cpu_sweep(kind: str) -> None:
    """The same torch ops on a GPU (the log-space scan there): a long window carried into a
    second, logits, states and gradients equal to the CPU's in float64."""
    torch.manual_seed(0)
    cpu = CharLM(ModelConfig(30, kind, hidden_size=16, num_layers=2, embedding_dim=8, dropout=0))
    gpu = CharLM(ModelConfig(30, kind, hidden_size=16, num_layers=2, embedding_dim=8, dropout=0))
    gpu.load_state_dict(cpu.state_dict())
    X = torch.randint(0, 30, (300, 4))
    results = []
    for model, device in ((cpu, "cpu"), (gpu.cuda(), "cuda")):
        _, state = model(X[:150].to(device))
        logits, final = model(X[150:].to(device), state)
        w = torch.linspace(-1, 1, logits.numel(), device=device).view_as(logits)
        (logits * w).sum().backward()
        results.append([logits.cpu(), final.cpu(), *(p.grad.cpu() for p in model.parameters())])
    for mine, theirs in zip(*results, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-10)


def test_g_and_log_g() -> None:
    """g(x) = x + 1/2 for x >= 0 and sigmoid(x) below (the paper's), continuous at 0, positive
    everywhere; log_g = log(g) and finite where g underflows."""
    x = torch.linspace(-40, 40, 8001)
    want = torch.where(x >= 0, x + 0.5, torch.sigmoid(x))
    torch.testing.assert_close(g(x), want, rtol=0, atol=1e-15)
    assert bool((g(x) > 0).all()) and float(g(torch.zeros(1))) == 0.5
    torch.testing.assert_close(log_g(x), want.log(), rtol=1e-14, atol=1e-14)
    assert float(log_g(torch.tensor(-800.0))) == -800.0  # sigmoid(-800) is 0 in float64


@pytest.mark.parametrize("kind", MIN)
def test_state_is_positive_and_unbounded_so_int8_is_refused(kind: str) -> None:
    """h is a convex mix of h0 and g values: never negative, but above 1 with large inputs,
    as the cell declares (bounded_state False: int8 sampling refuses it)."""
    torch.manual_seed(1)
    model = CharLM(ModelConfig(7, kind, hidden_size=8, num_layers=2))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(5)
        _, h = model(torch.randint(0, 7, (50, 4)))
    assert bool((h >= 0).all()) and float(h.max()) > 1
    assert not model.rnn.bounded_state


@pytest.mark.parametrize("kind", MIN)
def test_parameters_names_and_init(kind: str) -> None:
    """The checkpoint keys (an exporter's step function reads them by name); pytorch init:
    gains 1, biases 0, each matrix within +-1/sqrt(its fan-in); textbook: N(0, std^2)."""
    torch.manual_seed(0)
    model = CharLM(ModelConfig(5, kind, hidden_size=8, num_layers=2, embedding_dim=4))
    block = ["gain_1", "gain_2", "W_x", "b_x", "W_o", "b_o", "W_1", "b_1", "W_2", "b_2"]
    expected = ["W_hq", "b_q", "embedding.weight", "rnn.W_in", "rnn.b_in", "rnn.gain"]
    expected += [f"rnn.layers.{i}.{name}" for i in range(2) for name in block]
    assert list(model.state_dict()) == expected
    S, G = round(EXPANSION * 8), model.rnn.gates * round(EXPANSION * 8)
    assert model.rnn.layers[0].W_x.shape == (8, G) and model.rnn.layers[1].W_o.shape == (S, 8)
    for name, p in model.rnn.named_parameters():
        if "gain" in name:
            assert bool((p == 1).all()), name
        elif p.dim() == 1:
            assert not p.any(), name
        else:
            assert 0 < float(p.detach().abs().max()) <= p.shape[0] ** -0.5, name
    textbook = CharLM(ModelConfig(5, kind, hidden_size=64, init="textbook", init_std=0.02))
    assert abs(float(textbook.rnn.layers[0].W_1.detach().std()) - 0.02) < 0.002
    assert bool((textbook.rnn.gain == 1).all())


@pytest.mark.parametrize("kind", MIN)
def test_dropout_acts_inside_the_blocks_even_with_one_layer(kind: str) -> None:
    """--dropout drops both branches of every residual block (and the output, CharLM's), so a
    one-layer cell has it too; dropout=False and eval mode drop nothing."""
    model = CharLM(ModelConfig(9, kind, hidden_size=12, num_layers=1, dropout=0.3))
    assert model.rnn.dropout.p == 0.3
    X = torch.randint(0, 9, (7, 3))
    with torch.no_grad():
        eval_out = model.eval()(X)[0]
        model.train()
        quiet_out, quiet_state = model(X, dropout=False)
        H, state = model.rnn(model.embedding(X), model.init_state(3))  # the cell alone
    assert torch.equal(quiet_out, eval_out)
    assert not torch.allclose(H @ model.W_hq + model.b_q, eval_out)  # it dropped inside
    assert torch.equal(state, quiet_state)  # never on the recurrence itself (layer 0's input)


@pytest.mark.parametrize("kind", MIN)
def test_amp_runs_the_scan_in_float32_close_to_float32(kind: str) -> None:
    """Under bfloat16 autocast the matmuls round, the scan and the stream stay float32."""
    torch.manual_seed(2)
    model = CharLM(ModelConfig(13, kind, hidden_size=16, num_layers=2, dropout=0)).float()
    X = torch.randint(0, 13, (20, 4))
    with torch.no_grad():
        want, _ = model(X)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, state = model(X)
    assert state.dtype == torch.float32
    p, q = (torch.softmax(x.float(), -1) for x in (got, want))
    assert float((p - q).abs().max()) < 2e-2


def test_memory_estimate_counts_the_blocks() -> None:
    """The training memory check counts a min cell's stream, blocks and scan per character."""
    lstm = CELLS["lstm"].activation_floats(192, 2)
    assert MinCell.activation_floats.__func__(CELLS["mingru"], 192, 2) > 3 * lstm


def test_a_min_cell_named_with_model_takes_its_own_auto_values() -> None:
    for kind in MIN:
        for budget, span in ((30.0, "short"), (600.0, "long")):
            cfg = settle(TrainConfig(model=kind, time_budget=budget), Facts(steps_per_epoch=10)).cfg
            assert {k: getattr(cfg, k) for k in CELL_AUTO[kind][span]} == CELL_AUTO[kind][span]
    lstm = settle(TrainConfig(time_budget=30.0)).cfg
    assert (lstm.model, lstm.hidden_size) == ("lstm", AUTO_SHORT["hidden_size"])


def test_the_auto_choice_of_a_cell_is_off_and_one_entry_switches_it_on(monkeypatch) -> None:
    """Off: a budget trains the LSTM. With AUTO_CELL["short"] = ("mingru", 2), a short budget
    that leaves the model to it trains a 2-layer minGRU with its auto values, and the plan's
    replay names --model and --num-layers; any model setting given keeps the LSTM."""
    from charlm import settle as settle_module
    from charlm.budget import Costs

    facts = Facts(steps_per_epoch=10, costs=Costs(0.05, 0.4, 0.02))
    off = settle(TrainConfig(time_budget=30.0), facts)
    assert off.cfg.model == "lstm" and "--model" not in off.plan.replay
    monkeypatch.setattr(settle_module, "AUTO_CELL", {"short": ("mingru", 2)})
    on = settle(TrainConfig(time_budget=30.0), facts)
    recipe = CELL_AUTO["mingru"]["short"]
    assert (on.cfg.model, on.cfg.num_layers, on.cfg.hidden_size) == (
        "mingru", 2, recipe["hidden_size"]
    )  # fmt: skip
    assert f"--model mingru --num-layers 2 --hidden-size {recipe['hidden_size']} " in on.plan.replay
    assert settle(TrainConfig(time_budget=600.0), facts).cfg.model == "lstm"  # "long": off
    kept = settle(TrainConfig(time_budget=30.0, hidden_size=384), facts).cfg
    assert (kept.model, kept.num_layers) == ("lstm", 1)
    assert settle(TrainConfig(time_budget=30.0, num_layers=2), facts).cfg.model == "lstm"
    assert AUTO_LONG["hidden_size"] == settle(TrainConfig(), facts).cfg.hidden_size


@pytest.mark.parametrize("kind", MIN)
def test_a_run_trains_resumes_exactly_generates_and_evaluates(kind, tiny_config, tmp_path):
    """Consecutive windows (the state carried), stopped and resumed: the weights of a straight
    run; then it generates (plain and fast), and evaluates as the CLI does."""
    cfg = tiny(tiny_config, model=kind, num_layers=2, sampler="consecutive", epochs=1,
               lr_schedule="constant", dropout=0.1)  # fmt: skip
    torch.set_default_dtype(torch.float32)
    straight = train(replace(cfg, out=str(tmp_path / "straight")), progress_bar=False)
    epoch = json.loads((straight.out / "metrics.jsonl").read_text().splitlines()[0])["step"]
    stopped = replace(cfg, out=str(tmp_path / "stopped"))
    train(replace(stopped, max_steps=epoch - 3), progress_bar=False)  # mid-epoch
    carried = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=True)["state"]
    assert carried.shape == (2, 8, round(EXPANSION * 32)) and bool((carried >= 0).all())
    resumed = train(stopped, resume=True, progress_bar=False)
    assert resumed.progress.step == straight.progress.step
    wa = torch.load(straight.out / "checkpoint.pt", weights_only=True)
    wb = torch.load(resumed.out / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(wa["model"][k], wb["model"][k]) for k in wa["model"])
    uniform = math.log(len(set(Path(cfg.corpus).read_text())))  # nats/char of a blind guess
    assert straight.last_row["val_loss"] < uniform - 0.5, straight.last_row  # it learned
    out, cli = str(straight.out), CliRunner()
    for flags in (["--seed", "1"], ["--seed", "1", "--num-samples", "3", "--amp"],
                  ["--beam-width", "3"]):  # fmt: skip
        shown = cli.invoke(main, ["generate", "--checkpoint", out, "--prefix", "All",
                                  "--length", "20", *flags])  # fmt: skip
        assert shown.exit_code == 0 and "All" in shown.output, shown.output
    refused = cli.invoke(main, ["generate", "--checkpoint", out, "--num-samples", "3", "--int8"])
    assert refused.exit_code == 1 and "does not declare |h| <= 1" in refused.output
    scored = cli.invoke(main, ["eval", "perplexity", str(cfg.corpus), "--checkpoint", out,
                               "--json"])  # fmt: skip
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.output)["bits_per_char"] < 5
    assert wa["model_config"]["model"] == kind
