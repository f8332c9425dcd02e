"""charlm against plain PyTorch, side by side in one run: training, generation, big corpora.

    python benchmarks/bench.py                 # every row (the 1 GB corpus row takes minutes)
    python benchmarks/bench.py --quick         # small sizes, well under a minute (CI)
    python benchmarks/bench.py --json out.json --corpus tinyshakespeare.txt
    python benchmarks/bench.py --learning      # validation loss of --time-budget 30, 60, 180
    python benchmarks/bench.py --dynamic runs/charlm   # bits/char with and without --dynamic

Every speed target is a ratio of two loops measured in the same process, alternating
charlm / reference round by round (the median round counts), so a busy or slow machine moves
both sides together. The reference loops are written here in plain PyTorch, the way a tutorial
writes them. FLOP/s columns count the useful matmul work of a character (3x the forward matmuls
for training) against the machine's own matmul rate, measured before and after the rows (the
better of the two counts: one busy second must not make a row look faster than the machine).
Rows marked amp run charlm with --amp (bfloat16 matmuls) and compare with the bfloat16 matmul
rate; their nn.* references run under the same autocast, the textbook loop as the textbook
writes it (float32). The --int8 generation row compares with the int8 matmul rate (GOP/s).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's charlm, installed or not

from charlm.checkpoint import load_model  # noqa: E402
from charlm.config import MODEL_FIELDS  # noqa: E402
from charlm.data import builtin_text, load_corpus  # noqa: E402
from charlm.dynamic import Dynamic  # noqa: E402
from charlm.evaluate import score  # noqa: E402
from charlm.generate import generate  # noqa: E402
from charlm.model import CharLM, ModelConfig  # noqa: E402
from charlm.train import TrainConfig, Trainer  # noqa: E402

DEFAULT_CORPUS = (
    Path(os.environ.get("CHARLM_DATA", ROOT.parent / "shared" / "corpora")) / "tinyshakespeare.txt"
)


@dataclass
class Row:
    """One line of the table. Ratio rows compare charlm with a reference; others a value."""

    name: str
    target: str  # e.g. ">= 3x", ">= 100 MB/s"
    charlm: float | None = None  # chars/s (or the row's unit)
    reference: float | None = None
    unit: str = "chars/s"
    ratio: float | None = None
    passed: bool | None = None
    gflops: float | None = None  # charlm's achieved GFLOP/s
    ref_gflops: float | None = None
    pct_peak: float | None = None  # charlm's GFLOP/s as % of its ceiling's matmul rate
    ceiling: str | None = None  # which matmul rate pct_peak compares with: a key of CEILINGS
    extra: dict = field(default_factory=dict)
    skipped: str | None = None


# --- measuring -------------------------------------------------------------------------------


CEILINGS = {  # name: (device, dtype, n) of the square matmul that measures it
    "cpu float32": ("cpu", torch.float32, 1024),
    "cpu bfloat16": ("cpu", torch.bfloat16, 1024),
    "cpu int8": ("cpu", torch.int8, 1024),  # torch._int_mm: int8 x int8 -> int32 (GOP/s)
    "cuda float32": ("cuda", torch.float32, 4096),
}


def matmul_rate(
    seconds: float = 1.0, n: int = 1024, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> float:
    """GFLOP/s of a large square matmul: the ceiling the FLOP/s columns compare to."""
    if dtype == torch.int8:
        a, b = (torch.randint(-127, 128, (n, n), device=device, dtype=dtype) for _ in range(2))
        mm = torch._int_mm
    else:
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        mm = torch.mm
    for _ in range(3):
        mm(a, b)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        _sync(device)
        t = time.perf_counter()
        for _ in range(5):
            mm(a, b)
        _sync(device)
        best = max(best, 5 * 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def measure_ceilings(rates: dict[str, float], names: list[str], seconds: float) -> None:
    """Raise each named ceiling in `rates` to the best matmul rate measured so far."""
    for name in names:
        device, dtype, n = CEILINGS[name]
        rates[name] = max(rates.get(name, 0.0), matmul_rate(seconds, n, device, dtype))


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def side_by_side(
    ours: Callable[[], float], ref: Callable[[], float], rounds: int
) -> tuple[float, float, float]:
    """Median charlm rate, median reference rate, median of the per-round ratios.

    With several rounds, one more goes first untimed, so that neither side pays the warm-up.
    """
    if rounds > 1:
        ours(), ref()
    a, b = [], []
    for _ in range(rounds):
        a.append(ours())
        b.append(ref())
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return statistics.median(a), statistics.median(b), statistics.median(ratios)


def ratio_row(
    name: str,
    ours: Callable[[], float],
    ref: Callable[[], float],
    target: float,
    flops_per_char: float,
    ceiling: str,
    rounds: int,
) -> Row:
    a, b, ratio = side_by_side(ours, ref, rounds)
    print(f"  {name}: {a:,.0f} vs {b:,.0f} chars/s = {ratio:.2f}x", flush=True)
    gf = a * flops_per_char / 1e9
    return Row(
        name=name,
        target=f">= {target:g}x",
        charlm=a,
        reference=b,
        ratio=ratio,
        passed=ratio >= target,
        gflops=gf,
        ref_gflops=b * flops_per_char / 1e9,
        ceiling=ceiling,
    )


# --- corpora ---------------------------------------------------------------------------------


def zipf_corpus(path: Path, n_chars: int, vocab: int = 1000, seed: int = 0) -> Path:
    """A text of `vocab` distinct CJK characters with Zipf-like frequencies (each at least once)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1)
    ids = np.concatenate([np.arange(vocab), rng.choice(vocab, n_chars - vocab, p=p / p.sum())])
    path.write_text("".join(chr(0x4E00 + i) for i in ids), encoding="utf-8")
    return path


