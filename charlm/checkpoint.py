"""Checkpoints: plain data written atomically, read without running code.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts, saved with torch.save and
read with torch.load(weights_only=True), so a file from a stranger cannot execute anything.
It holds everything needed to generate (weights, vocabulary, model config) and to resume
training exactly (optimizer, schedule, counters, RNG states, the carried hidden state).
`load_model` is how generation, evaluation and `info` get a model: no training code involved.
"""

from __future__ import annotations

import os
import pickle
import stat
from pathlib import Path
from typing import Any, BinaryIO

import torch

from charlm import tensorfile
from charlm.errors import CharLMError, brief, on_command_line
from charlm.model import CharLM, ModelConfig
from charlm.precision import resolve_device
from charlm.run import BEST, LATEST
from charlm.storage import ANY, atomic_write, look, open_read, shown
from charlm.vocab import Vocab

FORMAT = "charlm-checkpoint"
VERSION = 1


def save(payload: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write durably and atomically: a kill at any moment leaves the old file or the new one."""
    atomic_write(path, lambda f: torch.save({"format": FORMAT, "version": VERSION, **payload}, f))


def resolve(path: str | os.PathLike[str]) -> Path:
    """A checkpoint file, or a run folder: its best.pt if there is one, else checkpoint.pt.
    Looked at through the opener: a pipe or a device (whose reading would block for ever), a
    NUL byte or a symlink loop is one line, before anything is opened."""
    other = "pass --checkpoint" if on_command_line() else "give the path of a run folder"
    missing = f"no such checkpoint: {shown(path)} (train first, or {other})"
    st = look(path, ANY, "checkpoint", missing=missing)
    path = Path(path)
    if stat.S_ISDIR(st.st_mode):
        for name in (BEST, LATEST):
            if os.path.lexists(path / name):  # what is there is read, or refused: never skipped
                return path / name
        raise CharLMError(f"no checkpoint in {path} (expected {BEST} or {LATEST}; train first)")
    return path


def load(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict:
    """Read and check a checkpoint; every way it can be wrong becomes a CharLMError."""
    path = resolve(path)
    with open_read(path, "checkpoint") as f:
        ckpt = _unpickle(f, path, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CharLMError(f"{shown(path)} is not a charlm checkpoint")
    if ckpt.get("version") != VERSION:
        raise CharLMError(
            f"{shown(path)} is a charlm checkpoint of format version "
            f"{brief(ckpt.get('version'))}; this charlm reads version {VERSION}"
        )
    return ckpt


def _unpickle(f: BinaryIO, path: Path, map_location: str | torch.device) -> Any:
    """torch.load's plain-data reader: a crafted pickle or a damaged file is one line."""
    try:
        return torch.load(f, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        detail = [line for line in str(e).splitlines() if "GLOBAL" in line]
        if not detail:  # the safe unpickler choked on bytes that are no pickle: a damaged file
            raise CharLMError(
                f"{shown(path)} is not a readable checkpoint (truncated or corrupt?)"
            ) from None
        raise CharLMError(
            f"refusing to load {shown(path)}: it holds objects other than plain data, which "
            f"could run code ({detail[0].strip()[:120]})"
        ) from None
    except Exception as e:  # a damaged file can fail inside the unpickler in many ways
        raise CharLMError(
            f"{shown(path)} is not a readable checkpoint (truncated or corrupt?): "
            f"{str(e).splitlines()[0][:120] if str(e) else type(e).__name__}"
        ) from None


def load_model(
    path: str | os.PathLike[str], device: str = "auto"
) -> tuple[CharLM, Vocab, dict[str, Any]]:
    """Model (in eval mode), vocabulary and raw checkpoint from a checkpoint file or run folder
    (or a .safetensors file `charlm export` wrote: read as the same dict, checked the same)."""
    dev = resolve_device(device)
    ckpt = tensorfile.read(path) if tensorfile.holds(path) else load(path, map_location=dev)
    try:
        model, vocab = _model_of(ckpt)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CharLMError(
            f"{shown(path)}: the checkpoint's contents do not fit a charlm model: {e}"
        ) from None
    return model.to(dev).eval(), vocab, ckpt


def _model_of(ckpt: dict[str, Any]) -> tuple[CharLM, Vocab]:
    """The checkpoint's model, checked as a schema before any memory is spent on it: a
    vocabulary of distinct characters as long as the model's output, and weights of exactly
    the shapes its config implies (the config alone could ask for terabytes)."""
    cfg = ModelConfig(**ckpt["model_config"])
    vocab = Vocab(ckpt["vocab"])
    if len(vocab) != cfg.vocab_size:
        raise ValueError(
            f"its vocabulary has {len(vocab)} characters, its model predicts {cfg.vocab_size!r}"
        )
    weights = ckpt["model"]
    if not isinstance(weights, dict) or not all(
        isinstance(w, torch.Tensor) for w in weights.values()
    ):
        raise ValueError("its weights are not a dict of tensors")
    # every size the config names is the size of some weight: bound them before building even
    # the shapes (a million layers take long to build, on any device)
    largest = max((max(w.shape, default=1) for w in weights.values()), default=0)
    sizes = {k: getattr(cfg, k) for k in ("hidden_size", "embedding_dim", "num_layers")}
    for name, size in sizes.items():
        if not isinstance(size, int) or size > max(largest, len(weights)):
            raise ValueError(f"its {name} {size!r} is larger than any of its weights")
    with torch.device("meta"):  # shapes only: no memory
        expected = CharLM(cfg).state_dict()
    if set(weights) != set(expected):
        raise ValueError("its weights are not those of its model config")
    for name, w in weights.items():
        if w.layout != torch.strided or not w.is_floating_point():
            raise ValueError(f"weight {name} is not a dense floating-point tensor")
        if not torch.isfinite(w).all():
            raise ValueError(f"weight {name} holds NaN or infinite values")
        if w.shape != expected[name].shape:
            raise ValueError(
                f"weight {name} has shape {tuple(w.shape)}, its config implies "
                f"{tuple(expected[name].shape)}"
            )
    model = CharLM(cfg)
    model.load_state_dict(weights)
    return model, vocab
