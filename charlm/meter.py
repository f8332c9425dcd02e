"""Where a run stands, and its loss bookkeeping.

`Progress` is saved in every checkpoint, so --resume continues exactly. `LossMeter` keeps the
loss and gradient-norm sums on the device, so a training step never waits for the host; they
are folded into Progress (as global means over all ranks, and checked for NaN) every
--log-every steps, whenever a checkpoint is written and at the end of an epoch.

A run's rows in metrics.jsonl (run.py reads them back):

    kind "train"  every --log-every steps: the mean loss and gradient norm since the last one
    kind "eval"   every --eval-every steps: the loss on the first --eval-chars characters of
                  the validation text
    kind "epoch"  at every epoch end, and where a run stops mid-epoch (`partial`): the epoch's
                  mean training loss and the loss on the whole validation text

Every row has its step, `epoch` (the epoch it falls in, from 1), `epochs` (passes over the
training text done, a fraction), `elapsed_s` and the learning rate `lr`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch

from charlm import distributed
from charlm.config import TrainConfig
from charlm.errors import CharLMError, flag
from charlm.metrics import DIVERGED, bits, perplexity
from charlm.schema import Float, Int, Record, check


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint so that --resume continues exactly."""

    epoch: int = 0  # the epoch in progress (0-based)
    batch: int = 0  # the next batch of that epoch
    step: int = 0  # optimizer steps in all
    elapsed_s: float = 0.0  # training wall time in all, resumed runs included
    best_val_loss: float = math.inf
    # sums over the batches done so far in the current epoch
    epoch_loss: float = 0.0
    epoch_grad_norm: float = 0.0
    epoch_batches: int = 0
    epoch_time_s: float = 0.0
    # the steps the LR schedule spans: a --time-budget's plan, and its revisions (0: none yet)
    planned_steps: int = 0
    # sums over the steps since the last training row (kind "train" in metrics.jsonl)
    window_loss: float = 0.0
    window_grad_norm: float = 0.0
    window_batches: int = 0
    window_time_s: float = 0.0

    @classmethod
    def from_record(cls, record: object, source: str) -> Progress:
        """The progress a checkpoint records, checked as declared by the fields: counters
        whole numbers in [0, 2**62], times and sums finite and >= 0 (the best validation
        loss may be infinite: none yet); a field an older run lacks takes its default."""
        counts, amounts = Int(0, 2**62), Float(0)
        spec = {f.name: counts if isinstance(f.default, int) else amounts for f in fields(cls)}
        spec["best_val_loss"] = Float(0, inf=True)
        return cls(**check(Record({}, spec), record, source))

    def count_step(self, seconds: float) -> None:
        self.batch, self.step, self.epoch_batches = (
            self.batch + 1,
            self.step + 1,
            self.epoch_batches + 1,
        )
        self.window_batches += 1
        self.epoch_time_s += seconds
        self.window_time_s += seconds
        self.elapsed_s += seconds

    def epochs(self, steps_per_epoch: int) -> float:
        """Passes over the training text done: 2.5 is half-way through the third."""
        return self.epoch + self.batch / max(1, steps_per_epoch)

    def chars_per_s(self, chars_per_batch: int) -> float:
        """Training speed over the epoch so far."""
        return self.epoch_batches * chars_per_batch / max(self.epoch_time_s, 1e-9)

    def seconds_left(self, budget_s: float, steps_per_epoch: int) -> float:
        """Of the --time-budget if there is one (it stops the run), else of the epoch."""
        if budget_s:
            return budget_s - self.elapsed_s
        return (steps_per_epoch - self.batch) * self.epoch_time_s / max(1, self.epoch_batches)

    def keep_best(self, val_loss: float | None) -> bool:
        """Whether `val_loss` is the best validation so far (then kept: best.pt is written)."""
        best = val_loss is not None and val_loss < self.best_val_loss
        if best:
            self.best_val_loss = val_loss
        return best

    def next_epoch(self) -> None:
        self.epoch, self.batch = self.epoch + 1, 0
        self.epoch_loss = self.epoch_grad_norm = self.epoch_time_s = 0.0
        self.epoch_batches = 0


