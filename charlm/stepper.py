"""The fast sampler: N streams of a CharLM advanced one character per step, on the model's weights.

A step of nn.LSTM / nn.GRU at batch 1 and sequence length 1 spends most of its time in the
sequence kernel's set-up, not in arithmetic. So sampling does not call the model: `Stepper` runs
the cells' equations (`charlm.reference` writes them plainly) on preallocated buffers, with one
matmul per layer and step: the new state h_l is multiplied once by [W_h | W_next], which gives
its own recurrent term R_l for the next step and, at once, the input term of the layer above
(W_next = W_x of layer l+1) or the logits (W_next = W_hq):

    A_0 = Table[x]                 Table = E W_x + b: (V, G), a row per character
    h_l = cell(A_l + R_l)          R_l = h_l W_h + r, from the step before
    [R_l | A_{l+1}] = h_l [W_h | W_next] + [r | b_next]        the last layer: A_L = logits

The cell decides the gate layout of W_x, W_h, b, r (`Cell.fused_weights`), the in-place
update (`Cell.fast_step`) and how a whole step is laid out (`Cell.fast_plan`: a list of
stages, each an in-place update then one matmul; the layout above by default, four stages a
layer for the min cells' residual blocks); this module decides where buffers live and how the
matmuls run.
Tuned for CPU, where these choices measured fastest (benchmarks/RESULTS.md):
- one stream: each matmul's columns are split into one block per thread and done as one
  batched matmul (a lone matrix-vector product runs on one thread);
- WIDE or more streams: every (N, width) buffer is stored transposed, (width, N), so the
  matmuls compute W^T h^T with the weights as the long left operand, and tanh is taken
  through sigmoid;
- `amp` and several streams: the matmuls run in bfloat16 (several times faster on GPUs and
  on CPUs with AVX512-BF16 or AMX); their results get the biases added in the model's
  precision, in which the states, the cell update and the sampling stay;
- `int8` and several streams (CPU): the same with int8 matmuls: each column of a weight matrix
  is scaled to [-127, 127] and rounded; the matmuls' inputs are hidden states, which the cell
  declares bounded (`Cell.bounded_state`: |h| <= 1), so a state is quantized as round(127 h)
  without measuring its range. The buffers stay row-major: the int8 matmul runs as fast either
  way, the lookup does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from charlm.cells import State
from charlm.errors import CharLMError, flag
from charlm.model import CharLM

WIDE = 16  # from this many streams on (CPU; not int8), buffers keep the streams as fastest axis
H_SCALE = torch.tensor(127.0)  # int8: a state h in [-1, 1] is multiplied by this and rounded
MINUS_ONE = -torch.ones(())  # 0-dim: a Python number would cost a conversion per op


def _tanh(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """tanh(x) = 2 sigmoid(2x) - 1: on CPU torch's sigmoid is several times faster than its tanh.

    Doubling is exact, so -1 + 2s (one op) rounds exactly as (s + s) - 1 (two).
    """
    s = torch.add(x, x, out=out).sigmoid_()
    return torch.add(MINUS_ONE, s, alpha=2, out=s)


class Affine(NamedTuple):
    """out = bias + x W, as `Stepper._affine` computes it.

    One addmm when out_m is None. Otherwise the matmul writes out_m (bfloat16; int8: int32 sums,
    times `scale`), which is copied into out; then bias is added only to out_b, the columns of
    out where it is not zero (an LSTM's: the logits), a copy-and-add saved on the rest.
    """

    bias: torch.Tensor | None
    x: torch.Tensor
    W: torch.Tensor
    out: torch.Tensor
    out_m: torch.Tensor | None = None
    out_b: torch.Tensor | None = None
    scale: torch.Tensor | None = None


@dataclass(frozen=True)
class Layout:
    """Where a Stepper's buffers live and how its matmuls run; chosen once per generation."""

    N: int  # streams
    dtype: torch.dtype  # the model's: states, cell updates and sampling
    device: torch.device
    mm: torch.dtype  # the matmuls' dtype
    blocks: int  # P: column blocks of one stream's matmuls, one per thread
    wide: bool  # buffers stored transposed, (width, N)
    int8: bool

    @classmethod
    def choose(cls, model: CharLM, N: int, amp: bool, int8: bool) -> Layout:
        p = model.W_hq
        cpu = p.device.type == "cpu"
        int8 = int8 and N > 1
        if int8 and not model.rnn.bounded_state:
            raise CharLMError(
                f"{flag('int8')} quantizes hidden states as round(127 h), but the "
                f"{model.rnn.name} cell does not declare |h| <= 1: use {flag('amp')}"
            )
        # the matmuls' dtype: one stream is a matrix-vector product, which gains nothing from it
        mm = torch.int8 if int8 else torch.bfloat16 if amp and N > 1 else p.dtype
        P = torch.get_num_threads() if N == 1 and cpu else 1
        return cls(N, p.dtype, p.device, mm, P, cpu and N >= WIDE and not int8, int8)

    def new(self, *shape: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Zeros of `shape`; when wide, stored with the last two axes swapped."""
        dtype = dtype or self.dtype
        if not self.wide:
            return torch.zeros(*shape, dtype=dtype, device=self.device)
        swapped = (*shape[:-2], shape[-1], shape[-2])
        return torch.zeros(swapped, dtype=dtype, device=self.device).transpose(-1, -2)

    def affine(self, bias: torch.Tensor, x: torch.Tensor, W: torch.Tensor) -> Affine:
        """out = bias + x W into a new buffer (one stream: (P, 1, K) @ (P, K, w/P) blocks)."""
        K, width = W.shape
        P, N = self.blocks, self.N
        pad = -width % (8 * P)  # zero columns: equal blocks; bfloat16 runs 15% faster
        W, bias, scale = F.pad(W, (0, pad)), F.pad(bias, (0, pad)), None
        if self.int8:  # W = scale * W_q, a scale per column
            scale = W.abs().amax(0) / 127
            scale[scale == 0] = 1  # the zero columns of the pad
            W = (W / scale).round()
            scale /= H_SCALE
        W = W.to(self.mm)
        out = self.new(N, width + pad)
        if P > 1:
            blocks = W.reshape(K, P, -1).transpose(0, 1).contiguous()
            return Affine(bias.view(P, 1, -1), x[None].expand(P, N, K), blocks, out.view(P, N, -1))
        W = W.t().contiguous().t() if self.wide else W.contiguous()  # the layout that runs fastest
        if self.mm == self.dtype:
            return Affine(bias, x, W, out)
        out_m = self.new(*out.shape, dtype=torch.int32 if self.int8 else self.mm)
        nonzero = bias.nonzero()
        if len(nonzero) == 0:
            return Affine(None, x, W, out, out_m, scale=scale)
        cols = slice(int(nonzero[0]), int(nonzero[-1]) + 1)
        return Affine(bias[cols], x, W, out, out_m, out[:, cols], scale)


class Stepper:
    """N streams of a CharLM advanced one character per `step`, on the model's own weights.

    Equal to `CharLM.forward` in eval mode (no dropout) up to float rounding, its logits times
    `scale` (a decoder's: 1/T to sample at temperature T), folded into the output weights so that
    it costs nothing per step. Built once per generation call, so a trained model is never
    modified. Every view a step needs is made here: a step is only arithmetic (at batch 1,
    making a view costs about as much as a small op). The same interface as
    `charlm.reference.ReferenceStepper`: `load_state`, `step`, `reorder`.
    """

    @torch.inference_mode()
    def __init__(
        self,
        model: CharLM,
        num_samples: int,
        scale: float = 1.0,
        amp: bool = False,
        int8: bool = False,
    ) -> None:
        cell = self.cell = model.rnn
        lay = self.layout = Layout.choose(model, num_samples, amp, int8)
        S, L, N = cell.state_size, cell.num_layers, num_samples
        self.int8 = lay.int8
        self.tanh = _tanh if lay.device.type == "cpu" and N >= WIDE else torch.tanh
        self.addmm = torch.baddbmm if lay.blocks > 1 else torch.addmm
        self.h, self.c, self.tmp = lay.new(L, N, S), lay.new(L, N, S), lay.new(N, S)
        self.h_m = self.h if lay.mm == lay.dtype else lay.new(L, N, S, dtype=lay.mm)
        emb = model.embedding.weight if model.embedding is not None else None
        # divided by 1 / scale, as sampling at temperature T always divided by T: in float32,
        # 1 / (1 / T) rounds to T, so seeded texts stay what they were (and an infinite
        # temperature, scale 0, divides by infinity: uniform, as it did)
        T = 1 / scale if scale else math.inf
        plan = cell.fast_plan(lay, (self.h, self.c, self.h_m), emb, model.W_hq / T, model.b_q / T)
        # A_0 = Table[x]; when wide, gathered as columns of the (width, V) transpose
        self.table = plan.table.t().contiguous() if lay.wide else plan.table.contiguous()
        self.lookup = (self.table, 1, plan.A.t()) if lay.wide else (self.table, 0, plan.A)
        self.stages = plan.stages
        self.logits = plan.logits  # (N, V) logits * scale
        # what a step carries to the next, streams first: the states, and what the plan says
        # (the default: R_l, beside the layer's other columns in every layer's matmul output)
        self.carried = [self.h.transpose(0, 1), self.c.transpose(0, 1), *plan.carried]
        self._project()

    def _affine(self, gemm: Affine) -> None:
        bias, x, W, out, out_m, out_b, scale = gemm
        if out_m is None:
            self.addmm(bias, x, W, out=out)
            return
        # a bfloat16 or int8 matmul; the bias added in full precision, where there is one
        if scale is None:
            out.copy_(torch.mm(x, W, out=out_m))
        else:
            torch.mul(torch._int_mm(x, W, out=out_m), scale, out=out)
        if out_b is not None:
            out_b.add_(bias)

    def _quantize(self, h: torch.Tensor, h_m: torch.Tensor, tmp: torch.Tensor) -> None:
        """h_m = h in the matmuls' dtype: bfloat16, or int8 as round(127 h) (tmp: scratch)."""
        if self.int8:
            h_m.copy_(torch.mul(h, H_SCALE, out=tmp).round_())
        else:
            h_m.copy_(h)

    def _project(self) -> None:
        """The matmuls that read the states only (by default every layer's: R_l for the next
        step, and the logits)."""
        for stage in self.stages:
            if stage.on_load:
                self._affine(stage.gemm)

    @torch.inference_mode()
    def load_state(self, state: State) -> None:
        """Start from a state of `CharLM.forward` (batch 1 or N; batch 1 is copied to every row)."""
        h, c = self.cell.split_state(state)  # (L, B, H)
        self.h.copy_(h)
        if c is not None:
            self.c.copy_(c)
        if self.h_m is not self.h:
            self._quantize(self.h, self.h_m, self.h.clone())
        self._project()

    @torch.inference_mode()
    def load_rows(self, rows: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None) -> None:
        """Streams `rows` start from the states h (and c), each (L, len(rows), H); the other
        streams go on as they were (the server's engine: a request joins a running batch).

        The matmuls are run again on every stream, which gives the others back exactly what
        they carried (the same kernel on the same states)."""
        self.h[:, rows] = h
        if c is not None:
            self.c[:, rows] = c
        if self.h_m is not self.h:
            self._quantize(self.h, self.h_m, self.h.clone())
        self._project()

    def rows_state(self, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of the states (h, c) of streams `rows`, each (L, rows, H), for `load_rows`
        of another stepper (c is the memory cell's buffer: zeros for a cell without one)."""
        return self.h[:, rows].clone(), self.c[:, rows].clone()

    @torch.inference_mode()
    def reorder(self, parents: torch.Tensor) -> None:
        """Stream i continues from the state of stream parents[i] (beam search).

        The states and the recurrent terms R_l the last step computed are permuted together,
        so no matmul is run again.
        """
        if self.layout.N == 1:  # the only order there is (and one stream's matmul is in blocks)
            return
        for streams in self.carried:
            streams.copy_(streams.index_select(0, parents))

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N,) ids -> (N, V) logits * scale of the next character (an internal buffer).

        Call it under `torch.inference_mode()` (the buffers are inference tensors): entering the
        mode once per call would cost a few percent of a one-stream step.
        """
        tmp, tanh = self.tmp, self.tanh
        table, axis, A_0 = self.lookup
        torch.index_select(table, axis, x, out=A_0)
        for op, views, inp, inp_m, gemm, _ in self.stages:
            op(views, tmp, tanh)
            if inp_m is not None:
                self._quantize(inp, inp_m, tmp)
            self._affine(gemm)
        return self.logits