# --- charlm's side: the real training loop ---------------------------------------------------


def charlm_train_rate(corpus: Path, work: Path, steps: int, **settings) -> Callable[[], float]:
    """chars/s of `steps` steps of charlm's own Trainer.run (its timer: training steps only,
    the epoch's chars/s of the one metrics row)."""

    def measure() -> float:
        cfg = TrainConfig(
            corpus=str(corpus),
            out=tempfile.mkdtemp(prefix="run", dir=work),
            val_fraction=0.0,
            sample_every=0,
            epochs=10**6,
            max_steps=steps,
            **settings,
        )
        trainer = Trainer(cfg, progress_bar=False)
        result = trainer.run()
        return result.last_row["chars_per_sec"]

    return measure


# --- the plain PyTorch references ------------------------------------------------------------


def stream_batches(ids: np.ndarray, T: int, B: int, device: str):
    """word_language_model's batchify: B parallel streams, windows of T in order, forever."""
    n = (len(ids) - 1) // B
    data = torch.from_numpy(np.asarray(ids[: n * B + 1], dtype=np.int64))
    X_all = data[:-1].view(B, n).t().contiguous()  # (n, B)
    Y_all = data[1:].view(B, n).t().contiguous()
    while True:
        for i in range(0, n - T + 1, T):
            yield X_all[i : i + T].to(device), Y_all[i : i + T].to(device)


