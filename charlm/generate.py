"""Generation: warm the state on the prefix once, then sample one character at a time.

The model's state is advanced by `charlm.stepper.Stepper` (the fast path; `charlm.reference`
holds the plain equations it is tested against). The next character is drawn with the
Gumbel-max trick, argmax(logits + g) with g = -log(-log U) pre-drawn from a seeded generator for
64 steps at a time: one add and one argmax per step, and the same seed gives the same text.
Several samples are one batch of N rows, whose matmuls can run in bfloat16 (`amp`) or int8.
The settings of a call are one `charlm.sampling.Sampling`.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import torch

from charlm.errors import CharLMError
from charlm.model import CharLM
from charlm.resources import check_fits, sampling_bytes
from charlm.sampling import Sampling
from charlm.stepper import Stepper
from charlm.vocab import Vocab

NOISE_STEPS = 64  # Gumbel noise drawn per refill; fixed, so a longer sample extends a shorter one
GREEDY_LIMIT = 1e30  # logits / temperature beyond this (float32 ends at 3e38) mean greedy
OUT_STEPS = 4096  # the sampled ids are written in blocks of this many steps
TEXT_BYTES = 16  # memory per generated character held by `generate`: its id, then its text


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
        drop[:, 0] = False  # even when top_p rounds to 0 in float32
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def overflows(model: CharLM, temperature: float) -> bool:
    """Whether logits / temperature can leave float32's range: the weights of the output layer
    bound a logit (|h| <= 1), and past GREEDY_LIMIT the draw is the argmax anyway."""
    bound = float(model.W_hq.detach().abs().sum(0).max() + model.b_q.detach().abs().max())
    return not bound / temperature < GREEDY_LIMIT


def _start(
    model: CharLM, vocab: Vocab, prefix: str, s: Sampling
) -> tuple[Stepper, torch.Tensor, torch.Generator]:
    """(stepper warmed on the prefix but its last character, that character, noise generator)."""
    device = model.W_hq.device
    if not prefix:
        prefix = "\n" if "\n" in vocab.chars else vocab.chars[0]  # a neutral start, not shown
    ids = torch.from_numpy(vocab.encode(prefix)).to(device)
    cfg = model.cfg
    need = sampling_bytes(
        s.num_samples, len(vocab), 6 * cfg.hidden_size * cfg.num_layers, NOISE_STEPS
    )
    check_fits(need, f"sampling --num-samples {s.num_samples}", device)
    generator = torch.Generator(device=device)
    if s.seed is None:
        generator.seed()
    else:
        generator.manual_seed(s.seed)
    stepper = Stepper(model, s.num_samples, 1.0 if s.greedy else s.temperature, s.amp, s.int8)
    if len(ids) > 1:  # warm the state on all but the last prefix character, once, batch 1
        stepper.load_state(model(ids[:-1, None], None, dropout=False)[1])
    return stepper, ids[-1:], generator


def _sample_ids(model: CharLM, vocab: Vocab, prefix: str, s: Sampling) -> Iterator[torch.Tensor]:
    """Yield the (N,) ids of the next character of every sample, `s.length` times.

    Run it under `torch.inference_mode()`: `generate` enters the mode once for all steps.
    """
    if s.int8 and model.W_hq.device.type != "cpu":
        raise CharLMError(f"--int8 runs on CPU, not {model.W_hq.device.type}: use --amp there")
    if not s.greedy and overflows(model, s.temperature):
        s = replace(s, greedy=True)  # the limit T -> 0 of sampling is the likeliest character
    stepper, last, generator = _start(model, vocab, prefix, s)
    N, V, device = s.num_samples, len(vocab), last.device
    k = s.top_k if s.top_k is not None and s.top_k < V else None
    nucleus = s.top_p is not None and s.top_p < 1
    x = last.expand(N)
    noise = torch.empty(NOISE_STEPS, N, V, dtype=stepper.logits.dtype, device=device)
    noise_rows = noise.unbind(0)
    scores = torch.empty_like(noise[0])  # logits + noise, contiguous whatever the logits' layout
    for t in range(s.length):
        if t % OUT_STEPS == 0:  # the ids in blocks: a stream's memory stays bounded
            rows = min(OUT_STEPS, s.length - t)
            out = torch.empty(rows, N, dtype=torch.long, device=device).unbind(0)
        nxt = out[t % OUT_STEPS]
        logits = stepper.step(x)
        if s.greedy:
            torch.argmax(logits, dim=-1, out=nxt)
        else:
            if t % NOISE_STEPS == 0:  # Gumbel(0, 1) = -log(-log U), U uniform on [0, 1)
                noise.uniform_(generator=generator).log_().neg_().log_().neg_()
            g = noise_rows[t % NOISE_STEPS]
            if nucleus:
                probs = next_char_probs(logits, 1.0, k, s.top_p)
                torch.argmax(probs.log_().add_(g), dim=-1, out=nxt)
            elif k is not None:
                best, which = torch.topk(logits, k, dim=-1)  # (N, k)
                pick = best.add_(g[:, :k]).argmax(dim=-1, keepdim=True)
                torch.gather(which, 1, pick, out=nxt[:, None])
            else:
                torch.argmax(torch.add(logits, g, out=scores), dim=-1, out=nxt)
        x = nxt
        yield nxt


def _settings(length: int | None, settings: Sampling | None, options: dict[str, Any]) -> Sampling:
    """The settings of a call: `settings=`, or keyword options naming Sampling's fields."""
    if settings is None:
        return Sampling(**options) if length is None else Sampling(length, **options)
    if length is not None or options:
        raise TypeError("pass either settings= or keyword options, not both")
    return settings


