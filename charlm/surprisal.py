"""Surprisal view: a text with every character coloured by how surprised the model was by it.

Surprisal is -log2 p(character | everything before it), in bits; its mean over the scored
characters is the bits per character that `charlm eval perplexity` reports. The page is one
self-contained HTML file (inline CSS and JS, no fonts or scripts fetched): the characters are
spans coloured by surprisal bin, and hovering one shows the model's top predictions for it, in
the spirit of karpathy's "The Unreasonable Effectiveness of Recurrent Neural Networks". The
page's markup, style and script are a template shipped in the package (templates/surprisal.html);
this module fills in the numbers, the spans and the hover data.
"""

from __future__ import annotations

import functools
import html
import json
import math
import string
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

from charlm.dynamic import adapted_windows
from charlm.evaluate import Score, check_scorable, windows
from charlm.model import CharLM
from charlm.scoring import Dynamic
from charlm.vocab import Vocab

TEMPLATE = "templates/surprisal.html"  # inside the package
TOP_K = 5  # predictions shown per character (the page says top-5)
# bin edges in bits; the last bin is everything from the last edge up
EDGES = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0)
# a white -> yellow -> orange -> red -> dark red ramp (after ColorBrewer's YlOrRd)
COLOURS = (
    "#ffffff",
    "#fff7cc",
    "#ffeda0",
    "#fed976",
    "#feb24c",
    "#fd8d3c",
    "#fc4e2a",
    "#e31a1c",
    "#bd0026",
    "#800026",
    "#4d0019",
)


