"""`charlm serve` under load: aggregate characters per second and time to first character for
1, 8, 32 and 64 concurrent streaming clients, against the same requests sent one after another.

    python -m benchmarks.serve                             # float32 and --amp, 1/8/32/64 clients
    python -m benchmarks.serve --clients 1,8 --tokens 100 --precision float32   # a short run
    python -m benchmarks.serve --checkpoint runs/charlm --json results.json

The model is the default size (an LSTM of 448 units, embeddings of 64, over tiny Shakespeare's
65 characters) with random weights: how fast it steps does not depend on what it learned. Each
client sends a 200-character prompt (a slice of tiny Shakespeare when it is found, else random
characters of the vocabulary) and streams `--tokens` characters at temperature 1. The clients
run in this process (asyncio, plain sockets: as little client work as can be), the server in
another, on the same machine. Per precision, one server; per number of clients N:

- concurrent: N clients at once; the aggregate rate is all their characters over the time from
  the first request sent to the last character received; time to first character per client;
- one after another: the same N requests, each alone.

The issue's targets: 32 concurrent clients get at least 4x the aggregate rate of one client in
float32 (6x with --amp), with a p99 time to first character under 500 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("CHARLM_DATA", ROOT.parent / "shared" / "corpora"))
TINY = CORPUS / "tinyshakespeare.txt"
PRECISIONS = {"float32": [], "amp": ["--amp"], "int8": ["--int8"]}
TARGETS = {"float32": 4.0, "amp": 6.0, "int8": 6.0}  # x one client's rate, at 32 clients
TTFC_P99 = 0.5  # seconds


def _positive_ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,8,32, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"client counts must be >= 1, got {text!r}")
    return values


def _precisions(text: str) -> list[str]:
    names = text.split(",")
    unknown = [n for n in names if n not in PRECISIONS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown precision {unknown[0]!r} (choose from {', '.join(PRECISIONS)})"
        )
    return names


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.serve", description=__doc__.split("\n")[0]
    )
    ap.add_argument(
        "--clients",
        type=_positive_ints,
        default=[1, 8, 32, 64],
        help="numbers of concurrent clients, comma-separated (default 1,8,32,64)",
    )
    ap.add_argument(
        "--precision",
        type=_precisions,
        default=["float32", "amp"],
        help="server precisions, comma-separated: float32, amp, int8",
    )
    ap.add_argument(
        "--tokens",
        type=_at_least_one,
        default=200,
        help="characters each client streams (default 200)",
    )
    ap.add_argument(
        "--prompt-chars",
        type=_at_least_one,
        default=200,
        help="characters of each prompt (default 200)",
    )
    ap.add_argument(
        "--checkpoint",
        default=None,
        help="serve this run instead of a default-size model with random weights",
    )
    ap.add_argument("--threads", type=int, default=0, help="the server's --threads")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="the server's")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    return ap.parse_args(argv)


def random_run(folder: Path) -> Path:
    """A run folder with the default-size model (random weights) over tiny Shakespeare's
    characters (or printable ASCII when the corpus is not found)."""
    import torch

    from charlm import checkpoint
    from charlm.model import CharLM, ModelConfig
    from charlm.vocab import Vocab

    text = TINY.read_text(encoding="utf-8") if TINY.is_file() else None
    chars = sorted(set(text)) if text else [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = Vocab(sorted(chars))
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=len(vocab))  # the defaults: what `charlm train` builds
    model = CharLM(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"model": model.state_dict(), "vocab": vocab.chars, "model_config": vars(cfg)}
    checkpoint.save(payload, folder / "best.pt")
    return folder


def prompts(count: int, chars: int, vocab: list[str], seed: int = 0) -> list[str]:
    """`count` prompts of `chars` characters: slices of tiny Shakespeare, or random ones."""
    rng = random.Random(seed)
    if TINY.is_file():
        text = TINY.read_text(encoding="utf-8")
        starts = [rng.randrange(len(text) - chars) for _ in range(count)]
        return [text[s : s + chars] for s in starts]
    return ["".join(rng.choice(vocab) for _ in range(chars)) for _ in range(count)]


@dataclass
class Timing:
    sent: float
    first: float  # the first character received
    end: float
    chars: int


async def one_stream(port: int, prompt: str, tokens: int) -> Timing:
    """One streaming completion over a plain socket: when it was sent, when its first
    character came, when it ended, how many characters came."""
    body = json.dumps({"prompt": prompt, "max_tokens": tokens, "stream": True}).encode()
    head = (
        f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
        f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    sent = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + body)
    first, chars = None, 0
    status = await reader.readline()
    if not status.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"the server answered {status!r}: {await reader.read(500)!r}")
    async for line in reader:
        if not line.startswith(b"data: {"):
            continue
        text = json.loads(line[6:])["choices"][0]["text"]
        if text and first is None:
            first = time.perf_counter()
        chars += len(text)
    writer.close()
    end = time.perf_counter()
    return Timing(sent, first if first is not None else end, end, chars)


async def concurrent(port: int, texts: list[str], tokens: int) -> list[Timing]:
    return list(await asyncio.gather(*(one_stream(port, p, tokens) for p in texts)))


async def one_after_another(port: int, texts: list[str], tokens: int) -> list[Timing]:
    return [await one_stream(port, p, tokens) for p in texts]


def summary(timings: list[Timing]) -> dict[str, float]:
    """Aggregate characters per second, and time to first character (median, p99) in s."""
    wall = max(t.end for t in timings) - min(t.sent for t in timings)
    ttfc = sorted(t.first - t.sent for t in timings)
    p99 = ttfc[min(len(ttfc) - 1, round(0.99 * (len(ttfc) - 1)))]
    return {
        "chars_per_s": sum(t.chars for t in timings) / wall,
        "ttfc_median": statistics.median(ttfc),
        "ttfc_p99": p99,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`charlm serve RUN` in a process of its own, on a free loopback port."""

    def __init__(self, run: str, precision: str, args: argparse.Namespace) -> None:
        self.port = free_port()
        tokens, chars = args.tokens, args.prompt_chars
        cmd = [
            sys.executable,
            "-m",
            "charlm",
            "serve",
            run,
            "--port",
            str(self.port),
            "--threads",
            str(args.threads),
            "--device",
            args.device,
            "--max-tokens",
            str(max(tokens, 16)),
            "--max-prompt",
            str(max(chars, 16)),
            *PRECISIONS[precision],
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.2)
        self.close()
        raise RuntimeError("the server did not start within 120 s")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def measure(run: str, precision: str, args: argparse.Namespace, vocab: list[str]) -> list[dict]:
    server = Server(run, precision, args)
    rows = []
    try:
        warm = prompts(2, args.prompt_chars, vocab, seed=99)
        asyncio.run(concurrent(server.port, warm, args.tokens))  # steppers built, code warm
        for n in args.clients:
            texts = prompts(n, args.prompt_chars, vocab, seed=n)
            together = summary(asyncio.run(concurrent(server.port, texts, args.tokens)))
            alone = summary(asyncio.run(one_after_another(server.port, texts, args.tokens)))
            rows.append(
                {
                    "precision": precision,
                    "clients": n,
                    **together,
                    "one_after_another_chars_per_s": alone["chars_per_s"],
                }
            )
            print(_line(rows[-1]), flush=True)
    finally:
        server.close()
    return rows


