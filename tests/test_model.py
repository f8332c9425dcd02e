"""The hand-written RNN against PyTorch's own, in float64; the CharLM wrapper."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from charlm.cells import Dropout, TanhRecurrence, TanhRNN
from charlm.model import CharLM, ModelConfig


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def test_tanh_recurrence_gradcheck():
    torch.manual_seed(0)
    A = torch.randn(6, 3, 5, requires_grad=True)
    W_hh = (0.5 * torch.randn(5, 5)).requires_grad_()
    H0 = torch.randn(3, 5, requires_grad=True)
    assert torch.autograd.gradcheck(TanhRecurrence.apply, (A, W_hh, H0))


def copy_into_nn_rnn(scratch: TanhRNN, ref: nn.RNN) -> None:
    """nn.RNN computes x W_ih^T + b_ih + h W_hh^T + b_hh: transpose, and split b_h in two."""
    with torch.no_grad():
        for i, layer in enumerate(scratch.layers):
            getattr(ref, f"weight_ih_l{i}").copy_(layer.W_xh.t())
            getattr(ref, f"weight_hh_l{i}").copy_(layer.W_hh.t())
            getattr(ref, f"bias_ih_l{i}").copy_(layer.b_h)
            getattr(ref, f"bias_hh_l{i}").zero_()


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("one_hot", [False, True])
def test_scratch_rnn_matches_nn_rnn_outputs_and_gradients(num_layers, one_hot):
    torch.manual_seed(1)
    T, B, d, H = 7, 4, 6, 5
    scratch = TanhRNN(d, H, num_layers, dropout=0.0, one_hot=one_hot)
    with torch.no_grad():
        for p in scratch.parameters():
            p.normal_(0, 0.4)
    ref = nn.RNN(d, H, num_layers, nonlinearity="tanh")
    copy_into_nn_rnn(scratch, ref)
    ids = torch.randint(0, d, (T, B))
    X = F.one_hot(ids, d).double() if one_hot else torch.randn(T, B, d)
    H0 = torch.randn(num_layers, B, H)
    out, HT = scratch(ids if one_hot else X, H0)
    out_ref, HT_ref = ref(X, H0)
    assert torch.allclose(out, out_ref, atol=1e-10, rtol=0)
    assert torch.allclose(HT, HT_ref, atol=1e-10, rtol=0)

    weights = torch.randn_like(out)  # a loss that touches every output differently
    (out * weights).sum().add(HT.sum()).backward()
    (out_ref * weights).sum().add(HT_ref.sum()).backward()
    for i, layer in enumerate(scratch.layers):
        pairs = [
            (layer.W_xh.grad, getattr(ref, f"weight_ih_l{i}").grad.t()),
            (layer.W_hh.grad, getattr(ref, f"weight_hh_l{i}").grad.t()),
            (layer.b_h.grad, getattr(ref, f"bias_ih_l{i}").grad),
        ]
        for mine, theirs in pairs:
            assert torch.allclose(mine, theirs, atol=1e-10, rtol=0)


def test_scratch_rnn_gradient_flows_into_initial_state():
    torch.manual_seed(2)
    scratch = TanhRNN(3, 4, 2, 0.0, one_hot=False)
    ref = nn.RNN(3, 4, 2)
    copy_into_nn_rnn(scratch, ref)
    X = torch.randn(5, 2, 3)
    H0 = torch.randn(2, 2, 4, requires_grad=True)
    H0_ref = H0.detach().clone().requires_grad_()
    scratch(X, H0)[0].sum().backward()
    ref(X, H0_ref)[0].sum().backward()
    assert torch.allclose(H0.grad, H0_ref.grad, atol=1e-10, rtol=0)


def test_textbook_init_is_small_normal_and_zero_bias():
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=50, model="rnn", hidden_size=256, embedding_dim=0))
    W_hh = model.rnn.layers[0].W_hh
    assert abs(W_hh.std().item() - 0.01) < 0.001
    assert torch.all(model.rnn.layers[0].b_h == 0) and torch.all(model.b_q == 0)
    other = CharLM(ModelConfig(vocab_size=50, model="rnn", hidden_size=256, init="pytorch"))
    assert other.rnn.layers[0].W_hh.abs().max() > 0.05


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru", "mingru", "minlstm"])
@pytest.mark.parametrize("emb", [0, 8])
def test_state_carrying_equals_one_long_forward(kind, emb):
    """Splitting a sequence in two and carrying the state gives the same logits."""
    torch.manual_seed(3)
    model = CharLM(
        ModelConfig(
            vocab_size=11, model=kind, hidden_size=9, num_layers=2, embedding_dim=emb, dropout=0.0
        )
    )
    X = torch.randint(0, 11, (10, 3))
    whole, _ = model(X)
    first, state = model(X[:4])
    second, _ = model(X[4:], state)
    assert torch.allclose(torch.cat([first, second]), whole, atol=1e-12)


def test_one_hot_rnn_builds_no_one_hot_matrix_and_matches_dense_input():
    """Row lookup of W_xh equals one-hot @ W_xh."""
    torch.manual_seed(4)
    model = CharLM(
        ModelConfig(
            vocab_size=7, model="rnn", hidden_size=5, embedding_dim=0, init="pytorch", dropout=0.0
        )
    )
    X = torch.randint(0, 7, (6, 2))
    logits, _ = model(X)
    layer = model.rnn.layers[0]
    H = torch.zeros(2, 5)
    for t in range(6):
        H = torch.tanh(F.one_hot(X[t], 7).double() @ layer.W_xh + H @ layer.W_hh + layer.b_h)
        assert torch.allclose(logits[t], H @ model.W_hq + model.b_q, atol=1e-12)


def test_the_model_config_takes_its_defaults_from_the_train_config() -> None:
    from dataclasses import fields

    from charlm.config import MODEL_FIELDS, TrainConfig
    from charlm.settle import settle

    assert sorted(f.name for f in fields(ModelConfig)) == sorted(["vocab_size", *MODEL_FIELDS])
    defaults, model = settle(TrainConfig()).cfg, ModelConfig(vocab_size=7)  # no budget
    assert all(getattr(model, k) == getattr(defaults, k) for k in MODEL_FIELDS)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_dropout_drops_the_last_layers_output_in_training_only(kind: str) -> None:
    """One layer: --dropout acts on H_t before the output layer, O = drop(H) W_hq + b_q, with
    the mask torch draws for it; never in eval mode, and never on the carried state."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=9, model=kind, hidden_size=12, embedding_dim=4, dropout=0.5)
    model = CharLM(cfg).double()
    X = torch.randint(0, 9, (7, 3))
    model.eval()
    plain, plain_state = model(X)
    with torch.no_grad():  # the last layer's outputs, from the cell itself
        H, _ = model.rnn(model.embedding(X), model.init_state(3))
    model.train()
    torch.manual_seed(1)
    dropped, state = model(X)
    torch.manual_seed(1)
    mask = (torch.rand(H.shape) >= 0.5) / 0.5  # the draw charlm.cells.Dropout makes
    assert torch.allclose(dropped, (H * mask) @ model.W_hq + model.b_q, atol=1e-8)
    assert not torch.allclose(dropped, plain)
    states = (state, plain_state) if kind != "lstm" else (state[0], plain_state[0])
    assert torch.equal(*states)  # the recurrence itself is untouched


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru", "mingru", "minlstm"])
def test_dropout_false_equals_eval_mode_without_switching_modes(kind: str) -> None:
    """`model(X, dropout=False)` in training mode is the eval-mode forward (no dropout between
    layers nor before the output layer), and the model stays in training mode: generation and
    validation during training never flip a shared model's mode."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=9, model=kind, hidden_size=12, num_layers=3, embedding_dim=4,
                      dropout=0.5)  # fmt: skip
    model = CharLM(cfg).double()
    X = torch.randint(0, 9, (7, 3))
    model.eval()
    plain, plain_state = model(X)
    model.train()
    quiet, state = model(X, dropout=False)
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(quiet, plain)
    flat = (lambda s: torch.cat([t.flatten() for t in s])) if kind == "lstm" else torch.ravel
    assert torch.equal(flat(state), flat(plain_state))
    assert not torch.allclose(model(X)[0], plain)  # and by default training mode drops
    quiet.sum().backward()  # and it trains: dynamic evaluation takes gradients through it
    assert model.W_hq.grad is not None


@pytest.mark.parametrize("p", [0.1, 0.25, 0.6])
def test_dropout_has_nn_dropouts_distribution_scale_and_gradient(p: float) -> None:
    """charlm's Dropout draws its mask differently from nn.Dropout (faster on a CPU) but must
    be the same operation: each element kept with probability 1 - p and scaled by 1 / (1 - p),
    the gradient masked and scaled alike, the identity in eval mode or at p = 0."""
    torch.manual_seed(0)
    n = 400_000
    X = torch.rand(n, dtype=torch.float64).add_(0.5).requires_grad_()
    ours, theirs = Dropout(p), nn.Dropout(p)
    Y, Z = ours(X), theirs(X)
    kept = Y != 0
    sd = (p * (1 - p) / n) ** 0.5  # of the kept fraction
    assert abs(kept.double().mean().item() - (1 - p)) < 5 * sd
    assert abs(kept.double().mean().item() - (Z != 0).double().mean().item()) < 8 * sd
    assert torch.allclose(Y[kept], X[kept] / (1 - p), rtol=1e-15, atol=0)
    G = torch.randn(n, dtype=torch.float64)
    (dX,) = torch.autograd.grad(Y, X, G)
    assert torch.allclose(dX, G * kept / (1 - p), rtol=1e-15, atol=0)
    assert not torch.equal(Dropout(p)(X), Y)  # a fresh mask per call
    ours.eval()
    assert ours(X) is X
    assert Dropout(0.0)(X) is X


def test_dropout_refuses_what_nn_dropout_refuses_and_drops_all_at_one() -> None:
    X = torch.randn(5, dtype=torch.float64)
    assert torch.equal(Dropout(1.0)(X), nn.Dropout(1.0)(X))
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError):
            nn.Dropout(p)
        with pytest.raises(ValueError):
            Dropout(p)
    with pytest.raises(ValueError):
        Dropout(float("nan"))  # nn.Dropout takes NaN here and fails only when called


def test_dropout_keeps_bfloat16_and_scales_in_full_precision() -> None:
    """Under --amp the output is bfloat16; x / (1 - p) is rounded once, not multiplied by a
    rounded 1 / (1 - p) (which is 0.2% off for p = 0.25)."""
    torch.manual_seed(0)
    X = torch.full((10_000,), 1.703125, dtype=torch.bfloat16)
    Y = Dropout(0.25)(X)
    assert Y.dtype == torch.bfloat16
    assert set(Y.unique().tolist()) == {0.0, (X[0].float() / 0.75).bfloat16().item()}