def textbook_rnn(ids: np.ndarray, V: int, H: int, T: int, B: int, steps: int, device: str):
    """Dive into Deep Learning's RNN from scratch: one-hot per step, a Python loop per step."""

    def measure() -> float:
        def param(*shape: int) -> torch.Tensor:
            return (torch.randn(*shape, device=device) * 0.01).requires_grad_()

        W_xh, W_hh, b_h = param(V, H), param(H, H), torch.zeros(H, device=device).requires_grad_()
        W_hq, b_q = param(H, V), torch.zeros(V, device=device).requires_grad_()
        params = [W_xh, W_hh, b_h, W_hq, b_q]
        batches = stream_batches(ids, T, B, device)
        state = torch.zeros(B, H, device=device)
        total = 0.0
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            X, Y = next(batches)
            state = state.detach()
            inputs = F.one_hot(X, V).float()  # (T, B, V)
            outputs = []
            for X_t in inputs:
                state = torch.tanh(X_t @ W_xh + state @ W_hh + b_h)
                outputs.append(state @ W_hq + b_q)
            loss = F.cross_entropy(torch.cat(outputs), Y.reshape(-1))
            for p in params:
                p.grad = None
            loss.backward()
            norm = torch.sqrt(sum(torch.sum(p.grad**2) for p in params))
            if norm > 1.0:  # the textbook's grad_clipping
                for p in params:
                    p.grad[:] *= 1.0 / norm
            with torch.no_grad():
                for p in params:
                    p -= 1.0 * p.grad
            total += loss.item() * Y.numel()  # the textbook's metric.add
        _sync(device)
        return steps * T * B / (time.perf_counter() - t0)

    return measure


class PlainLM(nn.Module):
    """nn.Embedding -> nn.RNN / nn.LSTM / nn.GRU -> nn.Linear: the tutorial model."""

    def __init__(self, cell: str, V: int, E: int, H: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.rnn = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell](E, H)
        self.out = nn.Linear(H, V)

    def forward(self, X, state=None):
        Hs, state = self.rnn(self.emb(X), state)
        return self.out(Hs), state


def plain_loop(
    cell: str,
    ids: np.ndarray,
    V: int,
    E: int,
    H: int,
    T: int,
    B: int,
    steps: int,
    device: str,
    optimizer: str = "adam",
    lr: float = 3e-3,
    amp: bool = False,
):
    """The plain PyTorch training loop (word_language_model style) at charlm's settings."""

    def detach(s):
        return tuple(x.detach() for x in s) if isinstance(s, tuple) else s.detach()

    def measure() -> float:
        model = PlainLM(cell, V, E, H).to(device)
        if optimizer == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        else:
            opt = torch.optim.Adam(model.parameters(), lr=lr)
        batches = stream_batches(ids, T, B, device)
        state = None
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            X, Y = next(batches)
            with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=amp):
                logits, state = model(X, state)
                loss = F.cross_entropy(logits.reshape(-1, V).float(), Y.reshape(-1))
            state = detach(state)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        _sync(device)
        return steps * T * B / (time.perf_counter() - t0)

    return measure


def plain_generate(V: int, E: int, H: int, length: int, device: str):
    """Sampling with nn.LSTM one step at a time (batch 1, seq 1), as tutorials do."""

    def measure() -> float:
        model = PlainLM("lstm", V, E, H).to(device).eval()
        x = torch.zeros(1, 1, dtype=torch.long, device=device)
        state, out = None, []
        t0 = time.perf_counter()
        with torch.no_grad():
            for _ in range(length):
                logits, state = model(x, state)
                probs = torch.softmax(logits[0, 0] / 0.8, dim=-1)
                nxt = int(torch.multinomial(probs, 1))
                out.append(nxt)
                x.fill_(nxt)
        return length / (time.perf_counter() - t0)

    return measure


def charlm_generate(model: CharLM, vocab, length: int, num_samples: int, **precision: bool):
    def measure() -> float:
        t0 = time.perf_counter()
        generate(
            model, vocab, "\n", length, num_samples=num_samples, temperature=0.8, seed=0,
            **precision,
        )  # fmt: skip
        return length * num_samples / (time.perf_counter() - t0)

    return measure


# --- rows ------------------------------------------------------------------------------------


