"""The rows of the table: charlm's training, generation and corpus loading, each beside its
plain PyTorch reference (references.py) or against its target.

Rows marked amp run charlm with --amp (bfloat16 matmuls) and compare with the bfloat16 matmul
rate; their nn.* references run under the same autocast, the textbook loop as the textbook
writes it (float32). The --int8 generation row compares with the int8 matmul rate (GOP/s).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import charlm
from benchmarks.harness import Row, measure_ceilings, ratio_row
from benchmarks.loadtime import in_child
from benchmarks.references import plain_generate, plain_loop, textbook_rnn
from charlm import CharLM, ModelConfig, TrainConfig, load_corpus
from charlm.resources import parameters

SGD = {"optimizer": "sgd", "lr": 1.0, "clip": 1.0, "lr_schedule": "constant"}  # the textbook's


def zipf_corpus(path: Path, n_chars: int, vocab: int = 1000, seed: int = 0) -> Path:
    """A text of `vocab` distinct CJK characters with Zipf-like frequencies (each at least once)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1)
    ids = np.concatenate([np.arange(vocab), rng.choice(vocab, n_chars - vocab, p=p / p.sum())])
    path.write_text("".join(chr(0x4E00 + i) for i in ids), encoding="utf-8")
    return path


def charlm_train_rate(corpus: Path, work: Path, steps: int, **settings) -> Callable[[], float]:
    """chars/s of `steps` steps of charlm's own training loop (its timer: training steps only,
    the epoch's chars/s of the one metrics row); no dropout, as the references have none."""

    def measure() -> float:
        cfg = TrainConfig(
            corpus=str(corpus),
            out=tempfile.mkdtemp(prefix="run", dir=work),
            val_fraction=0.0,
            sample_every=0,
            epochs=10**6,
            max_steps=steps,
            **{"dropout": 0.0, **settings},
        )
        return charlm.train(cfg, progress_bar=False).last_row["chars_per_sec"]

    return measure


def charlm_generate(
    model: CharLM, vocab: charlm.Vocab, length: int, num_samples: int, **precision: bool
) -> Callable[[], float]:
    """chars/s (all samples together) of `charlm.generate` at temperature 0.8."""

    def measure() -> float:
        t0 = time.perf_counter()
        charlm.generate(
            model, vocab, "\n", length, num_samples=num_samples, temperature=0.8, seed=0,
            **precision,
        )  # fmt: skip
        return length * num_samples / (time.perf_counter() - t0)

    return measure


def training_rows(args: argparse.Namespace, work: Path, device: str, amp: bool) -> list[Row]:
    """charlm's training loop against the textbook loop and the nn.* loops, on `device`."""
    suffix = f" [{device}{' amp' if amp else ''}]"
    ceiling = "cpu bfloat16" if amp and device == "cpu" else f"{device} float32"
    common = {"device": device, "amp": amp}
    return rnn_rows(args, work, common, suffix, ceiling) + gated_rows(
        args, work, common, suffix, ceiling
    )


def rnn_rows(
    args: argparse.Namespace, work: Path, common: dict, suffix: str, ceiling: str
) -> list[Row]:
    """The hand-written RNN on 1,000 CJK characters: against the textbook loop and nn.RNN."""
    V, H, T, B, E = 1000, 256, 35, 32, 64
    device, amp = common["device"], common["amp"]
    cjk = zipf_corpus(work / "cjk.txt", 60_000 if args.quick else 400_000)
    ids = load_corpus(cjk).ids
    steps = 8 if args.quick else 40
    shape = {"model": "rnn", "hidden_size": H, "seq_len": T, "batch_size": B,
             "sampler": "consecutive", **SGD, **common}  # fmt: skip
    rnn_flops = 6 * (H * H + H * V)  # recurrence + output layer; one-hot input is a row lookup
    return [
        ratio_row(
            f"rnn one-hot V=1000 H=256 vs textbook loop (float32){suffix}",
            charlm_train_rate(cjk, work, steps, embedding_dim=0, **shape),
            textbook_rnn(ids, V, H, T, B, steps, device),
            3.0, rnn_flops, ceiling, args.rounds,
        ),
        ratio_row(
            f"rnn emb 64 H=256 vs nn.RNN{suffix}",
            charlm_train_rate(cjk, work, steps, embedding_dim=E, init="pytorch", **shape),
            plain_loop("rnn", ids, V, E, H, T, B, steps, device, "sgd", 1.0, amp),
            0.9, 6 * (E * H + H * H + H * V), ceiling, args.rounds,
        ),
    ]  # fmt: skip


