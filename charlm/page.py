"""A model as one offline HTML page that generates text in the browser.

The page (templates/export.html) holds everything: its markup, style and script, the model's
config and vocabulary as JSON, and the weights as base64. Nothing is fetched; it runs from a
file:// address. Its script runs the reference stepper's equations (`charlm.reference`) on
Float32Arrays, with matrix-vector products as tight loops:

    x_0 = stream_in(input)
    xW = layer_input(l, x_l) W_x + b_x     hW = h_l W_h + b_h     step(xW, hW, h_l, c_l)
    x_{l+1} = between(l, x_l, h_l)         logits = stream_out(x_L) W_hq + b_q

The first layer's x W_x + b_x (and x_0, where the hooks keep a stream) is a row of a table the
page builds once, as the fast stepper does (`charlm.stepper`). Two parts differ between cells,
each a small JavaScript file written from the cell's Python:
- `step`, templates/cells/<name>.js: the same equations as the cell's `step`, updating h (and
  c) in place;
- the hooks, templates/hooks/<cell.hooks>.js: `stream_in`, `layer_input`, `between` and
  `stream_out` on the parameters of `cell.hook_weights()` ("stack": identities, the rnn, lstm
  and gru; "residual": the min cells' blocks).
A cell without either file cannot be exported as a page.

Weights are stored transposed (a row per output unit: each product is a run of dot products).
`int8=True` stores each weight matrix (the embedding, gains and biases stay float32) as int8
with a float32 scale per output unit, max |w| / 127 (per column of W, as the fast stepper's
int8): a quarter of the size; the page multiplies the scales back in when it loads.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import string
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

from charlm.cells import Cell
from charlm.errors import CharLMError, flag
from charlm.model import CharLM
from charlm.vocab import Vocab

TEMPLATE = "templates/export.html"  # inside the package
CELL_STEPS = "templates/cells"  # <cell name>.js: one cell's step equations in JavaScript
HOOKS = "templates/hooks"  # <cell.hooks>.js: what happens around and between its layers
ALIGN = 4  # every tensor starts at a multiple of 4 bytes: a Float32Array's alignment


@dataclass(frozen=True)
class Tensor:
    """One array the page reads: float32, or int8 with a float32 scale per row."""

    name: str
    values: np.ndarray  # (rows, cols) or (n,), float32
    int8: bool = False

    def blocks(self) -> tuple[list[np.ndarray], dict[str, object]]:
        """The arrays written for it (values; int8: values then scales) and its description."""
        shape = list(self.values.shape)
        if not self.int8:
            return [self.values.astype("<f4")], {"name": self.name, "shape": shape, "kind": "f32"}
        scale = np.abs(self.values).max(axis=1, initial=0) / 127
        scale[scale == 0] = 1  # an all-zero row: any scale gives zeros
        q = np.round(self.values / scale[:, None]).astype(np.int8)
        return [q, scale.astype("<f4")], {"name": self.name, "shape": shape, "kind": "i8"}


def _script(folder: str, name: str) -> str | None:
    """The JavaScript in charlm/<folder>/<name>.js, or None where there is no such file."""
    path = resources.files("charlm").joinpath(f"{folder}/{name}.js")
    return path.read_text("utf-8").strip() if path.is_file() else None


def has_step(name: str) -> bool:
    """Whether the cell has a step in JavaScript, so that a page can run it."""
    return _script(CELL_STEPS, name) is not None


def cell_step(name: str) -> str:
    """The cell's step in JavaScript: `(xW, hW, h, c) => {...}`, from templates/cells."""
    if (script := _script(CELL_STEPS, name)) is None:
        raise CharLMError(
            f"{flag('format', 'html')} has no JavaScript step for the {name} cell (it would be "
            f"charlm/{CELL_STEPS}/{name}.js): export it as onnx or safetensors"
        )
    return script


def cell_hooks(cell: type[Cell]) -> str:
    """The cell's hooks in JavaScript: `(W, dims) => ({streamIn, layerInput, between,
    streamOut})`, from templates/hooks."""
    if (script := _script(HOOKS, cell.hooks)) is None:
        raise CharLMError(
            f"{flag('format', 'html')} has no JavaScript for the {cell.hooks} hooks of the "
            f"{cell.name} cell (it would be charlm/{HOOKS}/{cell.hooks}.js): export it as onnx or "
            "safetensors"
        )
    return script


