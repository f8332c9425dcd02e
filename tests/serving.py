"""What the tests of `charlm serve` share: a tiny model's run folder, and a real server process
on a free loopback port that always ends (bounded waits, then a kill)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import torch

from charlm import checkpoint
from charlm.model import CharLM, ModelConfig
from charlm.vocab import Vocab
from tests.conftest import ROOT, TEXT

VOCAB = Vocab(sorted(set(TEXT)))


def tiny_run(folder: Path, hidden: int = 32, seed: int = 0) -> Path:
    """A run folder holding a small random LSTM over the characters of the tests' text."""
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=len(VOCAB), hidden_size=hidden, embedding_dim=8, dropout=0.0)
    model = CharLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2)  # peaked distributions: texts differ from seed to seed
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"model": model.state_dict(), "vocab": VOCAB.chars, "model_config": vars(cfg)}
    checkpoint.save(payload, folder / "best.pt")
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(
    url: str, body: object | bytes | None = None, headers: dict | None = None, timeout: float = 30
) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one request; POST when there is a body."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


class Server:
    """`python -m charlm serve ARGS` on a free loopback port, ready when /health says so."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        cmd = [sys.executable, "-m", "charlm", "serve", *args, "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, env=full_env, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                if call(self.url + "/health", timeout=2)[0] == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the server did not start: {self.proc.stderr.read()}")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 15) -> int:
        """Ask it to stop (SIGTERM), kill it if it will not; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@contextlib.contextmanager
def serving(*args: str, env: dict | None = None) -> Iterator[Server]:
    server = Server(*args, env=env)
    try:
        yield server
    finally:
        server.stop()