def gated_rows(
    args: argparse.Namespace, work: Path, common: dict, suffix: str, ceiling: str
) -> list[Row]:
    """LSTM and GRU on the English corpus: against the nn.LSTM / nn.GRU training loop."""
    text_ids = load_corpus(args.corpus).ids
    V, E, H, T, B = int(text_ids.max()) + 1, 64, 512, 128, 32
    steps = 3 if args.quick else 12
    rows = []
    for cell, gates in (("lstm", 4), ("gru", 3)):
        rows.append(
            ratio_row(
                f"{cell} emb 64 H=512 T=128 B=32 vs nn.{cell.upper()} loop{suffix}",
                charlm_train_rate(
                    Path(args.corpus), work, steps, model=cell, embedding_dim=E, hidden_size=H,
                    seq_len=T, batch_size=B, sampler="consecutive", optimizer="adam", lr=3e-3,
                    clip=1.0, **common,
                ),
                plain_loop(
                    cell, text_ids, V, E, H, T, B, steps, common["device"], "adam", 3e-3,
                    common["amp"],
                ),
                0.95, 6 * (gates * H * (E + H) + H * V), ceiling, args.rounds,
            )
        )  # fmt: skip
    return rows


# the min cells in the rows, each at about the LSTM default's parameter count (954,433 on tiny
# Shakespeare: 1 x 448 units, embedding 64): (layers, hidden size)
PARALLEL = {"mingru": (2, 192), "minlstm": (2, 184)}


def matrix_flops(cfg: ModelConfig) -> int:
    """6 x the model's matrix entries but the embedding's: the matmul work of a training step
    per character (forward 2, backward 4)."""
    model = CharLM(cfg)
    return 6 * sum(
        p.numel() for name, p in model.named_parameters() if p.dim() > 1 and "embedding" not in name
    )


def parallel_rows(args: argparse.Namespace, work: Path, device: str, amp: bool) -> list[Row]:
    """The min cells against charlm's own LSTM default (1 x 448) at about its parameter count,
    side by side in one run, at the default window (T=128, B=32): training chars/s."""
    V = int(load_corpus(args.corpus).ids.max()) + 1
    suffix = f" [{device}{' amp' if amp else ''}]"
    ceiling = "cpu bfloat16" if amp and device == "cpu" else f"{device} float32"
    steps = 3 if args.quick else 12
    window = {"seq_len": 128, "batch_size": 32, "embedding_dim": 64, "device": device, "amp": amp}
    lstm_cfg = ModelConfig(V, "lstm", 448, 1, embedding_dim=64)
    lstm_flops = matrix_flops(lstm_cfg)
    lstm = charlm_train_rate(
        Path(args.corpus), work, steps, model="lstm", hidden_size=448, **window
    )
    rows = []
    for kind, (L, H) in PARALLEL.items():
        cfg = ModelConfig(V, kind, H, L, embedding_dim=64)
        row = ratio_row(
            f"{kind} {L}x{H} vs lstm 1x448 ({parameters(cfg):,} vs {parameters(lstm_cfg):,} "
            f"parameters) T=128 B=32{suffix}",
            charlm_train_rate(
                Path(args.corpus), work, steps, model=kind, hidden_size=H, num_layers=L, **window
            ),
            lstm, 1.5, matrix_flops(cfg), ceiling, args.rounds,
        )  # fmt: skip
        row.ref_gflops = row.reference * lstm_flops / 1e9  # the LSTM's own matmul work
        rows.append(row)
    return rows


def default_model(corpus: charlm.Corpus, device: str) -> CharLM:
    """The model `charlm train` makes by default for this corpus, freshly initialised (seed 0)."""
    torch.manual_seed(0)
    return CharLM(ModelConfig(len(corpus.vocab))).to(device)  # its defaults are TrainConfig's


