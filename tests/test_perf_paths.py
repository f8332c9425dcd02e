"""The fast paths: hand-written BPTT backward, no per-step host sync, --amp, --compile, CUDA."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from charlm.cells import TanhRecurrence
from charlm.learner import Learner, optim_settings
from charlm.meter import LossMeter
from charlm.model import CharLM, ModelConfig
from charlm.optim import lr_factor
from charlm.train import Trainer
from tests.conftest import tiny

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("T", [1, 2, 9])
def test_tanh_recurrence_gradcheck_float64(T):
    torch.manual_seed(T)
    A = torch.randn(T, 3, 4, dtype=torch.float64, requires_grad=True)
    W_hh = (0.6 * torch.randn(4, 4, dtype=torch.float64)).requires_grad_()
    H0 = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(TanhRecurrence.apply, (A, W_hh, H0))


def test_tanh_recurrence_matches_nn_rnn_float64():
    """Forward and every gradient equal nn.RNN's (which keeps x W_ih^T + b out of the loop too)."""
    torch.manual_seed(0)
    T, B, d, H = 11, 5, 7, 6
    X = torch.randn(T, B, d, dtype=torch.float64)
    H0 = torch.randn(1, B, H, dtype=torch.float64)
    ref = nn.RNN(d, H, dtype=torch.float64)
    W_xh = ref.weight_ih_l0.detach().t().clone().requires_grad_()
    W_hh = ref.weight_hh_l0.detach().t().clone().requires_grad_()
    b_h = (ref.bias_ih_l0 + ref.bias_hh_l0).detach().clone().requires_grad_()
    H0_ours = H0[0].clone().requires_grad_()
    Hs = TanhRecurrence.apply(X @ W_xh + b_h, W_hh, H0_ours)
    Hs_ref, _ = ref(X, H0)
    torch.testing.assert_close(Hs, Hs_ref, rtol=0, atol=1e-12)
    w = torch.randn_like(Hs)
    (Hs * w).sum().backward()
    (Hs_ref * w).sum().backward()
    torch.testing.assert_close(W_xh.grad, ref.weight_ih_l0.grad.t(), rtol=0, atol=1e-10)
    torch.testing.assert_close(W_hh.grad, ref.weight_hh_l0.grad.t(), rtol=0, atol=1e-10)
    torch.testing.assert_close(b_h.grad, ref.bias_ih_l0.grad, rtol=0, atol=1e-10)


def test_one_hot_lookup_equals_textbook_one_hot_matmul():
    """Row lookup of W_xh (charlm) == one-hot matrix times W_xh (the textbook), grads included."""
    torch.manual_seed(0)
    V, H, T, B = 13, 8, 6, 4
    model = CharLM(
        ModelConfig(vocab_size=V, model="rnn", hidden_size=H, embedding_dim=0, dropout=0.0)
    )
    model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    X, Y = torch.randint(0, V, (T, B)), torch.randint(0, V, (T, B))
    logits, _ = model(X)
    F.cross_entropy(logits.reshape(-1, V), Y.reshape(-1)).backward()

    layer = model.rnn.layers[0]
    W_xh, W_hh, b_h = (
        p.detach().clone().requires_grad_() for p in (layer.W_xh, layer.W_hh, layer.b_h)
    )
    W_hq, b_q = (
        model.W_hq.detach().clone().requires_grad_(),
        model.b_q.detach().clone().requires_grad_(),
    )
    state, outs = torch.zeros(B, H, dtype=torch.float64), []
    for X_t in F.one_hot(X, V).double():
        state = torch.tanh(X_t @ W_xh + state @ W_hh + b_h)
        outs.append(state @ W_hq + b_q)
    torch.testing.assert_close(torch.stack(outs), logits.detach(), rtol=0, atol=1e-12)
    F.cross_entropy(torch.cat(outs), Y.reshape(-1)).backward()
    for ours, ref in ((layer.W_xh, W_xh), (layer.W_hh, W_hh), (layer.b_h, b_h), (model.W_hq, W_hq)):
        torch.testing.assert_close(ours.grad, ref.grad, rtol=0, atol=1e-12)


