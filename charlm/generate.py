"""Generation: warm the state on the prefix once, then sample one character at a time.

Each new character costs one step of the network with the carried state, never a re-read of
the prefix. Several samples are drawn side by side as one batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from charlm.data import Vocab
from charlm.errors import CharLMError
from charlm.model import CharLM


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


@torch.no_grad()
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
    check_sampling(length, temperature, top_k, top_p, num_samples)
    if not prefix:
        prefix = "\n" if "\n" in vocab.chars else vocab.chars[0]  # a neutral start, not shown
    ids = torch.from_numpy(vocab.encode(prefix)).to(model.W_hq.device)
    generator = torch.Generator(device=ids.device)
    generator.manual_seed(seed if seed is not None else torch.seed())
    was_training = model.training
    model.eval()
    try:
        state = None
        if len(ids) > 1:  # warm the state on all but the last prefix character, once
            _, state = model(ids[:-1, None].expand(-1, num_samples), None)
        x = ids[-1:].expand(1, num_samples)  # (1, N)
        for _ in range(length):
            logits, state = model(x, state)
            if greedy:
                nxt = logits[0].argmax(dim=-1)
            else:
                probs = next_char_probs(logits[0], temperature, top_k, top_p)
                nxt = torch.multinomial(probs, 1, generator=generator)[:, 0]
            x = nxt[None]
            yield [vocab.chars[i] for i in nxt.tolist()]
    finally:
        model.train(was_training)


def generate(model: CharLM, vocab: Vocab, prefix: str, length: int = 200, **kwargs) -> list[str]:
    """`num_samples` texts, each the prefix followed by `length` sampled characters."""
    num_samples = kwargs.get("num_samples", 1)
    pieces: list[list[str]] = [[] for _ in range(num_samples)]
    for chars in stream(model, vocab, prefix, length, **kwargs):
        for piece, c in zip(pieces, chars, strict=True):
            piece.append(c)
    return [prefix + "".join(p) for p in pieces]
