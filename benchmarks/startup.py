"""Start-up of a cached run: the seconds from `Trainer(cfg)` to the end of its first step, on a
small and on a large corpus (both already in the encoded cache), and what the random sampler's
first batch costs with the epoch's order written out (layout 2) and drawn on demand (layout 3).

    CHARLM_DATA=../shared/corpora python -m benchmarks.startup --mb 100

The texts are tiny Shakespeare repeated to the size asked for; the cache lives in a temporary
folder. Each time is the median of --rounds runs in this process (the corpus read from its
cache each time), so read the ratios: a shared machine moves the seconds.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

from charlm.config import TrainConfig
from charlm.inputs import load_corpus
from charlm.samplers import LAYOUT, RandomSampler
from charlm.train import Callback, Trainer

ROOT = Path(__file__).resolve().parent.parent
TRAIN = importlib.import_module("charlm.train")  # the module (charlm.train is the function)
SOURCE = Path(os.environ.get("CHARLM_DATA", ROOT.parent / "shared" / "corpora"))


class FirstStep(Callback, Exception):
    """Ends a run at its first step (raised from on_step), stamping the time."""

    def on_step(self, trainer: Trainer) -> None:
        self.at = time.perf_counter()
        raise self


def corpus_of(mb: float, folder: Path) -> Path:
    """Tiny Shakespeare repeated to `mb` MB, encoded into the cache once (not timed)."""
    text = (SOURCE / "tinyshakespeare.txt").read_text(encoding="utf-8")
    path = folder / f"text-{mb:g}mb.txt"
    path.write_text(text * max(1, round(mb * 1e6 / len(text))), encoding="utf-8")
    load_corpus(path, in_memory_below=0)
    return path


def to_first_step(path: Path, out: Path, seq_len: int) -> float:
    """Seconds from Trainer() (the corpus read from its cache) to the end of the first step."""
    cfg = TrainConfig(corpus=str(path), out=str(out), seq_len=seq_len, hidden_size=64,
                      val_fraction=0.001, max_steps=1, sample_every=0, device="cpu")  # fmt: skip
    start, stop = time.perf_counter(), FirstStep()
    trainer = Trainer(cfg, progress_bar=False, overwrite=True, callbacks=[stop])
    try:
        trainer.run()
    except FirstStep:
        return stop.at - start
    raise AssertionError("the run ended before its first step")


def first_batch(path: Path, seq_len: int, layout: int) -> float:
    """Seconds from a sampler over the cached text to its first batch."""
    ids = load_corpus(path, in_memory_below=0).ids
    start = time.perf_counter()
    next(RandomSampler(ids, seq_len, 32, seed=1, layout=layout).batches(0))
    return time.perf_counter() - start


def median(fn, rounds: int) -> float:
    return statistics.median(fn() for _ in range(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=100, help="size of the large corpus")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seq-len", type=int, default=35, help="35: the textbook's windows")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="charlm-startup-") as tmp:
        os.environ["CHARLM_CACHE"] = str(Path(tmp) / "cache")
        small, large = corpus_of(1, Path(tmp)), corpus_of(args.mb, Path(tmp))
        windows = (len(load_corpus(large, in_memory_below=0).ids) - 1) // args.seq_len
        print(f"{args.mb:g} MB: {windows:,} windows of {args.seq_len}; median of {args.rounds}")
        for layout in (2, 3):
            took = median(partial(first_batch, large, args.seq_len, layout), args.rounds)
            print(f"  random sampler, layout {layout}: first batch in {took:.3f} s")
        for path, size, layout in ((small, "1 MB", 3), (large, f"{args.mb:g} MB", 3),
                                   (large, f"{args.mb:g} MB", 2)):  # fmt: skip
            TRAIN.LAYOUT = layout  # a fresh run's order
            took = median(
                partial(to_first_step, path, Path(tmp) / "run", args.seq_len), args.rounds
            )
            print(f"  Trainer() to the end of step 1, {size}, layout {layout}: {took:.3f} s")
        TRAIN.LAYOUT = LAYOUT


if __name__ == "__main__":
    main()
