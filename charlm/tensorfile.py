"""A model as a .safetensors file: the weights, with the run's record as JSON metadata.

safetensors is the Hugging Face ecosystem's interchange format for weights: a JSON header
(names, dtypes, shapes, offsets, and a string-to-string metadata table) followed by raw tensor
bytes. Reading one executes nothing, as reading a checkpoint executes nothing. charlm keeps in
the metadata, each as a JSON string, what a checkpoint holds besides its weights and what
generating, scoring and `charlm info` need: the model config, the vocabulary, and (where the
checkpoint had them) the training settings and progress. Optimizer state, RNG states and the
carried hidden state are not kept: a .safetensors file is for using a model, not for resuming.

`read` turns a file back into the plain dict a checkpoint is, so that `charlm.checkpoint` checks
it with the same schema checks and builds the model the same way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from charlm.errors import CharLMError
from charlm.storage import FILE, look, shown

SUFFIX = ".safetensors"
FORMAT = "charlm-weights"
VERSION = 1
# checkpoint entries kept as JSON metadata; the first two are needed to build the model
RECORDS = ("model_config", "vocab", "config", "progress")
NEEDED = RECORDS[:2]


def holds(path: str | os.PathLike[str]) -> bool:
    """Whether `path` names a .safetensors file (by its suffix, as --checkpoint is read); what
    is not a path at all is left to the checkpoint reader, which says so."""
    if not isinstance(path, str | os.PathLike):
        return False
    path = Path(path)
    return path.suffix.lower() == SUFFIX and not path.is_dir()


def _safetensors() -> Any:
    """The safetensors package (an optional dependency: the `export` extra)."""
    try:
        import safetensors.torch
    except ImportError:
        raise CharLMError(
            "reading and writing .safetensors files needs the safetensors package (pip install "
            "safetensors; charlm's `export` extra installs it)"
        ) from None
    return safetensors


def dumps(weights: dict[str, torch.Tensor], records: dict[str, Any]) -> bytes:
    """The file's bytes: `weights` (on the CPU), and `records` (JSON-ready) as metadata."""
    metadata = {"format": FORMAT, "version": str(VERSION)}
    for key in RECORDS:
        if records.get(key) is None:
            continue
        try:
            metadata[key] = json.dumps(records[key])
        except (TypeError, ValueError) as e:  # a damaged checkpoint's record: not plain data
            raise CharLMError(f"the checkpoint's {key!r} cannot be recorded as JSON: {e}") from None
    tensors = {k: w.detach().cpu().contiguous() for k, w in weights.items()}
    return _safetensors().torch.save(tensors, metadata)


def _metadata(path: Path, metadata: dict[str, str] | None) -> dict[str, Any]:
    """The checkpoint entries the metadata records, decoded and checked for their kind."""
    metadata = metadata or {}
    if metadata.get("format") != FORMAT:
        raise CharLMError(f"{path} is a safetensors file, but not one charlm wrote")
    if metadata.get("version") != str(VERSION):
        raise CharLMError(
            f"{path} is a charlm safetensors file of format version "
            f"{metadata.get('version')!r}; this charlm reads version {VERSION}"
        )
    missing = [k for k in NEEDED if k not in metadata]
    if missing:
        raise CharLMError(f"{path}: its metadata has no {missing[0]!r}")
    records = {}
    for key in RECORDS:
        if key not in metadata:
            continue
        try:
            records[key] = json.loads(metadata[key])
        except (ValueError, RecursionError) as e:  # not JSON, a number of 5,000 digits
            raise CharLMError(f"{path}: its {key!r} metadata is not JSON ({str(e)[:80]})") from None
    for key, kind in (
        ("model_config", dict),
        ("vocab", list),
        ("config", dict),
        ("progress", dict),
    ):
        if key in records and not isinstance(records[key], kind):
            raise CharLMError(f"{path}: its {key!r} metadata is not a JSON {kind.__name__}")
    if "config" in records:  # JSON has no tuples: the sequences a TrainConfig holds are tuples
        records["config"] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in records["config"].items()
        }
    return records


def read(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint dict a .safetensors file stands for: "model" (its tensors, on the CPU)
    and the records of its metadata. Not yet checked against each other: that is the
    checkpoint schema's job (`charlm.checkpoint`)."""
    look(path, FILE, "--checkpoint", missing=f"no such safetensors file: {shown(path)}")
    path = Path(path)
    safetensors = _safetensors()
    try:
        with safetensors.safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata()
            weights = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (no iter)
    except Exception as e:  # the library's own error kinds: a damaged or hostile header
        reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise CharLMError(f"{path} is not a readable safetensors file: {reason}") from None
    return {"model": weights, **_metadata(path, metadata)}
