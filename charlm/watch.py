"""Learning you can watch: what a run shows and writes as it goes, besides its checkpoints.

    every --log-every steps      a training row: the mean loss and gradient norm since the last
    every --eval-every steps     an evaluation on the first --eval-chars characters of the
                                 validation text: a row, and a line on the terminal
    every --sample-steps steps   a sample, into an epoch
    at every epoch end           the full validation's row (the trainer validates), and a sample
                                 every --sample-every epochs and where the run stops

into metrics.jsonl (rows: meter.py), samples.txt, the terminal, and TensorBoard with
--tensorboard. An evaluation scores a fixed part of the validation text, so its points follow
one another; best.pt is chosen by the full validation only. Evaluations and samples draw no
random number of the training's: a run trains the same weights whatever they are set to.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch

from charlm import distributed
from charlm.config import TrainConfig
from charlm.evaluate import validate
from charlm.generate import generate
from charlm.meter import Progress, eval_row, train_row
from charlm.progress import eval_summary
from charlm.run import RunFolder
from charlm.tensorboard import Board, writer_class
from charlm.vocab import Vocab

# an evaluation scores streams of at least this many characters (at most --batch-size of
# them): each stream starts with no state, and a short one would score mostly that cold start;
# a step of each stream reads all the weights, so fewer, longer streams would cost more
EVAL_STREAM_CHARS = 256
SAMPLE_TEMPERATURE = 0.8


def eval_part(cfg: TrainConfig, val_ids: np.ndarray) -> tuple[np.ndarray, int]:
    """The part of the validation text an evaluation scores, and in how many streams."""
    part = val_ids[: cfg.eval_chars]
    return part, max(1, min(cfg.batch_size, len(part) // EVAL_STREAM_CHARS))


def sample_text(model: torch.nn.Module, vocab: Vocab, cfg: TrainConfig, seed: int) -> str:
    """A sample of --sample-length characters at temperature 0.8, after a newline."""
    prefix = "\n" if "\n" in vocab.chars else ""
    return generate(
        model, vocab, prefix, cfg.sample_length, temperature=SAMPLE_TEMPERATURE, seed=seed
    )[0]


class Watch:
    """What one run shows as it goes: its rows, evaluations and samples of the model it is
    handed (on every rank alike, written by rank 0)."""

    def __init__(
        self,
        cfg: TrainConfig,
        folder: RunFolder,
        vocab: Vocab,
        val_ids: np.ndarray,
        steps_per_epoch: int,
        dist: distributed.Context,
        say: Callable[[str], None],
    ) -> None:
        if cfg.tensorboard:
            writer_class()  # a missing package is one line, before any work
        self.cfg, self.folder, self.vocab, self.say = cfg, folder, vocab, say
        self.E, self.dist = steps_per_epoch, dist
        self.eval_ids, self.eval_streams = eval_part(cfg, val_ids)
        self.draws = bool(cfg.sample_every) and dist.is_main
        self.board: Board | None = None

    def start(self, settings: dict[str, Any]) -> None:
        """The run begins: its TensorBoard log opens, with the settings as hparams."""
        if self.cfg.tensorboard and self.dist.is_main:
            self.board = Board(self.cfg.tensorboard)
            self.board.settings(settings)

    def costs(self, model: torch.nn.Module) -> tuple[tuple[int, int], Callable[[], None] | None]:
        """What a budget measures of the watching: an evaluation's (characters, streams), and
        a function drawing a sample (None where this process draws none)."""
        chars = len(self.eval_ids) if self.cfg.eval_every and len(self.eval_ids) >= 2 else 0
        draw = partial(sample_text, model, self.vocab, self.cfg, self.cfg.seed)
        return (chars, self.eval_streams), draw if self.draws else None

    def row(self, row: dict[str, Any]) -> None:
        """A row into metrics.jsonl, and TensorBoard."""
        self.folder.append_row(row)
        if self.board:
            self.board.row(row)

    def train_row(self, p: Progress, lr: float) -> None:
        """The training row of the steps since the last one (the meter folded into `p`)."""
        self.row(train_row(p, lr, self.cfg.seq_len * self.cfg.batch_size, self.E))

    def due(self, p: Progress) -> bool:
        """Whether an evaluation or a sample is due after this step (never at an epoch end:
        the full validation and its sample are there)."""
        return p.batch < self.E and (self._evaluates(p) or self._samples(p))

    def _evaluates(self, p: Progress) -> bool:
        every = self.cfg.eval_every
        return bool(every) and p.step % every == 0 and len(self.eval_ids) >= 2

    def _samples(self, p: Progress) -> bool:
        every = self.cfg.sample_steps
        return self.draws and bool(every) and p.batch % every == 0

    def between(self, model: torch.nn.Module, p: Progress, lr: float) -> None:
        """The evaluation and the sample due after this step (`due`)."""
        if self._evaluates(p):
            val_loss = validate(
                model, self.eval_ids, self.cfg.seq_len, self.eval_streams, self.dist
            )
            if val_loss is not None and math.isfinite(val_loss):
                row = eval_row(p, val_loss, lr, len(self.eval_ids), self.E)
                self.row(row)
                self.say(eval_summary(row))
        if self._samples(p):
            heading = f"step {p.step} ({p.epochs(self.E):.2f} epochs)"
            self.sample(model, heading, self.cfg.seed + p.step, p.step)

    def epoch_end(self, model: torch.nn.Module, row: dict[str, Any]) -> None:
        """The epoch row's sample: every --sample-every epochs, and where the run stops."""
        epoch = row["epoch"]
        if self.draws and (epoch % self.cfg.sample_every == 0 or row["partial"]):
            self.sample(model, f"epoch {epoch}", self.cfg.seed + epoch, row["step"], "after ")

    def sample(
        self, model: torch.nn.Module, heading: str, seed: int, step: int, after: str = "at "
    ) -> None:
        """Draw a sample (rank 0), write it to samples.txt and TensorBoard, and show it."""
        text = sample_text(model, self.vocab, self.cfg, seed)
        self.folder.append_sample(heading, text)
        if self.board:
            self.board.sample(step, heading, text)
        self.say(f"--- sample {after}{heading} ---\n{text.strip()}\n---")

    def close(self) -> None:
        if self.board:
            self.board.close()
            self.board = None
