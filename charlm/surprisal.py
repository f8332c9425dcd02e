"""Surprisal view: a text with every character coloured by how surprised the model was by it.

Surprisal is -log2 p(character | everything before it), in bits; its mean over the scored
characters is the bits per character that `charlm eval perplexity` reports. The page is one
self-contained HTML file (inline CSS and JS, no fonts or scripts fetched): the characters are
spans coloured by surprisal bin, and hovering one shows the model's top predictions for it, in
the spirit of karpathy's "The Unreasonable Effectiveness of Recurrent Neural Networks".
"""

from __future__ import annotations

import html
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from charlm.data import Vocab
from charlm.dynamic import Dynamic, adapted_windows
from charlm.errors import CharLMError
from charlm.evaluate import Score, windows
from charlm.model import CharLM

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

    Same windows and carried state as `evaluate.char_nll` with one stream, so the NLLs are the
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


def surprisal(
    model: CharLM,
    vocab: Vocab,
    text: str,
    seq_len: int = 256,
    k: int = 5,
    dynamic: Dynamic | None = None,
) -> Surprisal:
    """Score every character of `text`; those outside the vocabulary are left unscored and
    skipped by the model (as `eval perplexity --skip-unknown` does), as is the first one.
    With `dynamic`, the model learns from each window after scoring it."""
    unknown = set(vocab.unknown(text))
    known = [c not in unknown for c in text]
    ids = vocab.encode(text, skip_unknown=True)
    if len(ids) < 2:
        raise CharLMError("the text has fewer than 2 known characters: nothing to score")
    nll, top_i, top_p = char_predictions(model, ids, seq_len, k, dynamic)
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
    data = {
        "bits": [None if b is None else round(b, 7) for b in s.bits],
        "top": [
            None if t is None else ["".join(c for c, _ in t), [round(p, 4) for _, p in t]]
            for t in s.top
        ],
    }
    blob = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    bin_css = "".join(
        f".b{i}{{background:{c}}}" + (f".b{i}{{color:#fff}}" if i >= 7 else "")
        for i, c in enumerate(COLOURS)
    )
    esc = html.escape
    return _PAGE.format(
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


def write_html(
    path: str | os.PathLike[str], s: Surprisal, source: str, about: str = "", note: str = ""
) -> Path:
    """Render and write the page, a write failure being the user's problem, in one line."""
    path = Path(path)
    try:
        path.write_text(render_html(s, source, about, note), encoding="utf-8")
    except OSError as e:
        raise CharLMError(f"cannot write {path}: {e.strerror}") from None
    return path


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
:root {{ --ink:#1d232b; --muted:#5b6573; --line:#e3e6ea; --bg:#f6f7f9; }}
* {{ box-sizing:border-box; }}
body {{ margin:0; background:var(--bg); color:var(--ink);
  font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }}
header {{ max-width:1100px; margin:0 auto; padding:28px 24px 8px; }}
h1 {{ font-size:22px; margin:0 0 4px; font-weight:650; }}
h1 code {{ font-size:20px; }}
.sub {{ color:var(--muted); margin:0 0 16px; }}
.stats {{ display:flex; gap:12px; flex-wrap:wrap; margin-bottom:14px; }}
.stat {{ background:#fff; border:1px solid var(--line); border-radius:10px; padding:10px 16px;
  min-width:150px; }}
.stat .v {{ display:block; font-size:24px; font-weight:650; font-variant-numeric:tabular-nums; }}
.stat .k {{ color:var(--muted); font-size:13px; }}
.note {{ background:#fff8e1; border:1px solid #f3d98b; border-radius:8px; padding:8px 12px;
  margin:0 0 14px; }}
.legend {{ display:flex; align-items:center; gap:0; flex-wrap:wrap; margin-bottom:6px;
  font-size:12px; }}
.legend .title {{ color:var(--muted); margin-right:10px; }}
.sw {{ padding:3px 8px; border:1px solid rgba(0,0,0,.08); font-variant-numeric:tabular-nums; }}
.legend .unit {{ color:var(--muted); margin-left:10px; }}
main {{ max-width:1100px; margin:0 auto; padding:8px 24px 48px; }}
#text {{ background:#fff; border:1px solid var(--line); border-radius:10px; padding:18px 20px;
  margin:0; white-space:pre-wrap; word-wrap:break-word; line-height:1.65;
  font:14px/1.65 ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace; }}
#text span {{ border-radius:2px; }}
#text span:hover, #text span.on {{ outline:2px solid #1f6feb; outline-offset:0; }}
#text .nl::before {{ content:"\\21b5"; opacity:.45; }}
#text .u {{ color:var(--muted); text-decoration:underline dotted; }}
#text .x {{ color:#8a2be2; text-decoration:underline wavy #8a2be2; }}
{bin_css}
#tip {{ position:fixed; z-index:10; pointer-events:none; background:#1d232b; color:#f3f4f6;
  border-radius:8px; padding:10px 12px; font-size:13px; width:290px;
  box-shadow:0 6px 24px rgba(0,0,0,.25); }}
#tip .h {{ font-weight:600; margin-bottom:6px; }}
#tip .ch {{ font-family:ui-monospace,Menlo,Consolas,monospace; background:#39424e;
  border-radius:3px; padding:0 4px; }}