class LossMeter:
    """The epoch's running sums of loss and gradient norm, on the device until read."""

    def __init__(
        self, p: Progress, device: torch.device, cfg: TrainConfig, vocab_size: int
    ) -> None:
        self.p = p
        self.advice = (  # what to change when the loss diverges
            f"Lower {flag('lr')} (now {cfg.lr}) or set {flag('clip')} (now {cfg.clip}); the "
            f"last good checkpoint in {cfg.out} is kept"
        )
        # a uniform guess costs ln V per character: a mean DIVERGED times that has diverged
        self.uniform = math.log(max(vocab_size, 2))
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.grad_norm = torch.zeros((), dtype=torch.float64, device=device)
        self.batches = 0  # since the last fold

    def add(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        self.loss += loss
        self.grad_norm += grad_norm
        self.batches += 1

    def check(self) -> None:
        """Read the sum (a host sync): stop every rank, or none, once it is not finite or its
        mean is over DIVERGED times the loss of a uniform guess."""
        counted = torch.tensor(float(self.batches), dtype=torch.float64, device=self.loss.device)
        total, batches = distributed.all_reduce_sum(torch.stack([self.loss, counted])).tolist()
        mean = total / max(batches, 1.0)
        if not math.isfinite(total):
            raise CharLMError(
                f"the loss became {total} by step {self.p.step}: training diverged. {self.advice}"
            )
        if mean > DIVERGED * self.uniform:
            raise CharLMError(
                f"the loss reached {mean:.4g} nats per character by step {self.p.step}, over "
                f"{DIVERGED} times that of a uniform guess ({self.uniform:.3g}): training "
                f"diverged. {self.advice}"
            )

    def mean(self) -> float:
        """The epoch's mean loss so far, for the progress bar (this rank's batches)."""
        return (self.p.epoch_loss + float(self.loss)) / max(1, self.p.epoch_batches)

    def fold(self) -> None:
        """Move the sums into Progress as global means (resumable with any world size).

        Nothing to move since the last fold (the epoch end's checkpoint): no collective, no
        host sync. Every rank has taken the same steps, so every rank returns here alike."""
        if self.batches == 0:
            return
        distributed.average_(self.loss, self.grad_norm)
        self.check()
        loss, grad_norm = float(self.loss), float(self.grad_norm)
        self.p.epoch_loss += loss
        self.p.epoch_grad_norm += grad_norm
        self.p.window_loss += loss
        self.p.window_grad_norm += grad_norm
        self.loss.zero_()
        self.grad_norm.zero_()
        self.batches = 0


def _at(p: Progress, kind: str, steps_per_epoch: int, lr: float) -> dict[str, Any]:
    """What every row begins with: its kind and where the run stands."""
    return {
        "kind": kind,
        "epoch": p.epoch + 1,
        "epochs": p.epochs(steps_per_epoch),
        "step": p.step,
        "elapsed_s": p.elapsed_s,
        "lr": lr,
    }


def epoch_row(
    p: Progress,
    val_loss: float | None,
    lr: float,
    chars_per_batch: int,
    partial: bool,
    steps_per_epoch: int,
) -> dict[str, Any]:
    """The metrics.jsonl row of the epoch that `p` has just finished (or stopped in)."""
    train_loss = p.epoch_loss / max(1, p.epoch_batches)
    return {
        **_at(p, "epoch", steps_per_epoch, lr),
        "train_loss": train_loss,
        "train_ppl": perplexity(train_loss),
        "val_loss": val_loss,
        "val_ppl": None if val_loss is None else perplexity(val_loss),
        "val_bpc": None if val_loss is None else bits(val_loss),
        "grad_norm": p.epoch_grad_norm / max(1, p.epoch_batches),
        "chars_per_sec": p.chars_per_s(chars_per_batch),
        "partial": partial,
    }


def train_row(p: Progress, lr: float, chars_per_batch: int, steps_per_epoch: int) -> dict[str, Any]:
    """The row of the steps since the last one (the meter folded into `p` first); the window
    starts afresh."""
    n = max(1, p.window_batches)
    loss = p.window_loss / n
    row = {
        **_at(p, "train", steps_per_epoch, lr),
        "train_loss": loss,
        "train_ppl": perplexity(loss),
        "train_bpc": bits(loss),
        "grad_norm": p.window_grad_norm / n,
        "chars_per_sec": p.window_batches * chars_per_batch / max(p.window_time_s, 1e-9),
    }
    p.window_loss = p.window_grad_norm = p.window_time_s = 0.0
    p.window_batches = 0
    return row


def eval_row(
    p: Progress, val_loss: float, lr: float, chars: int, steps_per_epoch: int
) -> dict[str, Any]:
    """The row of an evaluation on the first `chars` characters of the validation text."""
    return {
        **_at(p, "eval", steps_per_epoch, lr),
        "val_loss": val_loss,
        "val_ppl": perplexity(val_loss),
        "val_bpc": bits(val_loss),
        "chars": chars,
    }
