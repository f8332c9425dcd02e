"""Generation: warm the state on the prefix once, then sample one character at a time.

A step of nn.LSTM / nn.GRU at batch 1 and sequence length 1 spends most of its time in the
sequence kernel's set-up, not in arithmetic. So sampling does not call the model: `Stepper` runs
the same equations on the model's own parameters, on preallocated buffers, with one matmul per
layer and step: the new state of a layer is multiplied at once by its own recurrent weights (for
the next step) and by the next layer's input weights, or the output layer (for this step).

The next character is drawn with the Gumbel-max trick, argmax(logits + g) with g = -log(-log U)
pre-drawn from a seeded generator for 64 steps at a time: one add and one argmax per step, and
the same seed gives the same text. Several samples are one batch of N rows, whose matmuls can
run in bfloat16 (`amp`) or int8 (`int8`).
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F

from charlm.data import Vocab
from charlm.errors import CharLMError
from charlm.model import CharLM, State

NOISE_STEPS = 64  # Gumbel noise drawn per refill; fixed, so a longer sample extends a shorter one


def check_sampling(
    length: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    num_samples: int,
    amp: bool = False,
    int8: bool = False,
) -> None:
    """Reject settings that cannot sample, with the flag's name."""
    if amp and int8:
        raise CharLMError("--amp and --int8 are two precisions for the same matmuls: choose one")
    if length < 0:
        raise CharLMError(f"--length must be >= 0, got {length}")
    if not temperature > 0:
        raise CharLMError(f"--temperature must be > 0, got {temperature} (use --greedy for 0)")
    if top_k is not None and top_k <= 0:
        raise CharLMError(f"--top-k must be > 0, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise CharLMError(f"--top-p must be in (0, 1], got {top_p}")
    if num_samples <= 0:
        raise CharLMError(f"--num-samples must be > 0, got {num_samples}")


def next_char_probs(
    logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None
) -> torch.Tensor:
    """(N, V) logits -> (N, V) sampling distribution after temperature, top-k and top-p."""
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p is not None and top_p < 1:
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        # drop a character when the mass before it already reaches top_p (the first always stays)
        drop = (torch.cumsum(sorted_p, dim=-1) - sorted_p) >= top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


class Affine(NamedTuple):
    """out = bias + x W, as `Stepper._affine` computes it.

    One addmm when out_m is None. Otherwise the matmul writes out_m (bfloat16; int8: int32 sums,
    times `scale`), which is copied into out; then bias is added only to out_b, the columns of
    out where it is not zero (an LSTM's: the logits), a copy-and-add saved on the rest.
    """

    bias: torch.Tensor | None
    x: torch.Tensor
    W: torch.Tensor
    out: torch.Tensor
    out_m: torch.Tensor | None = None
    out_b: torch.Tensor | None = None
    scale: torch.Tensor | None = None


def _lstm_gates(w: torch.Tensor, H: int) -> torch.Tensor:
    """nn.LSTM's gate blocks (i, f, g, o) along dim 0 -> (i, f, o, 2g): one sigmoid for all four.

    tanh(g) = 2 sigmoid(2g) - 1, and doubling is exact in floating point.
    """
    return torch.cat([w[: 2 * H], w[3 * H :], 2 * w[2 * H : 3 * H]])


def _cell_weights(model: CharLM, i: int) -> tuple[torch.Tensor, ...]:
    """Layer i as (W_x, W_h, b, r): pre-activations = (x W_x + b) + (h W_h + r), gates as columns.

    The input-side bias b carries every bias but GRU's b_hn, which stays inside r * (h W_hn + b_hn).
    """
    H = model.cfg.hidden_size
    if model.cfg.model == "rnn":
        cell = model.rnn.layers[i]
        return cell.W_xh, cell.W_hh, cell.b_h, torch.zeros_like(cell.b_h)
    W_x, W_h = getattr(model.rnn, f"weight_ih_l{i}"), getattr(model.rnn, f"weight_hh_l{i}")
    b_x, b_h = getattr(model.rnn, f"bias_ih_l{i}"), getattr(model.rnn, f"bias_hh_l{i}")
    if model.cfg.model == "lstm":
        W_x, W_h, b = (_lstm_gates(w, H) for w in (W_x, W_h, b_x + b_h))
        return W_x.t(), W_h.t(), b, torch.zeros_like(b)
    b_hr, b_hz, b_hn = b_h.split(H)  # GRU: r and z take both biases, n keeps b_hn apart
    zero = torch.zeros_like(b_hn)
    return W_x.t(), W_h.t(), b_x + torch.cat([b_hr, b_hz, zero]), torch.cat([zero, zero, b_hn])


WIDE = 16  # from this many streams on (CPU; not int8), buffers keep the streams as fastest axis
H_SCALE = torch.tensor(127.0)  # int8: a state h in [-1, 1] is multiplied by this and rounded
MINUS_ONE = -torch.ones(())  # 0-dim: a Python number would cost a conversion per op


def _tanh(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """tanh(x) = 2 sigmoid(2x) - 1: on CPU torch's sigmoid is several times faster than its tanh.

    Doubling is exact, so -1 + 2s (one op) rounds exactly as (s + s) - 1 (two).
    """
    s = torch.add(x, x, out=out).sigmoid_()
    return torch.add(MINUS_ONE, s, alpha=2, out=s)


class Stepper:
    """N streams of a CharLM advanced one character per `step`, on the model's own weights.

    One matmul per layer and step: the new state h_l is multiplied once by [W_h | W_next], which
    gives its own recurrent term R_l for the next step and, at once, the input term of the layer
    above (W_next = W_x of layer l+1) or the logits (W_next = W_hq):

        A_0 = Table[x]                 Table = E W_x + b: (V, G), a row per character
        h_l = cell(A_l + R_l)          R_l = h_l W_h + r, from the step before
        [R_l | A_{l+1}] = h_l [W_h | W_next] + [r | b_next]        the last layer: A_L = logits

    Equal to `CharLM.forward` in eval mode (no dropout) up to float rounding; built once per
    generation call, so a trained model is never modified. Every view a step needs is made here:
    a step is only arithmetic (at batch 1, making a view costs about as much as a small op).

    Tuned for CPU, where these choices measured fastest:
    - one stream: each matmul's columns are split into one block per thread and done as one
      batched matmul (a lone matrix-vector product runs on one thread);
    - WIDE or more streams: every (N, width) buffer is stored transposed, (width, N), so the
      matmuls compute W^T h^T with the weights as the long left operand, and tanh is taken
      through sigmoid;
    - `amp` and several streams: the matmuls run in bfloat16 (several times faster on GPUs and
      on CPUs with AVX512-BF16 or AMX); their results get the biases added in the model's
      precision, in which the states, the cell update and the sampling stay.
    - `int8` and several streams (CPU): the same with int8 matmuls (~1.7x as fast as bfloat16
      on a CPU with AVX512-VNNI): each column of a weight matrix is scaled to [-127, 127] and
      rounded; the matmuls' inputs are hidden states, which lie in [-1, 1] (tanh, o tanh(c), or
      a mix of such), so a state is quantized as round(127 h) without measuring its range. The
      buffers stay row-major: the int8 matmul runs as fast either way, the lookup does not.
    """

    @torch.inference_mode()
    def __init__(
        self,
        model: CharLM,
        num_samples: int,
        temperature: float = 1.0,
        amp: bool = False,
        int8: bool = False,
    ) -> None:
        cfg = model.cfg
        kind, H, L, N = cfg.model, cfg.hidden_size, cfg.num_layers, num_samples
        self.kind = kind
        p = model.W_hq
        cpu = p.device.type == "cpu"
        int8 = self.int8 = int8 and N > 1
        # the matmuls' dtype: one stream is a matrix-vector product, which gains nothing from it
        mm = torch.int8 if int8 else torch.bfloat16 if amp and N > 1 else p.dtype
        G = {"rnn": H, "lstm": 4 * H, "gru": 3 * H}[kind]
        P = torch.get_num_threads() if N == 1 and cpu else 1  # column blocks
        wide = cpu and N >= WIDE and not int8
        self.tanh = _tanh if cpu and N >= WIDE else torch.tanh
        self.addmm = torch.baddbmm if P > 1 else torch.addmm

        def new(*shape: int, dtype: torch.dtype = p.dtype) -> torch.Tensor:
            """Zeros of `shape`; when wide, stored with the last two axes swapped."""
            if not wide:
                return torch.zeros(*shape, dtype=dtype, device=p.device)
            swapped = (*shape[:-2], shape[-1], shape[-2])
            return torch.zeros(swapped, dtype=dtype, device=p.device).transpose(-1, -2)

        def affine(bias: torch.Tensor, x: torch.Tensor, W: torch.Tensor) -> Affine:
            """out = bias + x W into a new buffer (one stream: (P, 1, K) @ (P, K, w/P) blocks)."""
            K, width = W.shape
            pad = -width % (8 * P)  # zero columns: equal blocks; bfloat16 runs 15% faster
            W, bias, scale = F.pad(W, (0, pad)), F.pad(bias, (0, pad)), None
            if int8:  # W = scale * W_q, a scale per column
                scale = W.abs().amax(0) / 127
                scale[scale == 0] = 1  # the zero columns of the pad
                W = (W / scale).round()
                scale /= H_SCALE
            W = W.to(mm)
            out = new(N, width + pad)
            if P > 1:
                blocks = W.reshape(K, P, -1).transpose(0, 1).contiguous()
                return Affine(
                    bias.view(P, 1, -1), x[None].expand(P, N, K), blocks, out.view(P, N, -1)
                )
            W = W.t().contiguous().t() if wide else W.contiguous()  # the layout that runs fastest
            if mm == p.dtype:
                return Affine(bias, x, W, out)
            out_m = new(*out.shape, dtype=torch.int32 if int8 else mm)
            nonzero = bias.nonzero()
            if len(nonzero) == 0:
                return Affine(None, x, W, out, out_m, scale=scale)
            cols = slice(int(nonzero[0]), int(nonzero[-1]) + 1)
            return Affine(bias[cols], x, W, out, out_m, out[:, cols], scale)

        weights = [_cell_weights(model, i) for i in range(L)]
        W_x, _, b, _ = weights[0]
        emb = model.embedding.weight if model.embedding is not None else None
        table = (emb @ W_x if emb is not None else W_x) + b  # x is the embedding, or one-hot
        self.h, self.c, self.tmp = new(L, N, H), new(L, N, H), new(N, H)
        self.h_m = self.h if mm == p.dtype else new(L, N, H, dtype=mm)  # the matmuls' input
        A = new(N, G)  # A_0
        # A_0 = Table[x]; when wide, gathered as columns of the (G, V) transpose
        self.table = table.t().contiguous() if wide else table.contiguous()
        self.lookup = (self.table, 1, A.t()) if wide else (self.table, 0, A)
        self.layers: list[tuple] = []  # A, R, h, h_m (None: h itself), c, parts, matmul
        for i, (_, W_h, _, r) in enumerate(weights):
            if i + 1 < L:
                W_next, b_next = weights[i + 1][0], weights[i + 1][2]
            else:
                W_next, b_next = model.W_hq / temperature, model.b_q / temperature
            gemm = affine(torch.cat([r, b_next]), self.h_m[i], torch.cat([W_h, W_next], dim=1))
            out = gemm.out.view(N, -1)
            R, A_next = out[:, :G], out[:, G : G + W_next.shape[1]]
            if kind == "lstm":  # i, f, o, s = sigmoid(2g)
                parts = A.split(H, dim=1)
            elif kind == "gru":  # A_rz, R_rz, r, z, A_n, R_n
                rz = A[:, : 2 * H]
                parts = (rz, R[:, : 2 * H], rz[:, :H], rz[:, H:], A[:, 2 * H :], R[:, 2 * H :])
            else:
                parts = ()
            h_m = None if self.h_m is self.h else self.h_m[i]
            self.layers.append((A, R, self.h[i], h_m, self.c[i], parts, gemm))
            A = A_next
        self.logits = A  # (N, V) logits / temperature
        self._project()

    def _affine(self, gemm: Affine) -> None:
        bias, x, W, out, out_m, out_b, scale = gemm
        if out_m is None:
            self.addmm(bias, x, W, out=out)
            return
        # a bfloat16 or int8 matmul; the bias added in full precision, where there is one
        if scale is None:
            out.copy_(torch.mm(x, W, out=out_m))
        else:
            torch.mul(torch._int_mm(x, W, out=out_m), scale, out=out)
        if out_b is not None:
            out_b.add_(bias)

    def _quantize(self, h: torch.Tensor, h_m: torch.Tensor, tmp: torch.Tensor) -> None:
        """h_m = h in the matmuls' dtype: bfloat16, or int8 as round(127 h) (tmp: scratch)."""
        if self.int8:
            h_m.copy_(torch.mul(h, H_SCALE, out=tmp).round_())
        else:
            h_m.copy_(h)

    def _project(self) -> None:
        """Every layer's matmul on the current states: R_l for the next step, and the logits."""
        for *_, gemm in self.layers:
            self._affine(gemm)

    @torch.inference_mode()
    def load_state(self, state: State) -> None:
        """Start from a state of `CharLM.forward` (batch 1 or N; batch 1 is copied to every row)."""
        self.h.copy_(state[0] if isinstance(state, tuple) else state)  # (L, B, H)
        if self.kind == "lstm":
            self.c.copy_(state[1])
        if self.h_m is not self.h:
            self._quantize(self.h, self.h_m, self.h.clone())
        self._project()

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N,) ids -> (N, V) logits / temperature of the next character (an internal buffer).

        Call it under `torch.inference_mode()` (the buffers are inference tensors): entering the
        mode once per call would cost ~1.5 µs, several percent of a one-stream step.
        """
        tmp, tanh = self.tmp, self.tanh
        table, axis, A_0 = self.lookup
        torch.index_select(table, axis, x, out=A_0)
        for A, R, h, h_m, c, parts, gemm in self.layers:
            if self.kind == "rnn":
                tanh(A.add_(R), out=h)
            elif self.kind == "lstm":
                i_, f, o, s = parts
                A.add_(R).sigmoid_()  # s = sigmoid(2g): tanh(g) = 2s - 1
                c.mul_(f).addcmul_(i_, s, value=2).sub_(i_)  # c = f c + i tanh(g)
                torch.mul(o, tanh(c, out=tmp), out=h)  # h = o tanh(c)
            else:
                rz, R_rz, r, z, A_n, R_n = parts
                rz.add_(R_rz).sigmoid_()
                n = tanh(torch.addcmul(A_n, r, R_n, out=tmp), out=tmp)  # n = tanh(A_n + r R_n)
                h.sub_(n).mul_(z).add_(n)  # h' = (1 - z) n + z h = n + z (h - n)
            if h_m is not None:
                self._quantize(h, h_m, tmp)
            self._affine(gemm)
        return self.logits


def _sample_ids(
    model: CharLM,
    vocab: Vocab,
    prefix: str,
    length: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    greedy: bool,
    num_samples: int,
    seed: int | None,
    amp: bool,
    int8: bool,
) -> Iterator[torch.Tensor]:
    """Yield the (N,) ids of the next character of every sample, `length` times.

    Run it under `torch.inference_mode()`: `generate` enters the mode once for all steps.
    """
    check_sampling(length, temperature, top_k, top_p, num_samples, amp, int8)
    device = model.W_hq.device
    if int8 and device.type != "cpu":
        raise CharLMError(f"--int8 runs on CPU, not {device.type}: use --amp there")
    if not prefix:
        prefix = "\n" if "\n" in vocab.chars else vocab.chars[0]  # a neutral start, not shown
    ids = torch.from_numpy(vocab.encode(prefix)).to(device)
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    stepper = Stepper(model, num_samples, 1.0 if greedy else temperature, amp, int8)
    if len(ids) > 1:  # warm the state on all but the last prefix character, once, batch 1
        was_training = model.training
        model.eval()
        try:
            stepper.load_state(model(ids[:-1, None], None)[1])
        finally:
            model.train(was_training)
    V = len(vocab)
    k = top_k if top_k is not None and top_k < V else None
    nucleus = top_p is not None and top_p < 1
    out = torch.empty(length, num_samples, dtype=torch.long, device=device)
    x = ids[-1:].expand(num_samples)
    noise = torch.empty(NOISE_STEPS, num_samples, V, dtype=stepper.logits.dtype, device=device)
    noise_rows = noise.unbind(0)
    scores = torch.empty_like(noise[0])  # logits + noise, contiguous whatever the logits' layout
    for t, nxt in enumerate(out.unbind(0)):
        logits = stepper.step(x)
        if greedy:
            torch.argmax(logits, dim=-1, out=nxt)
        else:
            if t % NOISE_STEPS == 0:  # Gumbel(0, 1) = -log(-log U), U uniform on [0, 1)
                noise.uniform_(generator=generator).log_().neg_().log_().neg_()
            g = noise_rows[t % NOISE_STEPS]
            if nucleus:
                probs = next_char_probs(logits, 1.0, k, top_p)
                torch.argmax(probs.log_().add_(g), dim=-1, out=nxt)
            elif k is not None:
                best, which = torch.topk(logits, k, dim=-1)  # (N, k)
                pick = best.add_(g[:, :k]).argmax(dim=-1, keepdim=True)
                torch.gather(which, 1, pick, out=nxt[:, None])
            else:
                torch.argmax(torch.add(logits, g, out=scores), dim=-1, out=nxt)
        x = nxt
        yield nxt


@torch.inference_mode()  # on a generator: entered around each step, left at each yield
def stream(
    model: CharLM,
    vocab: Vocab,
    prefix: str,
    length: int = 200,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    num_samples: int = 1,
    seed: int | None = None,
    amp: bool = False,
    int8: bool = False,
) -> Iterator[list[str]]:
    """Yield the next character of every sample, `length` times (the prefix is not yielded).

    A byte-level model yields what its bytes decode to so far ('' inside a UTF-8 character).
    """
    chars = vocab.chars
    utf8 = [codecs.getincrementaldecoder("utf-8")("replace") for _ in range(num_samples)]
    for nxt in _sample_ids(
        model, vocab, prefix, length, temperature, top_k, top_p, greedy, num_samples, seed, amp,
        int8,
    ):  # fmt: skip
        if vocab.is_bytes:
            yield [d.decode(bytes([i])) for d, i in zip(utf8, nxt.tolist(), strict=True)]
        else:
            yield [chars[i] for i in nxt.tolist()]


def generate(
    model: CharLM,
    vocab: Vocab,
    prefix: str,
    length: int = 200,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    num_samples: int = 1,
    seed: int | None = None,
    amp: bool = False,
    int8: bool = False,
) -> list[str]:
    """`num_samples` texts, each the prefix followed by `length` sampled characters.

    Same text as `stream` with the same arguments; the ids stay on the device until the end.
    """
    with torch.inference_mode():
        steps = list(
            _sample_ids(
                model, vocab, prefix, length, temperature, top_k, top_p, greedy, num_samples,
                seed, amp, int8,
            )
        )  # fmt: skip
    if not steps:
        return [prefix] * num_samples
    ids = torch.stack(steps, dim=1).cpu().numpy()  # (N, length)
    return [prefix + vocab.decode(row) for row in ids]
