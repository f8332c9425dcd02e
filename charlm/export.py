"""`charlm export`: a trained model in a file other programs can run.

What is exported is what `charlm generate --checkpoint RUN` uses: a run folder's best.pt (else
its checkpoint.pt), or the checkpoint (or .safetensors file) named. Three formats:
- onnx: one step of the model, state in and out, for ONNX Runtime in any language
  (`charlm.onnxfile`);
- safetensors: the weights, with the config and vocabulary as metadata, which charlm reads
  back as --checkpoint (`charlm.tensorfile`);
- html: one offline page that generates in the browser, optionally with int8 weights
  (`charlm.page`).

Every file is written by `charlm.storage.atomic_write`: a failure leaves nothing half-written.
This module imports torch only when it exports, so that the command line can name its choices.
"""

from __future__ import annotations

import os
from pathlib import Path

from charlm.errors import CharLMError, flag

FORMATS = ("onnx", "safetensors", "html")
QUANTIZE = ("int8",)  # --quantize: what --format html can store its weight matrices as
SUFFIX = {"onnx": ".onnx", "safetensors": ".safetensors", "html": ".html"}


def target(source: Path, fmt: str, out: str | os.PathLike[str] | None) -> Path:
    """Where the export goes: -o, else beside the checkpoint with the format's suffix."""
    path = Path(out) if out is not None else source.with_suffix(SUFFIX[fmt])
    try:
        same = path.exists() and path.samefile(source)
    except OSError:  # a name the system refuses (too long, say): the writer reports it
        same = False
    if same:
        raise CharLMError(f"-o {path} is the checkpoint being exported: name another file")
    if fmt == "safetensors" and path.suffix.lower() != SUFFIX[fmt]:
        raise CharLMError(
            f"-o {path}: a safetensors export must end in {SUFFIX[fmt]} (--checkpoint reads it "
            "by its suffix)"
        )
    return path


def export(
    run: str | os.PathLike[str],
    fmt: str,
    out: str | os.PathLike[str] | None = None,
    quantize: str | None = None,
) -> Path:
    """Write RUN's model as `fmt` ("onnx", "safetensors" or "html") and return the path written.

    `quantize="int8"` (html only) stores the weight matrices as int8, a scale per output unit.
    """
    if fmt not in FORMATS:
        raise CharLMError(f"{flag('format')} must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if quantize is not None and (quantize not in QUANTIZE or fmt != "html"):
        raise CharLMError(
            f"{flag('quantize', quantize)} is not available: {flag('format', 'html')} takes "
            f"{' or '.join(flag('quantize', q) for q in QUANTIZE)}, the other formats keep "
            f"the weights as they are"
        )
    from charlm import checkpoint
    from charlm.storage import atomic_write

    source = checkpoint.resolve(run)
    path = target(source, fmt, out)
    model, vocab, ckpt = checkpoint.load_model(source, "cpu")
    if fmt == "onnx":
        from charlm.onnxfile import onnx_bytes

        data = onnx_bytes(model, vocab)
    elif fmt == "safetensors":
        from dataclasses import asdict

        from charlm.tensorfile import dumps

        records = {"model_config": asdict(model.cfg), "vocab": vocab.chars}
        records |= {key: ckpt.get(key) for key in ("config", "progress")}
        data = dumps(model.state_dict(), records)
    else:
        from charlm.page import page_html

        title = f"charlm · {source.parent.name or source.stem}"
        data = page_html(model, vocab, title, int8=quantize == "int8").encode("utf-8")
    atomic_write(path, lambda f: f.write(data))
    return path
