"""A model as an ONNX file: one step of every stream, the recurrent state passed in and out.

The graph is one step of the reference stepper (`charlm.reference`), traced on an explicit
state: the cell's own `step_weights` and `step` equations, so a cell added later is exported by
the same code. For the rnn, lstm and gru, for every layer l,

    xW = x_l W_x + b_x        hW = h_l W_h + b_h        (h_l, c_l) = cell.step(xW, hW, h_l, c_l)

with x_0 the character's embedding (or one-hot vector) and x_{l+1} = h_l, and the logits
h_{L-1} W_hq + b_q. Inputs and outputs, N the number of streams (any, at run time), S the
state's size per layer (H for these cells):

    ids (N,) int64    h (L, N, S) float32    [c (L, N, S), for a cell with a memory cell]
    logits (N, V)     h_out (L, N, S)        [c_out (L, N, S)]

The zero state starts a text. The vocabulary and the model config are in the model's metadata
(`metadata_props`, JSON strings), so ONNX Runtime in any language can encode, step and decode
with this file alone. torch's exporter (torch.export, then onnxscript) writes the graph.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import asdict

import torch
from torch import nn

from charlm.errors import CharLMError
from charlm.model import CharLM
from charlm.reference import ReferenceStepper
from charlm.vocab import Vocab

FORMAT = "charlm-onnx-step"
VERSION = 1
EXAMPLE_STREAMS = 2  # traced with this many streams; the streams axis stays dynamic


def zero_state(model: CharLM, streams: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (h, c) a text starts from, each (L, N, state size); c is None for a cell without a
    memory cell."""
    return model.rnn.split_state(model.init_state(streams))


class StepGraph(nn.Module):
    """One step of the reference stepper on an explicit state: the function the ONNX file holds.

    The stepper's own `step` is traced, so what the file computes is what charlm's reference
    equations compute, for every cell.
    """

    def __init__(self, model: CharLM) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, ids: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        """ids (N,), h and c (L, N, S) -> logits (N, V), the new h (and c)."""
        stepper = ReferenceStepper(self.model, ids.shape[0])  # N: a dynamic size when traced
        stepper.load_state(h if c is None else (h, c))
        logits = stepper.step(ids)
        if c is None:
            return logits, torch.stack(stepper.h)
        return logits, torch.stack(stepper.h), torch.stack(stepper.c)


def metadata(model: CharLM, vocab: Vocab) -> dict[str, str]:
    """What a user of the file needs besides the graph, as the strings ONNX metadata holds."""
    h, c = zero_state(model, 1)
    return {
        "charlm.format": FORMAT,
        "charlm.version": str(VERSION),
        "vocab": json.dumps(vocab.chars),
        "unit": "byte" if vocab.is_bytes else "char",
        "model_config": json.dumps(asdict(model.cfg)),
        "state": json.dumps(["h"] if c is None else ["h", "c"]),
        "state_shape": json.dumps([h.shape[0], h.shape[2]]),
    }


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's progress lines, warnings, notes about packages it can skip and the graphs
    it prints when it fails: not the user's to read (a failure is reported in one line)."""
    logger = logging.getLogger("torch")  # torch.onnx's, and the tracer's (torch.fx)
    level = logger.level
    logger.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), redirect_stdout(sink), redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _check_packages() -> None:
    """The packages torch's ONNX exporter needs (the `export` extra) are installed."""
    for package in ("onnx", "onnxscript"):
        try:
            __import__(package)
        except ImportError:
            raise CharLMError(
                f"--format onnx needs the {package} package (pip install {package}; charlm's "
                "`export` extra installs it)"
            ) from None


def onnx_bytes(model: CharLM, vocab: Vocab) -> bytes:
    """The ONNX file of one step of `model` (a float32 model on the CPU), with its metadata."""
    _check_packages()
    streams = torch.export.Dim("streams")
    ids = torch.zeros(EXAMPLE_STREAMS, dtype=torch.long)
    h, c = zero_state(model, EXAMPLE_STREAMS)
    # distinct tensors for h and c: the tracer would take one tensor passed twice as one input
    args = (ids, h) if c is None else (ids, h, c.clone())
    names = ["ids", "h", "c"][: len(args)]
    shapes = {name: {1 if name != "ids" else 0: streams} for name in names}
    try:
        with _quiet():
            program = torch.onnx.export(
                StepGraph(model),
                args,
                input_names=names,
                output_names=["logits", "h_out", "c_out"][: len(args)],
                dynamic_shapes=shapes,
                dynamo=True,
                verbose=False,
            )
    except Exception as e:  # the tracer's and translator's errors: what the cell's step does
        cause: BaseException = e
        while cause.__cause__ is not None:  # the exporter wraps the tracer's reason in its own
            cause = cause.__cause__
        text = str(cause).strip()
        reason = text.splitlines()[0][:160] if text else type(cause).__name__
        raise CharLMError(
            f"--format onnx cannot express the {model.rnn.name} cell's step equations: {reason}"
        ) from None
    proto = program.model_proto
    proto.producer_name = "charlm"
    proto.doc_string = __doc__.split("\n\n")[0]
    for key, value in metadata(model, vocab).items():
        proto.metadata_props.add(key=key, value=value)
    try:
        return proto.SerializeToString()
    except ValueError as e:  # protobuf's 2 GB limit
        raise CharLMError(f"--format onnx cannot hold this model in one file: {e}") from None