#tip table {{ border-collapse:collapse; width:100%; }}
#tip td {{ padding:1px 4px; font-variant-numeric:tabular-nums; }}
#tip tr.hit td {{ color:#ffd866; font-weight:600; }}
#tip .bar {{ height:8px; background:#6aa9ff; border-radius:2px; }}
#tip tr.hit .bar {{ background:#ffd866; }}
#tip .p {{ text-align:right; width:56px; }}
</style>
</head>
<body>
<header>
<h1>Surprisal of <code>{source}</code></h1>
<p class="sub">{about}<br>Each character is coloured by its surprisal
&minus;log<sub>2</sub> p(character &#124; the text before it).
Hover a character for the model&rsquo;s top-5 predictions.</p>
<div class="stats" id="summary" data-bits-per-char="{bpc_raw}" data-perplexity="{ppl_raw}"
data-chars="{chars}">
<div class="stat"><span class="v">{ppl}</span><span class="k">perplexity</span></div>
<div class="stat"><span class="v">{bpc}</span><span class="k">bits per character</span></div>
<div class="stat"><span class="v">{chars_fmt}</span><span class="k">characters scored</span></div>
</div>
{note}
<div class="legend"><span class="title">surprisal</span>{legend}<span class="unit">bits</span>
</div>
</header>
<main>
<pre id="text">{spans}</pre>
</main>
<div id="tip" hidden></div>
<script type="application/json" id="data">{blob}</script>
<script>
(function () {{
  "use strict";
  var data = JSON.parse(document.getElementById("data").textContent);
  var text = document.getElementById("text"), tip = document.getElementById("tip");
  var spans = text.children, index = new Map(), current = null;
  for (var i = 0; i < spans.length; i++) index.set(spans[i], i);
  function show(c) {{
    return c === "\\n" ? "\\u21b5" : c === " " ? "\\u2423" : c === "\\t" ? "\\u21e5" : c;
  }}
  function esc(s) {{
    return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }}
  function body(i, el) {{
    var c = el.textContent, bits = data.bits[i], top = data.top[i];
    var head = '<div class="h">char <span class="ch">' + esc(show(c)) + "</span> ";
    if (bits === null) {{
      return head + "</div>" + (el.classList.contains("x")
        ? "not in the model&rsquo;s vocabulary: skipped"
        : "not scored: nothing before it to predict from");
    }}
    head += "&nbsp;p = " + Math.pow(2, -bits).toFixed(4) + " &middot; " + bits.toFixed(2) +
      " bits</div><table>";
    var chars = Array.from(top[0]), rows = "", hit = false;
    for (var k = 0; k < chars.length; k++) {{
      var p = top[1][k], mine = chars[k] === c;
      hit = hit || mine;
      rows += "<tr" + (mine ? ' class="hit"' : "") + '><td><span class="ch">' +
        esc(show(chars[k])) + '</span></td><td style="width:100%"><div class="bar" style="width:' +
        Math.max(2, Math.round(100 * p / top[1][0])) + '%"></div></td><td class="p">' +
        (100 * p).toFixed(1) + "%</td></tr>";
    }}
    return head + rows + "</table>" + (hit ? "" : '<div style="margin-top:4px;opacity:.8">' +
      "the actual character is not in the top " + chars.length + "</div>");
  }}
  function place(e) {{
    var pad = 14, w = tip.offsetWidth, h = tip.offsetHeight;
    var x = e.clientX + pad, y = e.clientY + pad;
    if (x + w > window.innerWidth - 4) x = e.clientX - w - pad;
    if (y + h > window.innerHeight - 4) y = e.clientY - h - pad;
    tip.style.left = Math.max(4, x) + "px";
    tip.style.top = Math.max(4, y) + "px";
  }}
  text.addEventListener("mouseover", function (e) {{
    var i = index.get(e.target);
    if (i === undefined) return;
    if (current) current.classList.remove("on");
    current = e.target;
    current.classList.add("on");
    tip.innerHTML = body(i, current);
    tip.hidden = false;
    place(e);
  }});
  text.addEventListener("mousemove", function (e) {{ if (!tip.hidden) place(e); }});
  text.addEventListener("mouseleave", function () {{
    tip.hidden = true;
    if (current) current.classList.remove("on");
    current = null;
  }});
}})();
</script>
</body>
</html>
"""


def surprisal_page(
    path: str | os.PathLike[str],
    model: CharLM,
    vocab: Vocab,
    ckpt: dict,
    text: str,
    source: str | os.PathLike[str],
    whole: Score,
    seq_len: int = 256,
    max_chars: int = 20_000,
    dynamic: Dynamic | None = None,
) -> Path:
    """The page for `eval perplexity --html`: the first `max_chars` characters of `text`,
    with a note giving the whole text's numbers when that is not all of it."""
    shown = text[:max_chars]
    s = surprisal(model, vocab, shown, seq_len, dynamic=dynamic)
    mc = ckpt["model_config"]
    layers = f"{mc['num_layers']} layer{'s' if mc['num_layers'] > 1 else ''}"
    about = (
        f"{mc['model'].upper()}, {layers} of {mc['hidden_size']} units, "
        f"{len(vocab)} characters in its vocabulary"
    )
    notes = []
    if len(shown) < len(text):
        notes.append(
            f"Showing the first {len(shown):,} of {len(text):,} characters (--html-max-chars); "
            f"the numbers above are for those. The whole text: perplexity "
            f"{whole.perplexity:.4f}, {whole.bits_per_char:.4f} bits per character over "
            f"{whole.chars:,} characters."
        )
    if dynamic is not None:
        notes.append(
            f"Dynamic evaluation: the model learned from the text as it read it (SGD, lr "
            f"{dynamic.lr:g}, decay {dynamic.decay:g}); each character is scored before that."
        )
    skipped = s.known.count(False)
    if skipped:
        what = "character is" if skipped == 1 else "characters are"
        notes.append(
            f"{skipped:,} {what} outside the model's vocabulary: skipped, wavy underlined."
        )
    return write_html(path, s, os.fspath(source), about, " ".join(notes))
