"""Generation: warm the state on the prefix once, then sample one character at a time.

A step of nn.LSTM / nn.GRU at batch 1 and sequence length 1 spends most of its time in the
sequence kernel's set-up, not in arithmetic. So sampling does not call the model: `Stepper` runs
the same equations on the model's own parameters, one matmul per layer on preallocated buffers:

    layer 0:   gates = Table[x] + h_0 W_h          Table = E W_x + b  (V, G), one row per character
    layer l:   gates = [h_{l-1}, h_l] W_cat + b     both halves read in place from one buffer Z
    output:    logits = (h_{L-1} W_hq + b_q) / temperature

    Z (N, L*H):  | h_0 | h_1 | ... | h_{L-1} |     layer l reads Z[:, (l-1)H:(l+1)H], writes h_l

The next character is drawn with the Gumbel-max trick, argmax(logits + g) with g = -log(-log U)
pre-drawn from a seeded generator for 64 steps at a time: one add and one argmax per step, and
the same seed gives the same text. Several samples are one batch of N rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from charlm.data import Vocab
from charlm.errors import CharLMError
from charlm.model import CharLM, State

NOISE_STEPS = 64  # Gumbel noise drawn per refill; fixed, so a longer sample extends a shorter one


def check_sampling(
    length: int, temperature: float, top_k: int | None, top_p: float | None, num_samples: int
) -> None:
    """Reject settings that cannot sample, with the flag's name."""
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


def _lstm_order(w: torch.Tensor, H: int) -> torch.Tensor:
    """nn.LSTM's gate blocks (i, f, g, o) along dim 0 -> (i, f, o, g): one sigmoid, one tanh."""
    return torch.cat([w[: 2 * H], w[3 * H :], w[2 * H : 3 * H]])


Affine = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # bias, x, W, out