def generation_rows(args: argparse.Namespace, device: str, amp: bool = False) -> list[Row]:
    """One stream against the nn.LSTM step loop; 32 streams (float32, --amp, --int8) against
    one stream."""
    corpus = load_corpus(args.corpus)
    model = default_model(corpus, device)
    V, E, H = model.cfg.vocab_size, model.cfg.embedding_dim, model.cfg.hidden_size
    flops = 2 * (4 * H * (E + H) + H * V)
    length = 100 if args.quick else 2000
    suffix, ceiling = f" [{device}]", f"{device} float32"
    single = charlm_generate(model, corpus.vocab, length, 1)
    rows = [
        ratio_row(
            f"generate 1 stream vs nn.LSTM step loop{suffix}",
            single, plain_generate(V, E, H, length, device), 5.0, flops, ceiling, args.rounds,
        )
    ]  # fmt: skip
    batches = [("", {}, ceiling)]
    if amp:  # the same, with --amp (bfloat16 matmuls for the 32 streams)
        batches.append((" --amp", {"amp": True}, "cpu bfloat16"))
    if device == "cpu":  # the same, with --int8 (int8 matmuls for the 32 streams)
        batches.append((" --int8", {"int8": True}, "cpu int8"))
    for flag, precision, ceil in batches:
        row = ratio_row(
            f"generate 32 streams{flag} (aggregate) vs 1 stream{suffix}",
            charlm_generate(model, corpus.vocab, length, 32, **precision), single, 10.0, flops,
            ceil, args.rounds,
        )  # fmt: skip
        row.ref_gflops = None  # the reference is charlm's own single stream
        rows.append(row)
    return rows


def corpus_file(seed: bytes, path: Path, mb: int) -> Path:
    """`mb` MB of `seed` repeated (the last copy cut short), written to `path`."""
    with open(path, "wb") as f:
        written, want = 0, mb * 1_000_000
        while written < want:
            piece = seed[: want - written]
            f.write(piece)
            written += len(piece)
    return path


def corpus_rows(args: argparse.Namespace, work: Path) -> list[Row]:
    """Prepare 10 MB / 100 MB / 1 GB copies of the corpus: speed, memory, start-up from cache."""
    seed = Path(args.corpus).read_bytes()
    sizes = [int(float(mb)) for mb in args.sizes.split(",")] if args.sizes else [10]
    if not args.sizes and not args.quick:
        sizes = [10, 100, 1000]
    rows = []
    for mb in sizes:
        folder = work / f"big{mb}"
        folder.mkdir()
        path = corpus_file(seed, folder / f"corpus{mb}mb.txt", mb)
        # the first call (no cache yet) in `rounds` fresh processes, each with an empty cache
        # folder; the median counts. The second call opens the last one's cache.
        firsts = [in_child("corpus", path, folder / f"cache{i}") for i in range(args.rounds)]
        first = sorted(firsts, key=lambda r: r["seconds"])[len(firsts) // 2]
        second = in_child("corpus", path, folder / f"cache{args.rounds - 1}")
        mb_s = mb / first["seconds"]
        rows.append(
            Row(
                name=f"load_corpus {mb} MB: first call",
                target=">= 100 MB/s, peak RSS < 1.5 GB",
                charlm=mb_s,
                unit="MB/s",
                passed=mb_s >= 100 and first["peak_rss_mb"] < 1536,
                extra={"size_mb": mb, "first": first, "second": second,
                       "first_seconds": [r["seconds"] for r in firsts]},
            )
        )  # fmt: skip
        rows.append(
            Row(
                name=f"load_corpus {mb} MB: second call (cache)",
                target="< 3 s",
                charlm=second["seconds"],
                unit="s",
                passed=second["seconds"] < 3,
                extra={"size_mb": mb, "peak_rss_mb": second["peak_rss_mb"]},
            )
        )
        shutil.rmtree(folder)  # the file and its caches
    return rows


def cuda_rows(args: argparse.Namespace, work: Path, rates: dict[str, float]) -> list[Row]:
    """The training and generation rows again on the GPU, and training with --amp."""
    if not torch.cuda.is_available():
        return [Row(name="cuda rows", target="-", skipped="no CUDA device")]
    measure_ceilings(rates, ["cuda float32"], 1.0)
    rows = training_rows(args, work, "cuda", amp=False)
    rows += training_rows(args, work, "cuda", amp=True)
    rows += parallel_rows(args, work, "cuda", amp=False) + parallel_rows(args, work, "cuda", True)
    rows += generation_rows(args, "cuda")
    measure_ceilings(rates, ["cuda float32"], 1.0)
    return rows