@torch.inference_mode()  # on a generator: entered around each step, left at each yield
def stream(
    model: CharLM, vocab: Vocab, prefix: str, *, settings: Sampling | None = None, **options: Any
) -> Iterator[list[str]]:
    """Yield the next character of every sample, `length` times (the prefix is not yielded).

    Options are `Sampling`'s fields (length=, seed=, num_samples=, ...), or pass settings=.
    A byte-level model yields what its bytes decode to so far ('' inside a UTF-8 character).
    """
    s = _settings(None, settings, options)
    chars = vocab.chars
    utf8 = [codecs.getincrementaldecoder("utf-8")("replace") for _ in range(s.num_samples)]
    for t, nxt in enumerate(_sample_ids(model, vocab, prefix, s), start=1):
        if vocab.is_bytes:  # the last step flushes a character cut off by the end as U+FFFD
            pieces = zip(utf8, nxt.tolist(), strict=True)
            yield [d.decode(bytes([i]), final=t == s.length) for d, i in pieces]
        else:
            yield [chars[i] for i in nxt.tolist()]


def generate(
    model: CharLM,
    vocab: Vocab,
    prefix: str,
    length: int | None = None,
    *,
    settings: Sampling | None = None,
    **options: Any,
) -> list[str]:
    """`num_samples` texts, each the prefix followed by `length` (default 200) sampled characters.

    Options are `Sampling`'s fields (temperature=, seed=, num_samples=, ...), or pass settings=.
    Same text as `stream` with the same settings; the ids stay on the device until the end.
    """
    s = _settings(length, settings, options)
    check_fits(
        TEXT_BYTES * s.length * s.num_samples,
        f"holding --length {s.length} x --num-samples {s.num_samples} characters",
        model.W_hq.device,
        "one sample at a time is written as it is made, in bounded memory (--num-samples 1)",
    )
    with torch.inference_mode():
        steps = list(_sample_ids(model, vocab, prefix, s))
    if not steps:
        return [prefix] * s.num_samples
    ids = torch.stack(steps, dim=1).cpu().numpy()  # (N, length)
    return [prefix + vocab.decode(row) for row in ids]