@torch.no_grad()
def char_predictions(
    model: CharLM, ids: np.ndarray, seq_len: int = 256, k: int = 5, dynamic: Dynamic | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every character after the first: its NLL (nats), the top-k ids and probabilities.

    Same windows and carried state as `evaluate.nll_sum` with one stream, so the NLLs are the
    ones `score` averages (with `dynamic`: the adapted model's). Shapes: (n-1,), (n-1, k) x 2.
    """
    k = min(k, model.cfg.vocab_size)
    nll, top_p, top_i = [], [], []
    pieces = (
        windows(model, ids, seq_len, streams=1, rank=0, world_size=1)
        if dynamic is None
        else adapted_windows(model, ids, seq_len, dynamic)
    )
    for logits, window_nll, _ in pieces:
        p, i = logits[:, 0].softmax(-1).topk(k, dim=-1)
        nll.append(window_nll[:, 0])
        top_p.append(p)
        top_i.append(i)
    nll, top_i, top_p = torch.cat(nll), torch.cat(top_i), torch.cat(top_p)
    return nll.cpu(), top_i.cpu(), top_p.cpu()


@dataclass
class Surprisal:
    """A text and, per character, its surprisal in bits (None: not scored), its top
    predictions, and whether the model knows it (unknown ones are skipped, not scored)."""

    text: str
    bits: list[float | None]
    top: list[list[tuple[str, float]] | None]
    known: list[bool]

    @property
    def scored(self) -> int:
        return sum(b is not None for b in self.bits)

    @property
    def bits_per_char(self) -> float:
        return math.fsum(b for b in self.bits if b is not None) / self.scored

    @property
    def perplexity(self) -> float:
        return 2.0**self.bits_per_char

    def as_dict(self) -> dict[str, list]:
        """Per character, its surprisal and top predictions (chars as one string, then their
        probabilities): the --html page's hover data, and what a server answers."""
        return {
            "bits": [None if b is None else round(b, 7) for b in self.bits],
            "top": [
                None if t is None else ["".join(c for c, _ in t), [round(p, 4) for _, p in t]]
                for t in self.top
            ],
        }


def surprisal(
    model: CharLM, vocab: Vocab, text: str, seq_len: int = 256, dynamic: Dynamic | None = None
) -> Surprisal:
    """Score every character of `text`; those outside the vocabulary are left unscored and
    skipped by the model (as `eval perplexity --skip-unknown` does), as is the first one.
    With `dynamic`, the model learns from each window after scoring it."""
    unknown = set(vocab.unknown(text))
    known = [c not in unknown for c in text]
    ids = vocab.encode(text, skip_unknown=True)
    check_scorable(len(ids))
    nll, top_i, top_p = char_predictions(model, ids, seq_len, TOP_K, dynamic)
    bits_known = (nll.double() / math.log(2)).tolist()
    chars = vocab.chars
    tops = [
        [(chars[i], p) for i, p in zip(row_i, row_p, strict=True)]
        for row_i, row_p in zip(top_i.tolist(), top_p.tolist(), strict=True)
    ]
    bits: list[float | None] = []
    top: list[list[tuple[str, float]] | None] = []
    j = -1  # index among the known characters
    for is_known in known:
        if is_known:
            j += 1
        scored = is_known and j > 0
        bits.append(bits_known[j - 1] if scored else None)
        top.append(tops[j - 1] if scored else None)
    return Surprisal(text, bits, top, known)


def bin_of(bits: float) -> int:
    """The colour bin of a surprisal: bin i holds [EDGES[i], EDGES[i + 1])."""
    return int(np.searchsorted(EDGES, bits, side="right")) - 1


def _escape(c: str) -> str:
    # a bare CR would be folded into a newline by the HTML parser; a reference survives
    return "&#13;" if c == "\r" else html.escape(c, quote=False)


def _span(c: str, bits: float | None, known: bool) -> str:
    cls = f"b{bin_of(bits)}" if bits is not None else ("u" if known else "x")
    if c == "\n":
        cls += " nl"
    return f'<span class="{cls}">{_escape(c)}</span>'


def _legend() -> str:
    items = []
    for i, colour in enumerate(COLOURS):
        lo = EDGES[i]
        label = f"≥{lo:g}" if i == len(COLOURS) - 1 else f"{lo:g}–{EDGES[i + 1]:g}"
        items.append(f'<span class="sw b{i}" style="background:{colour}">{label}</span>')
    return "".join(items)


def render_html(s: Surprisal, source: str, about: str = "", note: str = "") -> str:
    """The whole page as one string: stats, legend, the coloured text, the hover data."""
    spans = "".join(map(_span, s.text, s.bits, s.known))
    blob = json.dumps(s.as_dict(), ensure_ascii=False, separators=(",", ":"))
    blob = blob.replace("<", "\\u003c")
    bin_css = "".join(
        f".b{i}{{background:{c}}}" + (f".b{i}{{color:#fff}}" if i >= 7 else "")
        for i, c in enumerate(COLOURS)
    )
    esc = html.escape
    return _page().substitute(
        title=esc(f"surprisal · {source}"),
        source=esc(source),
        about=esc(about),
        note=f'<p class="note">{esc(note)}</p>' if note else "",
        bpc_raw=repr(s.bits_per_char),
        ppl_raw=repr(s.perplexity),
        chars=s.scored,
        bpc=f"{s.bits_per_char:.4f}",
        ppl=f"{s.perplexity:.4f}",
        chars_fmt=f"{s.scored:,}",
        legend=_legend(),
        spans=spans,
        blob=blob,
        bin_css=bin_css,
    )


def describe(model: CharLM, vocab: Vocab) -> str:
    """The page's line on the model."""
    mc = model.cfg
    layers = f"{mc.num_layers} layer{'s' if mc.num_layers > 1 else ''}"
    return (
        f"{mc.model.upper()}, {layers} of {mc.hidden_size} units, "
        f"{len(vocab)} characters in its vocabulary"
    )


def page_note(s: Surprisal, length: int, whole: Score, dynamic: Dynamic | None) -> str:
    """What the page says under its numbers: that `s` is the start of a text of `length`
    characters (with `whole`'s numbers), how the model adapted, what it skipped."""
    notes = []
    if len(s.text) < length:
        notes.append(
            f"Showing the first {len(s.text):,} of {length:,} characters (--html-max-chars); "
            f"the numbers above are for those. The whole text: perplexity "
            f"{whole.perplexity:.4f}, {whole.bits_per_char:.4f} bits per character over "
            f"{whole.chars:,} characters."
        )
    if dynamic is not None:
        notes.append(
            f"Dynamic evaluation: the model learned from the text as it read it ({dynamic.update}, "
            f"lr {dynamic.lr:g}, decay {dynamic.decay:g}); each character is scored before that."
        )
    skipped = s.known.count(False)
    if skipped:
        what = "character is" if skipped == 1 else "characters are"
        notes.append(
            f"{skipped:,} {what} outside the model's vocabulary: skipped, wavy underlined."
        )
    return " ".join(notes)


@functools.cache
def _page() -> string.Template:
    """The page's HTML, CSS and JS, shipped as package data: $name marks what render_html fills."""
    return string.Template(resources.files("charlm").joinpath(TEMPLATE).read_text("utf-8"))