def _line(r: dict) -> str:
    return (
        f"{r['precision']:>8} {r['clients']:>4} clients: {r['chars_per_s']:>9,.0f} chars/s "
        f"(one after another {r['one_after_another_chars_per_s']:>8,.0f}, "
        f"x{r['chars_per_s'] / r['one_after_another_chars_per_s']:.1f}); first character "
        f"median {1000 * r['ttfc_median']:.0f} ms, p99 {1000 * r['ttfc_p99']:.0f} ms"
    )


def verdicts(rows: list[dict]) -> list[str]:
    """The issue's targets, where the rows measure them: 32 clients vs 1, and the p99."""
    out = []
    for precision, target in TARGETS.items():
        by_n = {r["clients"]: r for r in rows if r["precision"] == precision}
        if 1 in by_n and 32 in by_n:
            x = by_n[32]["chars_per_s"] / by_n[1]["chars_per_s"]
            ok = x >= target and by_n[32]["ttfc_p99"] < TTFC_P99
            out.append(
                f"{precision}: 32 clients x{x:.1f} one client's rate (target x{target:g}), "
                f"p99 first character {1000 * by_n[32]['ttfc_p99']:.0f} ms (target < "
                f"{1000 * TTFC_P99:.0f}): {'met' if ok else 'NOT met'}"
            )
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="charlm-bench-serve-") as tmp:
        run = args.checkpoint or str(random_run(Path(tmp) / "default"))
        from charlm.checkpoint import load_model

        _, vocab, _ = load_model(run, "cpu")
        what = args.checkpoint or "the default-size model, random weights"
        print(
            f"{what}; {args.prompt_chars}-character prompts, {args.tokens} characters each, "
            f"{len(os.sched_getaffinity(0))} cores (clients and server on the same machine), "
            f"the server on {args.device}",
            flush=True,
        )
        rows = [r for p in args.precision for r in measure(run, p, args, vocab.chars)]
    for line in verdicts(rows):
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