class Stepper:
    """N streams of a CharLM advanced one character per `step`, on the model's own weights.

    Equal to `CharLM.forward` in eval mode (no dropout) up to float rounding; built once per
    generation call, so a trained model is never modified. Every view a step needs is made here:
    a step is only arithmetic (at batch 1, making a view costs about as much as a small op).

    With one stream, each matmul's columns are split into one block per thread and done as one
    batched matmul: a lone matrix-vector product runs on one thread. With `amp` and several
    streams, the matmuls of the recurrent layers run in bfloat16 (several times faster on GPUs
    and on CPUs with AVX512-BF16 or AMX); the states, the cell update and the output layer stay
    in the model's precision.
    """

    @torch.inference_mode()
    def __init__(
        self, model: CharLM, num_samples: int, temperature: float = 1.0, amp: bool = False
    ) -> None:
        cfg = model.cfg
        kind, H, L, N = cfg.model, cfg.hidden_size, cfg.num_layers, num_samples
        self.kind, self.L = kind, L
        p = model.W_hq
        mm = torch.bfloat16 if amp and N > 1 else p.dtype  # the recurrent matmuls' dtype
        G = {"rnn": H, "lstm": 4 * H, "gru": 3 * H}[kind]
        P = torch.get_num_threads() if N == 1 and p.device.type == "cpu" else 1
        P = P if G % P == 0 else 1  # column blocks

        def new(*shape: int, dtype: torch.dtype = p.dtype) -> torch.Tensor:
            return torch.zeros(*shape, dtype=dtype, device=p.device)

        def twin(t: torch.Tensor) -> torch.Tensor:
            """t itself, or a buffer of dtype `mm` that the matmuls read or write instead."""
            return t if mm == p.dtype else new(*t.shape, dtype=mm)

        self.Z = new(N, L * H)  # h_0 .. h_{L-1}, side by side
        self.c = new(L, N, H)  # LSTM cell states
        self.gx, self.gates, self.tmp = new(N, G), new(N, G), new(N, H)
        Zm, gx_m, gates_m = twin(self.Z), twin(self.gx), twin(self.gates)
        self.Zm, self.gx_m = Zm, gx_m

        def affine(bias: torch.Tensor, x: torch.Tensor, W: torch.Tensor, out: torch.Tensor):
            """out = bias + x W as P column blocks: (P, N, K) @ (P, K, G/P) into views of out."""
            K, width = W.shape[0], W.shape[1] // P
            blocks = W.reshape(K, P, width).transpose(0, 1).to(mm).contiguous()
            return (bias.to(mm).view(P, -1, width), x[None].expand(P, N, K), blocks,
                    out.view(P, N, width))  # fmt: skip

        def h(i: int, Z: torch.Tensor) -> torch.Tensor:
            return Z[:, i * H : (i + 1) * H]

        emb = model.embedding.weight if model.embedding is not None else None
        zeros = torch.zeros(H, dtype=p.dtype, device=p.device)
        self.table: torch.Tensor  # (V, G): x W_x + b of layer 0, one row per character
        self.layers: list[tuple[list[Affine], list[tuple[torch.Tensor, ...]], torch.Tensor | None]]
        self.layers = []
        for i in range(L):
            if kind == "rnn":
                cell = model.rnn.layers[i]
                W_x, W_h, b = cell.W_xh, cell.W_hh, cell.b_h  # (d, H), (H, H), (H,)
            else:  # nn.LSTM / nn.GRU keep (G, d) weights and two biases
                W_x = getattr(model.rnn, f"weight_ih_l{i}").t()
                W_h = getattr(model.rnn, f"weight_hh_l{i}").t()
                b_x = getattr(model.rnn, f"bias_ih_l{i}")
                b_h = getattr(model.rnn, f"bias_hh_l{i}")
            if kind == "lstm":
                W_x, W_h = _lstm_order(W_x.t(), H).t(), _lstm_order(W_h.t(), H).t()
                b = _lstm_order(b_x + b_h, H)
            if kind == "gru":
                # r, z: both biases fold into the input part; n: b_hn stays inside r * (...)
                b = b_x + torch.cat([b_h[: 2 * H], zeros])
                b_hn = torch.cat([zeros, zeros, b_h[2 * H :]])
            if i == 0:  # x is the embedding, or one-hot (a row of W_x)
                self.table = ((emb @ W_x if emb is not None else W_x) + b).to(mm).contiguous()
            if kind == "gru":  # gx = b + x W_x (layer 0: a row of the table), gh = b_hn + h W_h
                affines = [affine(b_hn, h(i, Zm), W_h, gates_m)]
                if i > 0:
                    affines.append(affine(b, h(i - 1, Zm), W_x, gx_m))
                casts = [(gx_m, self.gx), (gates_m, self.gates)]
            else:  # gates = Table[x] + h W_h, or b + [h_{i-1}, h_i] W_cat (read in place from Z)
                x = h(i, Zm) if i == 0 else Zm[:, (i - 1) * H : (i + 1) * H]
                W = W_h if i == 0 else torch.cat([W_x, W_h])
                affines = [affine(gx_m if i == 0 else b, x, W, gates_m)]
                casts = [(gates_m, self.gates)]
            if mm == p.dtype:
                self.layers.append((affines, [], None))
            else:  # matmul results -> float buffers; then the new h_i -> Zm for the next matmuls
                self.layers.append((affines, casts, h(i, Zm)))
        self.h_views, self.c_views = [h(i, self.Z) for i in range(L)], list(self.c)
        gx, gates = self.gx, self.gates
        if kind == "lstm":  # sigmoid(i, f, o), tanh(g), i, f, o, g
            self.parts = (gates[:, : 3 * H], gates[:, 3 * H :], *gates.split(H, dim=1))
        elif kind == "gru":  # gx_rz (+ gh_rz), gh_rz, r, z, gx_n, gh_n
            rz = gx[:, : 2 * H]
            self.parts = (rz, gates[:, : 2 * H], rz[:, :H], rz[:, H:], gx[:, 2 * H :],
                          gates[:, 2 * H :])  # fmt: skip
        self.W_hq = (model.W_hq / temperature).contiguous()  # (H, V)
        self.b_q = model.b_q / temperature
        self.logits = new(N, self.W_hq.shape[1])

    @torch.inference_mode()
    def load_state(self, state: State) -> None:
        """Start from a state of `CharLM.forward` (batch 1 or N; batch 1 is copied to every row)."""
        h = state[0] if isinstance(state, tuple) else state  # (L, B, H)
        for i in range(self.L):
            self.h_views[i].copy_(h[i])
        if self.kind == "lstm":
            self.c.copy_(state[1])
        if self.Zm is not self.Z:
            self.Zm.copy_(self.Z)

    @torch.inference_mode()
    def step(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N,) ids -> (N, V) logits / temperature of the next character (an internal buffer)."""
        tmp = self.tmp
        torch.index_select(self.table, 0, x, out=self.gx_m)
        for i, (affines, casts, h_m) in enumerate(self.layers):
            for bias, inp, W, out in affines:
                torch.baddbmm(bias, inp, W, out=out)
            for src, dst in casts:
                dst.copy_(src)
            h = self.h_views[i]
            if self.kind == "rnn":
                torch.tanh(self.gates, out=h)
            elif self.kind == "lstm":
                sig, tanh, i_, f, o, g = self.parts
                sig.sigmoid_()
                tanh.tanh_()
                c = self.c_views[i]
                c.mul_(f).addcmul_(i_, g)  # c = f c + i g
                torch.mul(o, torch.tanh(c, out=tmp), out=h)  # h = o tanh(c)
            else:
                rz, gh_rz, r, z, gx_n, gh_n = self.parts
                rz.add_(gh_rz).sigmoid_()
                n = torch.addcmul(gx_n, r, gh_n, out=tmp).tanh_()  # n = tanh(gx_n + r gh_n)
                h.sub_(n).mul_(z).add_(n)  # h' = (1 - z) n + z h = n + z (h - n)
            if h_m is not None:
                h_m.copy_(h)
        return torch.addmm(self.b_q, self.h_views[-1], self.W_hq, out=self.logits)


@torch.inference_mode()
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
) -> Iterator[torch.Tensor]:
    """Yield the (N,) ids of the next character of every sample, `length` times."""
    check_sampling(length, temperature, top_k, top_p, num_samples)
    if not prefix:
        prefix = "\n" if "\n" in vocab.chars else vocab.chars[0]  # a neutral start, not shown
    device = model.W_hq.device
    ids = torch.from_numpy(vocab.encode(prefix)).to(device)
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    stepper = Stepper(model, num_samples, 1.0 if greedy else temperature, amp)
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
    for t in range(length):
        logits = stepper.step(x)
        nxt = out[t]
        if greedy:
            torch.argmax(logits, dim=-1, out=nxt)
        else:
            if t % NOISE_STEPS == 0:  # Gumbel(0, 1) = -log(-log U), U uniform on [0, 1)
                noise.uniform_(generator=generator).log_().neg_().log_().neg_()
            g = noise[t % NOISE_STEPS]
            if nucleus:
                probs = next_char_probs(logits, 1.0, k, top_p)
                torch.argmax(probs.log_().add_(g), dim=-1, out=nxt)
            elif k is not None:
                best, which = torch.topk(logits, k, dim=-1)  # (N, k)
                pick = best.add_(g[:, :k]).argmax(dim=-1, keepdim=True)
                torch.gather(which, 1, pick, out=nxt[:, None])
            else:
                torch.argmax(logits.add_(g), dim=-1, out=nxt)
        x = nxt
        yield nxt


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
) -> Iterator[list[str]]:
    """Yield the next character of every sample, `length` times (the prefix is not yielded)."""
    chars = vocab.chars
    for nxt in _sample_ids(
        model, vocab, prefix, length, temperature, top_k, top_p, greedy, num_samples, seed, amp
    ):
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
) -> list[str]:
    """`num_samples` texts, each the prefix followed by `length` sampled characters.

    Same text as `stream` with the same arguments; the ids stay on the device until the end.
    """
    steps = list(
        _sample_ids(
            model, vocab, prefix, length, temperature, top_k, top_p, greedy, num_samples, seed, amp
        )
    )
    if not steps:
        return [prefix] * num_samples
    ids = torch.stack(steps, dim=1).cpu().numpy()  # (N, length)
    return [prefix + vocab.decode(row) for row in ids]