def test_training_steps_do_not_sync_with_the_host(tiny_config, monkeypatch):
    """The loop reads the loss on the host only every --log-every steps (and at the end)."""
    cfg = tiny(tiny_config, max_steps=12, log_every=5, epochs=100, val_fraction=0.0)
    trainer = Trainer(cfg, progress_bar=False)
    reads = []
    original = LossMeter.check
    monkeypatch.setattr(
        LossMeter, "check", lambda self: (reads.append(self.p.step), original(self))
    )
    step_results = []
    original_step = Learner.step

    def spy(self, X, Y):
        out = original_step(self, X, Y)
        step_results.append(out)
        return out

    monkeypatch.setattr(Learner, "step", spy)
    trainer.run()
    assert sorted(set(reads)) == [5, 10, 12]  # two log points, then the end of the run
    assert all(isinstance(t, torch.Tensor) for pair in step_results for t in pair)


@pytest.mark.parametrize("model", ["rnn", "lstm"])
def test_amp_on_cpu_trains_like_float32(tiny_config, tmp_path, model):
    rows = [
        Trainer(
            tiny(tiny_config, amp=amp, epochs=2, model=model, out=str(tmp_path / str(amp))),
            progress_bar=False,
        )
        .run()
        .last_row
        for amp in (False, True)
    ]
    assert rows[1]["train_loss"] == pytest.approx(rows[0]["train_loss"], rel=0.03)
    assert rows[1]["val_loss"] == pytest.approx(rows[0]["val_loss"], rel=0.03)


@pytest.mark.parametrize(("kind", "emb"), [("rnn", 0), ("rnn", 16), ("lstm", 16), ("gru", 0)])
def test_amp_runs_the_big_matmuls_in_bfloat16_and_the_rnn_recurrence_in_float32(kind, emb):
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=20, model=kind, hidden_size=32, embedding_dim=emb, init="pytorch", dropout=0.0
    )
    model = CharLM(cfg)
    X = torch.randint(0, 20, (12, 4))
    ref, _ = model(X)
    with torch.autocast("cpu", torch.bfloat16):
        out, state = model(X)
    assert out.dtype == torch.bfloat16  # the output layer
    if kind == "rnn":  # per-step matmuls stay exact: H_t is float32
        assert state.dtype == torch.float32
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)


@pytest.mark.slow
def test_compile_on_cpu_trains_or_fails_clearly(tiny_config):
    cfg = tiny(tiny_config, compile=True, epochs=1, model="gru")
    result = Trainer(cfg, progress_bar=False).run()
    assert math.isfinite(result.last_row["train_loss"])


def test_cosine_schedule_decays_to_a_twentieth(tiny_config):
    cfg = tiny(tiny_config, lr_schedule="cosine", warmup_steps=0)
    f = lr_factor(optim_settings(cfg), 100)
    assert f(0) == pytest.approx(1.0)
    assert f(50) == pytest.approx(0.525)
    assert f(100) == pytest.approx(0.05)
    assert f(1000) == pytest.approx(0.05)


@cuda
def test_auto_device_picks_cuda(tiny_config):
    trainer = Trainer(tiny(tiny_config, device="auto"), progress_bar=False)
    assert trainer.device.type == "cuda"


@cuda
@pytest.mark.parametrize("amp", [False, True])
def test_cuda_training_steps_never_synchronize(tiny_config, amp):
    """CUDA's sync debug mode raises on any synchronizing call made between log points."""
    cfg = tiny(tiny_config, device="cuda", amp=amp, log_every=1000, max_steps=6, epochs=100)
    trainer = Trainer(cfg, progress_bar=False)
    batches = trainer.sampler.batches(0)
    X, Y = next(batches)
    trainer.learner.step(X.to("cuda"), Y.to("cuda"))  # warm-up (allocations, cuBLAS handles)
    torch.cuda.synchronize()
    X, Y = (t.pin_memory() for t in next(batches))
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss, _ = trainer.learner.step(
            X.to("cuda", non_blocking=True), Y.to("cuda", non_blocking=True)
        )
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert math.isfinite(float(loss))
