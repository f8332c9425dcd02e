"""Generation: warm the state on the prefix once, then choose one character at a time.

The model's state is advanced by `charlm.stepper.Stepper` (the fast path; `charlm.reference`
holds the plain equations it is tested against); the next character is chosen by a decoder of
`charlm.decode` (a seeded Gumbel-max draw, greedy, or a beam search). This module orchestrates:
checks, device policy, the memory estimate, the warm-up, the step loop and its output blocks,
and turning ids into text. Several samples are one batch of N rows, whose matmuls can run in
bfloat16 (`amp`) or int8. The settings of a call are one `charlm.sampling.Sampling`.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from charlm.decode import NOISE_STEPS, Beam, sampler
from charlm.errors import CharLMError, expect, flag
from charlm.model import CharLM
from charlm.resources import beam_bytes, check_fits, held_bytes, sampling_bytes
from charlm.sampling import Sampling
from charlm.stepper import Stepper
from charlm.vocab import Vocab

GREEDY_LIMIT = 1e30  # logits / temperature beyond this (float32 ends at 3e38) mean greedy
OUT_STEPS = 4096  # the sampled ids are written in blocks of this many steps


def overflows(model: CharLM, temperature: float) -> bool:
    """Whether logits / temperature can leave float32's range: the weights of the output layer
    bound a logit (|h| <= 1), and past GREEDY_LIMIT the draw is the argmax anyway."""
    bound = float(model.W_hq.detach().abs().sum(0).max() + model.b_q.detach().abs().max())
    return not bound / temperature < GREEDY_LIMIT


def _prefix_ids(model: CharLM, vocab: Vocab, prefix: str, s: Sampling) -> torch.Tensor:
    """The prefix's ids on the model's device, once the device can run what `s` asks."""
    device = model.W_hq.device
    if s.int8 and device.type != "cpu":
        raise CharLMError(f"{flag('int8')} runs on CPU, not {device.type}: use {flag('amp')} there")
    if not prefix:
        prefix = "\n" if "\n" in vocab.chars else vocab.chars[0]  # a neutral start, not shown
    return torch.from_numpy(vocab.encode(prefix)).to(device)


def _state_width(model: CharLM) -> int:
    """Floats a stream keeps per step: every layer's gates and states."""
    return 6 * model.cfg.hidden_size * model.cfg.num_layers


def _warm(model: CharLM, ids: torch.Tensor, streams: int, scale: float, s: Sampling) -> Stepper:
    """A stepper of `streams` streams in the state after all but the last prefix character."""
    stepper = Stepper(model, streams, scale, s.amp, s.int8)
    if len(ids) > 1:  # warmed once, batch 1, without dropout whatever the model's mode
        stepper.load_state(model(ids[:-1, None], None, dropout=False)[1])
    return stepper


def _sample_ids(
    model: CharLM, vocab: Vocab, prefix: str, s: Sampling
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield the (N,) ids of the next character of every sample, `s.length` times, each with
    the (rows, N) block of OUT_STEPS steps it is a row of (a caller that keeps every id keeps
    the blocks: a view per step would cost hundreds of bytes a character).

    Run it under `torch.inference_mode()`: `generate` enters the mode once for all steps.
    """
    ids = _prefix_ids(model, vocab, prefix, s)
    if not s.greedy and overflows(model, s.temperature):
        s = replace(s, greedy=True)  # the limit T -> 0 of sampling is the likeliest character
    N, V, device = s.num_samples, len(vocab), ids.device
    need = sampling_bytes(N, V, _state_width(model), NOISE_STEPS)
    check_fits(need, f"sampling {flag('num_samples', N)}", device)
    decoder = sampler(s, V, model.W_hq.dtype, device)
    stepper = _warm(model, ids, N, decoder.scale, s)
    step, choose = stepper.step, decoder.choose
    x = ids[-1:].expand(N)
    for t in range(s.length):
        if t % OUT_STEPS == 0:  # the ids in blocks: a stream's memory stays bounded
            rows = min(OUT_STEPS, s.length - t)
            block = torch.empty(rows, N, dtype=torch.long, device=device)
            out = block.unbind(0)
        nxt = out[t % OUT_STEPS]
        choose(step(x), t, nxt)
        x = nxt
        yield nxt, block


def _beam_ids(model: CharLM, vocab: Vocab, prefix: str, s: Sampling) -> np.ndarray:
    """(N, length) ids of the N best continuations a beam of `s.beam_width` finds, best first."""
    ids = _prefix_ids(model, vocab, prefix, s)
    K = s.beam_width
    need = beam_bytes(K, len(vocab), _state_width(model), s.length)
    what = f"beam search {flag('beam_width', K)} x {flag('length', s.length)}"
    check_fits(need, what, ids.device)
    beam = Beam(K, s.num_samples)
    return beam.search(_warm(model, ids, K, beam.scale, s), ids[-1:], s.length)[0]


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
    expect("prefix", prefix, "str")
    s.check_stream()
    chars = vocab.chars
    utf8 = [codecs.getincrementaldecoder("utf-8")("replace") for _ in range(s.num_samples)]
    for t, (nxt, _) in enumerate(_sample_ids(model, vocab, prefix, s), start=1):
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
    """`num_samples` texts, each the prefix followed by `length` (default 200) characters:
    sampled, or with `beam_width` the best continuations of a beam search, best first.

    Options are `Sampling`'s fields (temperature=, seed=, num_samples=, ...), or pass settings=.
    Same text as `stream` with the same settings; the ids stay on the device until the end.
    """
    s = _settings(length, settings, options)
    expect("prefix", prefix, "str")
    beam = s.beam_width is not None
    one_at_a_time = "one sample at a time is written as it is made, in bounded memory"
    check_fits(
        held_bytes(s.length, s.num_samples),
        f"holding {flag('length', s.length)} x {flag('num_samples', s.num_samples)} characters",
        model.W_hq.device,
        "" if beam else f"{one_at_a_time} ({flag('num_samples', 1)})",
    )
    with torch.inference_mode():
        if beam:
            ids = _beam_ids(model, vocab, prefix, s)
        else:
            blocks = {id(b): b for _, b in _sample_ids(model, vocab, prefix, s)}  # in order
            if not blocks:
                return [prefix] * s.num_samples
            ids = torch.cat(list(blocks.values())).T.cpu().numpy()  # (N, length)
    return [prefix + vocab.decode(row) for row in ids]
