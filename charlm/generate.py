"""Generation: warm the state on the prefix once, then sample one character at a time.

A step of nn.LSTM / nn.GRU at batch 1 and sequence length 1 spends most of its time in the
sequence kernel's set-up, not in arithmetic. So sampling does not call the model: `Stepper` runs
the same equations on the model's own parameters, one matmul per layer on preallocated buffers:

    layer 0:   gates = Table[x] + h_0 W_h          Table = E W_x + b  (V, G), one row per character
    layer l:   gates = [h_{l-1}, h_l] W_cat + b     both halves read in place from one buffer Z
    output:    logits = (h_{L-1} W_hq + b_q) / temperature

    Z (N, L*H):  | h_0 | h_1 | ... | h_{L-1} |     layer l reads Z[:, (l-1)H:(l+1)H], writes h_l

The next character is drawn with the Gumbel-max trick, argmax(logits + g) with g = -log(Exp(1))
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


class Stepper:
    """N streams of a CharLM advanced one character per `step`, on the model's own weights.

    Equal to `CharLM.forward` in eval mode (no dropout) up to float rounding; built once per
    generation call, so a trained model is never modified.
    """

    @torch.inference_mode()
    def __init__(self, model: CharLM, num_samples: int, temperature: float = 1.0) -> None:
        cfg = model.cfg
        self.kind, self.N, self.H, self.L = cfg.model, num_samples, cfg.hidden_size, cfg.num_layers
        H, N, L = self.H, num_samples, self.L
        p = model.W_hq
        emb = model.embedding.weight if model.embedding is not None else None

        def project(w_x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            """(V, G) = one row of x W_x + b per character: x is the embedding, or one-hot."""
            return (emb @ w_x if emb is not None else w_x) + b

        zeros = torch.zeros(H, dtype=p.dtype, device=p.device)
        self.layers: list[tuple[torch.Tensor, ...]] = []
        for i in range(L):
            if self.kind == "rnn":
                cell = model.rnn.layers[i]
                W_x, W_h, b = cell.W_xh, cell.W_hh, cell.b_h  # (d, H), (H, H), (H,)
            else:  # nn.LSTM / nn.GRU keep (G, d) weights and two biases
                W_x = getattr(model.rnn, f"weight_ih_l{i}").t()
                W_h = getattr(model.rnn, f"weight_hh_l{i}").t()
                b_x = getattr(model.rnn, f"bias_ih_l{i}")
                b_h = getattr(model.rnn, f"bias_hh_l{i}")
            if self.kind == "lstm":
                W_x, W_h = _lstm_order(W_x.t(), H).t(), _lstm_order(W_h.t(), H).t()
                b = _lstm_order(b_x + b_h, H)
            if self.kind == "gru":
                # r, z: both biases fold into the input part; n: b_hn stays inside r * (...)
                b_x = b_x + torch.cat([b_h[: 2 * H], zeros])
                b_h = torch.cat([zeros, zeros, b_h[2 * H :]])
                if i == 0:
                    self.layers.append((project(W_x, b_x).contiguous(), W_h.contiguous(), b_h))
                else:
                    self.layers.append((W_x.contiguous(), b_x, W_h.contiguous(), b_h))
            elif i == 0:
                self.layers.append((project(W_x, b).contiguous(), W_h.contiguous()))
            else:
                self.layers.append((torch.cat([W_x, W_h]).contiguous(), b))
        self.W_hq = (model.W_hq / temperature).contiguous()  # (H, V)
        self.b_q = model.b_q / temperature

        G = {"rnn": H, "lstm": 4 * H, "gru": 3 * H}[self.kind]
        new = {"dtype": p.dtype, "device": p.device}
        self.Z = torch.zeros(N, L * H, **new)  # h_0 .. h_{L-1}, side by side
        self.c = torch.zeros(L, N, H, **new)  # LSTM cell states
        self.gx = torch.empty(N, G, **new)
        self.gates = torch.empty(N, G, **new)
        self.tmp = torch.empty(N, H, **new)
        self.logits = torch.empty(N, self.W_hq.shape[1], **new)

    def h(self, i: int) -> torch.Tensor:
        """(N, H) view of layer i's hidden state inside Z."""
        return self.Z[:, i * self.H : (i + 1) * self.H]

    @torch.inference_mode()
    def load_state(self, state: State) -> None:
        """Start from a state of `CharLM.forward` (batch 1 or N; batch 1 is copied to every row)."""
        h = state[0] if isinstance(state, tuple) else state  # (L, B, H)
        for i in range(self.L):
            self.h(i).copy_(h[i])
        if self.kind == "lstm":
            self.c.copy_(state[1])

    @torch.inference_mode()
    def step(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N,) ids -> (N, V) logits / temperature of the next character (an internal buffer)."""
        H, gx, gates = self.H, self.gx, self.gates
        for i, weights in enumerate(self.layers):
            h = self.h(i)
            if self.kind == "gru":
                if i == 0:
                    table, W_h, b_h = weights
                    torch.index_select(table, 0, x, out=gx)
                else:
                    W_x, b_x, W_h, b_h = weights
                    torch.addmm(b_x, self.h(i - 1), W_x, out=gx)
                torch.addmm(b_h, h, W_h, out=gates)  # (N, 3H): W_hr h, W_hz h, W_hn h + b_hn
                rz = gx[:, : 2 * H].add_(gates[:, : 2 * H]).sigmoid_()
                n = torch.addcmul(gx[:, 2 * H :], rz[:, :H], gates[:, 2 * H :], out=self.tmp)
                n.tanh_()
                h.sub_(n).mul_(rz[:, H:]).add_(n)  # h' = (1 - z) n + z h = n + z (h - n)
                continue
            if i == 0:
                table, W_h = weights
                torch.index_select(table, 0, x, out=gx)
                torch.addmm(gx, h, W_h, out=gates)
            else:
                W_cat, b = weights
                torch.addmm(b, self.Z[:, (i - 1) * H : (i + 1) * H], W_cat, out=gates)
            if self.kind == "rnn":
                torch.tanh(gates, out=h)
                continue
            gates[:, : 3 * H].sigmoid_()  # i, f, o
            g = gates[:, 3 * H :].tanh_()
            c = self.c[i]
            c.mul_(gates[:, H : 2 * H]).addcmul_(gates[:, :H], g)  # c = f c + i g
            torch.mul(gates[:, 2 * H : 3 * H], torch.tanh(c, out=self.tmp), out=h)  # h = o tanh(c)
        return torch.addmm(self.b_q, self.h(self.L - 1), self.W_hq, out=self.logits)


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
    stepper = Stepper(model, num_samples, 1.0 if greedy else temperature)
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
            if t % NOISE_STEPS == 0:  # Gumbel(0, 1) = -log Exp(1)
                noise.exponential_(generator=generator).log_().neg_()
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
) -> Iterator[list[str]]:
    """Yield the next character of every sample, `length` times (the prefix is not yielded)."""
    chars = vocab.chars
    for nxt in _sample_ids(
        model, vocab, prefix, length, temperature, top_k, top_p, greedy, num_samples, seed
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
) -> list[str]:
    """`num_samples` texts, each the prefix followed by `length` sampled characters.

    Same text as `stream` with the same arguments; the ids stay on the device until the end.
    """
    steps = list(
        _sample_ids(
            model, vocab, prefix, length, temperature, top_k, top_p, greedy, num_samples, seed
        )
    )
    if not steps:
        return [prefix] * num_samples
    ids = torch.stack(steps, dim=1).cpu().numpy()  # (N, length)
    return [prefix + vocab.decode(row) for row in ids]
