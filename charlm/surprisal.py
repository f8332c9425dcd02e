"""Surprisal view: a text with every character coloured by how surprised the model was by it.

Surprisal is -log2 p(character | everything before it), in bits; its mean over the scored
characters is the bits per character that `charlm eval perplexity` reports. The page is one
self-contained HTML file (inline CSS and JS, no fonts or scripts fetched): the characters are
spans coloured by surprisal bin, and hovering one shows the model's top predictions for it, in
the spirit of karpathy's "The Unreasonable Effectiveness of Recurrent Neural Networks". The
page's markup, style and script are templates shipped in the package (templates/surprisal.html,
.css and .js; the server's playground shows scores with the same style and script); this module
fills in the numbers, the spans and the hover data. The numbers themselves come from
`charlm.evaluate.surprisal`; `charlm.report` writes the page.
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

TEMPLATE = "templates/surprisal.html"  # inside the package, beside its .css and .js
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


def legend() -> str:
    """The colour scale's swatches, labelled with their bins' bits."""
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
        legend=legend(),
        spans=spans,
        blob=blob,
        style=style(),
        script=script(),
    )


@functools.cache
def style() -> str:
    """The page's CSS, its colour bins (.b0, .b1, ...) included."""
    bin_css = "".join(
        f".b{i}{{background:{c}}}" + (f".b{i}{{color:#fff}}" if i >= 7 else "")
        for i, c in enumerate(COLOURS)
    )
    return _part(".css").substitute(bin_css=bin_css)


@functools.cache
def script() -> str:
    """The page's script: it reads the hover data from #data and shows it over #text in #tip."""
    return _part(".js").template


def _part(suffix: str) -> string.Template:
    """A part of the page shipped as package data: $name marks what is filled in."""
    path = TEMPLATE.removesuffix(".html") + suffix
    return string.Template(resources.files("charlm").joinpath(path).read_text("utf-8"))


@functools.cache
def _page() -> string.Template:
    return _part(".html")