def training_rows(args: argparse.Namespace, work: Path, device: str, amp: bool) -> list[Row]:
    q = args.quick
    suffix = f" [{device}{' amp' if amp else ''}]"
    ceiling = "cpu bfloat16" if amp and device == "cpu" else f"{device} float32"
    common = {"device": device, "amp": amp}
    rows = []

    V, H, T, B = 1000, 256, 35, 32
    cjk = zipf_corpus(work / "cjk.txt", 60_000 if q else 400_000)
    ids = load_corpus(cjk).ids
    steps = 8 if q else 40
    sgd = {"optimizer": "sgd", "lr": 1.0, "clip": 1.0, "lr_schedule": "constant"}
    rnn_flops = 6 * (H * H + H * V)  # recurrence + output layer; one-hot input is a row lookup
    rows.append(
        ratio_row(
            f"rnn one-hot V=1000 H=256 vs textbook loop (float32){suffix}",
            charlm_train_rate(
                cjk, work, steps, model="rnn", embedding_dim=0, hidden_size=H, seq_len=T,
                batch_size=B, sampler="consecutive", **sgd, **common,
            ),
            textbook_rnn(ids, V, H, T, B, steps, device),
            3.0, rnn_flops, ceiling, args.rounds,
        )
    )  # fmt: skip
    E = 64
    rows.append(
        ratio_row(
            f"rnn emb 64 H=256 vs nn.RNN{suffix}",
            charlm_train_rate(
                cjk, work, steps, model="rnn", embedding_dim=E, hidden_size=H, seq_len=T,
                batch_size=B, sampler="consecutive", init="pytorch", **sgd, **common,
            ),
            plain_loop("rnn", ids, V, E, H, T, B, steps, device, "sgd", 1.0, amp),
            0.9, 6 * (E * H + H * H + H * V), ceiling, args.rounds,
        )
    )  # fmt: skip

    text_ids = load_corpus(args.corpus).ids
    V, E, H, T, B = int(text_ids.max()) + 1, 64, 512, 128, 32
    steps = 3 if q else 12
    for cell, gates in (("lstm", 4), ("gru", 3)):
        rows.append(
            ratio_row(
                f"{cell} emb 64 H=512 T=128 B=32 vs nn.{cell.upper()} loop{suffix}",
                charlm_train_rate(
                    Path(args.corpus), work, steps, model=cell, embedding_dim=E, hidden_size=H,
                    seq_len=T, batch_size=B, sampler="consecutive", optimizer="adam", lr=3e-3,
                    clip=1.0, **common,
                ),
                plain_loop(cell, text_ids, V, E, H, T, B, steps, device, "adam", 3e-3, amp),
                0.95, 6 * (gates * H * (E + H) + H * V), ceiling, args.rounds,
            )
        )  # fmt: skip
    return rows


def generation_rows(args: argparse.Namespace, device: str, amp: bool = False) -> list[Row]:
    corpus = load_corpus(args.corpus)
    torch.manual_seed(0)
    defaults = TrainConfig()  # the model `charlm train` makes by default
    cfg = ModelConfig(len(corpus.vocab), **{k: getattr(defaults, k) for k in MODEL_FIELDS})
    model = CharLM(cfg).to(device)
    V, E, H = cfg.vocab_size, cfg.embedding_dim, cfg.hidden_size
    flops = 2 * (4 * H * (E + H) + H * V)
    length = 100 if args.quick else 2000
    suffix = f" [{device}]"
    ceiling = f"{device} float32"
    single = charlm_generate(model, corpus.vocab, length, 1)
    rows = [
        ratio_row(
            f"generate 1 stream vs nn.LSTM step loop{suffix}",
            single, plain_generate(V, E, H, length, device), 5.0, flops, ceiling, args.rounds,
        ),
        ratio_row(
            f"generate 32 streams (aggregate) vs 1 stream{suffix}",
            charlm_generate(model, corpus.vocab, length, 32), single, 10.0, flops, ceiling,
            args.rounds,
        ),
    ]  # fmt: skip
    if amp:  # the same, with --amp (bfloat16 matmuls for the 32 streams)
        rows.append(
            ratio_row(
                f"generate 32 streams --amp (aggregate) vs 1 stream{suffix}",
                charlm_generate(model, corpus.vocab, length, 32, amp=True), single, 10.0, flops,
                "cpu bfloat16", args.rounds,
            )
        )  # fmt: skip
    if device == "cpu":  # the same, with --int8 (int8 matmuls for the 32 streams)
        rows.append(
            ratio_row(
                f"generate 32 streams --int8 (aggregate) vs 1 stream{suffix}",
                charlm_generate(model, corpus.vocab, length, 32, int8=True), single, 10.0, flops,
                "cpu int8", args.rounds,
            )
        )  # fmt: skip
    for row in rows[1:]:
        row.ref_gflops = None
    return rows


