"""Training speed by thread count and OpenMP wait policy, on a quiet machine and next to a busy one.

    python -m benchmarks.threads                      # 40 steps of the default model
    python -m benchmarks.threads --steps 100 --hidden-size 128

Each case trains in a fresh process, since libgomp reads OMP_WAIT_POLICY when torch is imported.
"busy" runs one more process that spins on a core (`while 1: pass`) beside each case. The cases
alternate round by round, so a machine whose load drifts moves all of them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import sys, time
import torch
from charlm.train import TrainConfig, Trainer
threads, steps, hidden, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(threads)
cfg = TrainConfig(out=out, hidden_size=hidden, max_steps=steps, val_fraction=0.0,
                  sample_every=0, device="cpu", log_every=10)
trainer = Trainer(cfg, overwrite=True, progress_bar=False)
start = time.perf_counter()
trainer.run()
print(time.perf_counter() - start)
"""

# name: (threads, OMP_WAIT_POLICY or None for libgomp's default, which spins)
CASES = {"1 thread": (1, None), "2 threads": (2, None), "2 threads, PASSIVE": (2, "PASSIVE")}


def seconds(threads: int, policy: str | None, steps: int, hidden: int, out: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = str(ROOT)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    args = [sys.executable, "-c", CHILD, str(threads), str(steps), str(hidden), str(out)]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, check=True)
    return float(proc.stdout.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--hidden-size", type=int, default=384)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="charlm-threads-") as tmp:
        for rnd in range(args.rounds):
            for busy in (False, True):
                spin = [sys.executable, "-c", "while 1: pass"]
                spinner = subprocess.Popen(spin) if busy else None
                try:
                    for name, (threads, policy) in CASES.items():
                        s = seconds(threads, policy, args.steps, args.hidden_size, Path(tmp))
                        row = {"round": rnd, "busy": busy, "case": name, "seconds": round(s, 2),
                               "loadavg": round(os.getloadavg()[0], 1)}  # fmt: skip
                        print(json.dumps(row), flush=True)
                finally:
                    if spinner is not None:
                        spinner.kill()
                        spinner.wait()


if __name__ == "__main__":
    main()