def tensors(model: CharLM, int8: bool) -> list[Tensor]:
    """The arrays the page needs, in its layout: W_x, W_h and W_hq transposed (out, in)."""
    cell = model.rnn

    def arr(t: torch.Tensor) -> np.ndarray:
        return t.detach().to("cpu", torch.float32).numpy()

    out = []
    if model.embedding is not None:
        out.append(Tensor("emb", arr(model.embedding.weight)))
    for i in range(cell.num_layers):
        W_x, W_h, b_x, b_h = cell.step_weights(i)
        out += [
            Tensor(f"Wx{i}", arr(W_x.t()), int8),
            Tensor(f"Wh{i}", arr(W_h.t()), int8),
            Tensor(f"bx{i}", arr(b_x)),
            Tensor(f"bh{i}", arr(b_h)),
        ]
    out += [Tensor("Wq", arr(model.W_hq.t()), int8), Tensor("bq", arr(model.b_q))]
    hooks = [
        Tensor(key, arr(p.t()), int8) if p.dim() == 2 else Tensor(key, arr(p))
        for key, p in cell.hook_weights().items()
    ]
    if clash := {t.name for t in out} & {t.name for t in hooks}:
        raise ValueError(f"hook weights named as the page's own: {sorted(clash)}")
    return out + hooks


def pack(arrays: list[Tensor]) -> tuple[bytes, list[dict[str, object]]]:
    """All arrays as one little-endian buffer, and where each lies in it."""
    chunks: list[bytes] = []
    layout, offset = [], 0
    for t in arrays:
        blocks, about = t.blocks()
        offsets = []
        for block in blocks:
            raw = block.tobytes()
            offsets.append(offset)
            pad = -len(raw) % ALIGN
            chunks.append(raw + b"\0" * pad)
            offset += len(raw) + pad
        layout.append({**about, "offset": offsets[0], **({"scale": offsets[1]} if t.int8 else {})})
    return b"".join(chunks), layout


def _json(data: object) -> str:
    """JSON that can sit inside a <script> element: no '<', '>' or '&' as themselves, and
    ASCII (a lone surrogate, a byte a corpus kept with surrogateescape, stays an escape)."""
    text = json.dumps(data, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def describe(model: CharLM, vocab: Vocab, int8: bool) -> str:
    """The model in one line, as the page shows it."""
    cfg = model.cfg
    layers = f"{cfg.num_layers} layer{'s' if cfg.num_layers > 1 else ''}"
    embed = f"embedding {cfg.embedding_dim}" if cfg.embedding_dim else "one-hot input"
    units = f"{len(vocab)} {'byte values' if vocab.is_bytes else 'characters'}"
    weights = f"{'int8' if int8 else 'float32'} weights"
    return f"{cfg.model}, {layers} of {cfg.hidden_size} units, {embed}; {units}; {weights}"


def page_html(model: CharLM, vocab: Vocab, title: str, int8: bool = False) -> str:
    """The whole page as one string: markup, script, the cell's step and hooks, config and
    weights."""
    step, hooks = cell_step(model.rnn.name), cell_hooks(type(model.rnn))
    buffer, layout = pack(tensors(model, int8))
    start = "\n" if "\n" in vocab.chars else vocab.chars[0]  # generate's start for no prefix
    config = {
        "vocab": vocab.chars,
        "bytes": vocab.is_bytes,
        "start": start,
        "layers": model.cfg.num_layers,
        "hidden": model.cfg.hidden_size,
        "state": model.rnn.state_size,
        "tensors": layout,
    }
    return _page().substitute(
        title=html.escape(title),
        about=html.escape(describe(model, vocab, int8)),
        config=_json(config),
        cell_step=step,
        cell_hooks=hooks,
        weights=base64.b64encode(buffer).decode("ascii"),
    )


@functools.cache
def _page() -> string.Template:
    """The page's HTML, CSS and JS, shipped as package data: $name marks what page_html fills."""
    return string.Template(resources.files("charlm").joinpath(TEMPLATE).read_text("utf-8"))
