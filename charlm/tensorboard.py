"""TensorBoard logging (`--tensorboard DIR`): what a run writes to metrics.jsonl and samples.txt,
also as TensorBoard events, through torch.utils.tensorboard's SummaryWriter.

    train/loss, train/perplexity, train/bits,      every --log-every steps: the mean since the
    train/lr, train/grad_norm, train/chars_per_s   last training row
    eval/loss, eval/perplexity, eval/bits          every --eval-every steps: the first
                                                   --eval-chars characters of the validation text
    val/loss, val/perplexity, val/bits,            at epoch ends (and where a run stops): the
    epoch/train_loss, epoch/grad_norm, ...         whole validation text, the epoch's means
    samples                                        text, at the step it was drawn
    hparams                                        every setting of the run, as it was settled

The x axis is the step. The tensorboard package is an optional extra, imported only when
asked for: `pip install tensorboard` (in a clone of charlm: `pip install -e ".[tensorboard]"`).
"""

from __future__ import annotations

import os
from typing import Any

from charlm.errors import CharLMError
from charlm.metrics import bits

INSTALL = 'pip install tensorboard (in a clone of charlm: pip install -e ".[tensorboard]")'
# the fields of each kind of metrics row (meter.py) and the scalar each becomes
SCALARS = {
    "train": {
        "train_loss": "train/loss", "train_ppl": "train/perplexity", "train_bpc": "train/bits",
        "lr": "train/lr", "grad_norm": "train/grad_norm", "chars_per_sec": "train/chars_per_s",
    },
    "eval": {"val_loss": "eval/loss", "val_ppl": "eval/perplexity", "val_bpc": "eval/bits"},
    "epoch": {
        "val_loss": "val/loss", "val_ppl": "val/perplexity", "val_bpc": "val/bits",
        "train_loss": "epoch/train_loss", "train_ppl": "epoch/train_perplexity",
        "train_bpc": "epoch/train_bits", "grad_norm": "epoch/grad_norm",
        "chars_per_sec": "epoch/chars_per_s",
    },
}  # fmt: skip


def writer_class() -> Any:
    """torch's SummaryWriter; without the tensorboard package, one line saying how to get it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise CharLMError(
            f"--tensorboard needs the tensorboard package, which is not installed: {INSTALL}"
        ) from None
    return SummaryWriter


class Board:
    """The events of one run in a TensorBoard log folder (a resumed run adds to them)."""

    def __init__(self, logdir: str | os.PathLike[str]) -> None:
        try:
            self.writer = writer_class()(log_dir=os.fspath(logdir))
        except OSError as e:
            raise CharLMError(f"cannot write to --tensorboard {logdir}: {e.strerror}") from None

    def settings(self, settings: dict[str, Any]) -> None:
        """The run's settings as hparams (a sequence as its words, nothing left out)."""
        from torch.utils.tensorboard.summary import hparams

        shown = {k: " ".join(v) if isinstance(v, tuple | list) else v for k, v in settings.items()}
        metrics = dict.fromkeys(("val/loss", "eval/loss", "train/loss"), 0.0)
        for summary in hparams(shown, metrics):
            self.writer.file_writer.add_summary(summary)

    def row(self, row: dict[str, Any]) -> None:
        """A metrics.jsonl row as scalars at its step (no value, no scalar)."""
        values = dict(row)
        if row["kind"] == "epoch" and row.get("train_loss") is not None:
            values["train_bpc"] = bits(row["train_loss"])
        for field, tag in SCALARS[row["kind"]].items():
            if values.get(field) is not None:
                self.writer.add_scalar(tag, values[field], row["step"])

    def sample(self, step: int, heading: str, text: str) -> None:
        """A sample as text (Markdown: indented, so shown as written)."""
        block = "\n".join("    " + line for line in text.strip().splitlines())
        self.writer.add_text("samples", f"{heading}\n\n{block}", step)

    def close(self) -> None:
        self.writer.close()