CHILD = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[2])
from charlm.data import load_corpus


def peak_mb():
    # VmHWM: this process's own peak RSS. ru_maxrss would also count the parent's RSS at fork
    # time, which Linux carries across exec.
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


before = peak_mb()
t = time.perf_counter()
corpus = load_corpus(sys.argv[1])
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "rss_before_mb": before, "peak_rss_mb": peak_mb(),
                  "chars": int(len(corpus.ids)), "vocab": len(corpus.vocab)}))
"""


def load_in_child(path: Path, cache: Path) -> dict:
    """load_corpus(path) in a fresh process: its time and the process's peak RSS."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(ROOT)],
        capture_output=True,
        text=True,
        env={**os.environ, "CHARLM_CACHE": str(cache)},
    )
    if out.returncode != 0:  # e.g. killed for memory: a failed row, not a failed benchmark
        tail = (out.stderr.strip().splitlines() or [f"exit code {out.returncode}"])[-1]
        return {"seconds": math.inf, "peak_rss_mb": math.inf, "error": tail}
    return json.loads(out.stdout.strip().splitlines()[-1])


def corpus_rows(args: argparse.Namespace, work: Path) -> list[Row]:
    """Prepare 10 MB / 100 MB / 1 GB copies of the corpus: speed, memory, start-up from cache."""
    seed = Path(args.corpus).read_bytes()
    sizes = [int(mb) for mb in args.sizes.split(",")] if args.sizes else [10]
    if not args.sizes and not args.quick:
        sizes = [10, 100, 1000]
    rows = []
    for mb in sizes:
        folder = work / f"big{mb}"
        folder.mkdir()
        path = folder / f"corpus{mb}mb.txt"
        with open(path, "wb") as f:
            written, want = 0, mb * 1_000_000
            while written < want:
                piece = seed[: want - written]
                f.write(piece)
                written += len(piece)
        # the first call (no cache yet) in `rounds` fresh processes, each with an empty cache
        # folder; the median counts. The second call opens the last one's cache.
        firsts = [load_in_child(path, folder / f"cache{i}") for i in range(args.rounds)]
        first = sorted(firsts, key=lambda r: r["seconds"])[len(firsts) // 2]
        second = load_in_child(path, folder / f"cache{args.rounds - 1}")
        mb_s = mb / first["seconds"]
        rows.append(
            Row(
                name=f"load_corpus {mb} MB: first call",
                target=">= 100 MB/s, peak RSS < 1.5 GB",
                charlm=mb_s,
                unit="MB/s",
                passed=mb_s >= 100 and first["peak_rss_mb"] < 1536,
                extra={
                    "size_mb": mb,
                    "first": first,
                    "second": second,
                    "first_seconds": [r["seconds"] for r in firsts],
                },
            )
        )
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


# --- the learning curve ----------------------------------------------------------------------

# validation loss (nats/char) each budget must reach on tiny Shakespeare (issue 20)
TARGETS = {30.0: 1.65, 60.0: 1.55, 180.0: 1.45}


def learning(args: argparse.Namespace, work: Path) -> list[dict]:
    """`charlm train CORPUS --time-budget B` for each budget, every other setting at its
    default: the validation loss that each budget buys (the plan, validation included)."""
    runs = []
    for budget in (float(b) for b in args.budgets.split(",")):
        amp = {} if args.amp == "auto" else {"amp": args.amp}
        cfg = TrainConfig(
            corpus=str(args.corpus), out=str(work / f"learn{budget:g}"), time_budget=budget, **amp
        )
        load = os.getloadavg()[0]
        trainer = Trainer(cfg, progress_bar=False)
        result = trainer.run()
        val = result.last_row["val_loss"]
        target = TARGETS.get(budget)
        run = {
            "budget_s": budget,
            "val_loss": val,
            "elapsed_s": result.progress.elapsed_s,
            "steps": result.progress.step,
            "planned_steps": result.progress.planned_steps,
            "stopped_by": result.stopped_by,
            "amp": trainer.cfg.amp,
            "target": target,
            "pass": None if target is None else val <= target,
            "loadavg_start": load,
            "loadavg_end": os.getloadavg()[0],
        }
        print(json.dumps(run), flush=True)
        runs.append(run)
    return runs


def dynamic_gain(args: argparse.Namespace) -> list[dict]:
    """bits/char of tiny Shakespeare's validation split and of another domain (the built-in
    corpus's last 100,000 characters) under the model in args.dynamic, static and dynamic."""
    model, vocab, _ = load_model(args.dynamic, "cpu")
    _, val = load_corpus(args.corpus).split(0.1)
    other = vocab.encode(builtin_text()[-100_000:], skip_unknown=True)
    rows = []
    for name, ids in (
        ("tiny Shakespeare validation", val),
        ("built-in corpus (Python docs)", other),
    ):
        for dyn in (None, Dynamic()):
            t0 = time.perf_counter()
            result = score(model, ids, seq_len=256, dynamic=dyn)
            row = {"text": name, "chars": result.chars, "dynamic": dyn is not None,
                   "bpc": result.bits_per_char, "seconds": time.perf_counter() - t0}  # fmt: skip
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


# --- output ----------------------------------------------------------------------------------


def fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    if unit == "s":
        return f"{x:.2f} s"
    if unit == "MB/s":
        return f"{x:.0f} MB/s"
    return f"{x:,.0f}"


def table(rows: list[Row], markdown: bool = False) -> str:
    """The results as aligned text for the terminal, or as a Markdown table for RESULTS.md."""
    head = ("row", "charlm", "reference", "ratio", "target", "pass", "GFLOP/s (ref)", "% peak")
    lines = [head]
    for r in rows:
        if r.skipped:
            lines.append((r.name, "-", "-", "-", r.target, "skip", "-", r.skipped))
            continue
        gf = "-" if r.gflops is None else f"{r.gflops:.1f}"
        if r.ref_gflops is not None:
            gf += f" ({r.ref_gflops:.1f})"
        lines.append(
            (
                r.name,
                fmt(r.charlm, r.unit),
                fmt(r.reference, r.unit),
                "-" if r.ratio is None else f"{r.ratio:.2f}x",
                r.target,
                "PASS" if r.passed else "FAIL",
                gf,
                "-" if r.pct_peak is None else f"{r.pct_peak:.0f}%",
            )
        )
    if markdown:
        return "\n".join(
            ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            + ["| " + " | ".join(line) + " |" for line in lines[1:]]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = [" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    out.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(out)


def machine() -> dict:
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "loadavg": os.getloadavg(),
    }


def default_corpus(work: Path) -> Path:
    """Tiny Shakespeare where CI keeps it, else the built-in corpus written to a file in `work`."""
    if DEFAULT_CORPUS.exists():
        return DEFAULT_CORPUS
    path = work / "builtin.txt"
    path.write_text(builtin_text(), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for CI (< 1 minute)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument(
        "--corpus",
        type=Path,
        help="an English text (default: tiny Shakespeare from $CHARLM_DATA if it is there, "
        "else Python's built-in help text, so that a plain clone runs offline)",
    )
    ap.add_argument("--rounds", type=int, default=0, help="alternations per row (default 3/1)")
    ap.add_argument(
        "--only", default="", help="comma-separated: train,generate,corpus,cuda,amp (CPU bfloat16)"
    )
    ap.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    ap.add_argument("--sizes", default="", help="corpus rows in MB (default 10,100,1000; quick 10)")
    ap.add_argument("--learning", action="store_true", help="run the learning curve instead")
    ap.add_argument("--budgets", default="30,60,180", help="--learning: seconds, comma-separated")
    ap.add_argument("--amp", default="auto", choices=("auto", "on", "off"), help="--learning")
    ap.add_argument(
        "--dynamic", type=Path, help="score with and without dynamic evaluation under this model"
    )
    args = ap.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.corpus is not None and not args.corpus.exists():
        ap.error(f"no corpus at {args.corpus}")
    only = set(filter(None, args.only.split(","))) or {"train", "generate", "corpus", "cuda", "amp"}
    info = machine()
    print(" ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    with tempfile.TemporaryDirectory(prefix="charlm-bench-") as tmp:
        work = Path(tmp)
        args.corpus = args.corpus or default_corpus(work)
        print(f"corpus: {args.corpus}", flush=True)
        if args.learning:
            result = {"machine": info, "learning": learning(args, work)}
        elif args.dynamic:
            result = {"machine": info, "dynamic": dynamic_gain(args)}
        else:
            rates: dict[str, float] = {}  # ceiling name -> best GFLOP/s measured
            cpu, seconds = ["cpu float32", "cpu bfloat16", "cpu int8"], 0.3 if args.quick else 1.0
            measure_ceilings(rates, cpu, seconds)
            print(f"matmul rate: {rates_line(rates)}", flush=True)
            rows: list[Row] = []
            if "train" in only:
                rows += training_rows(args, work, "cpu", amp=False)
            if "train" in only and "amp" in only:
                rows += training_rows(args, work, "cpu", amp=True)
            if "generate" in only:
                rows += generation_rows(args, "cpu", amp="amp" in only)
            if "corpus" in only:
                rows += corpus_rows(args, work)
            if "cuda" in only:
                rows += cuda_rows(args, work, rates)
            measure_ceilings(rates, cpu, seconds)
            print(f"matmul rate, the better of before and after the rows: {rates_line(rates)}")
            for r in rows:
                if r.gflops is not None and r.ceiling is not None:
                    r.pct_peak = 100 * r.gflops / rates[r.ceiling]
            print(table(rows))
            result = {"machine": info, "matmul_gflops": rates, "rows": [asdict(r) for r in rows]}
            if args.markdown:
                args.markdown.write_text(table(rows, markdown=True) + "\n")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=_json_default) + "\n")
    return 0


def cuda_rows(args: argparse.Namespace, work: Path, rates: dict[str, float]) -> list[Row]:
    """The training and generation rows again on the GPU, and training with --amp."""
    if not torch.cuda.is_available():
        return [Row(name="cuda rows", target="-", skipped="no CUDA device")]
    measure_ceilings(rates, ["cuda float32"], 1.0)
    rows = training_rows(args, work, "cuda", amp=False)
    rows += training_rows(args, work, "cuda", amp=True)
    rows += generation_rows(args, "cuda")
    measure_ceilings(rates, ["cuda float32"], 1.0)
    return rows


def rates_line(rates: dict[str, float]) -> str:
    return ", ".join(f"{name} {gflops:.1f} GFLOP/s" for name, gflops in rates.items())


def _json_default(x: object) -> object:
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return str(x)


if __name__ == "__main__":
    sys.exit(main())
