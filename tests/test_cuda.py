"""charlm on a CUDA device, checked against the same code on the CPU (skipped without a GPU).

These run where a GPU is (`benchmarks/gpu_check.sh` runs them on one); everything they check
has a CPU twin elsewhere in the suite. What crosses devices: a checkpoint trained on one
device generates and scores on the other, with the same numbers up to float rounding.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from charlm.cells import CELLS
from charlm.checkpoint import load_model
from charlm.evaluate import score_text
from charlm.generate import generate
from charlm.model import CharLM, ModelConfig
from charlm.reference import ReferenceStepper
from charlm.stepper import Stepper
from charlm.train import train
from tests.conftest import ROOT, TEXT

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_a_cpu_checkpoint_generates_and_scores_on_cuda_as_on_the_cpu(tiny_config) -> None:
    result = train(tiny_config, progress_bar=False)
    cpu_model, vocab, _ = load_model(result.out, "cpu")
    gpu_model, _, _ = load_model(result.out, "cuda")
    assert gpu_model.W_hq.device.type == "cuda"
    text = TEXT[:2000]
    cpu, gpu = score_text(cpu_model, vocab, text), score_text(gpu_model, vocab, text)
    assert gpu.chars == cpu.chars
    assert gpu.nll == pytest.approx(cpu.nll, rel=1e-4)
    (sample,) = generate(gpu_model, vocab, "First", 200, seed=3)
    assert sample.startswith("First") and len(sample) == len("First") + 200
    many = generate(gpu_model, vocab, "First", 100, seed=3, num_samples=8, amp=True)
    assert len(many) == 8 and all(len(t) == len("First") + 100 for t in many)


def test_a_cuda_checkpoint_loads_and_scores_on_the_cpu(tiny_config) -> None:
    result = train(replace(tiny_config, device="cuda"), progress_bar=False)
    gpu_model, vocab, _ = load_model(result.out, "cuda")
    cpu_model, _, _ = load_model(result.out, "cpu")
    text = TEXT[:2000]
    assert score_text(cpu_model, vocab, text).nll == pytest.approx(
        score_text(gpu_model, vocab, text).nll, rel=1e-4
    )


@pytest.mark.parametrize("kind", sorted(CELLS))
@pytest.mark.parametrize("amp", [False, True])
def test_the_fast_stepper_on_cuda_follows_the_plain_one(kind: str, amp: bool) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=11, model=kind, hidden_size=24, num_layers=2, embedding_dim=6)
    model = CharLM(cfg).cuda().eval()
    n = 20  # several streams: the batched layout
    fast, plain = Stepper(model, n, amp=amp), ReferenceStepper(model, n)
    x = torch.randint(0, 11, (n,), device="cuda")
    with torch.inference_mode():
        for _ in range(30):
            got, want = fast.step(x).float(), plain.step(x).float()
            assert torch.allclose(got, want, atol=3e-2 if amp else 1e-4), (got - want).abs().max()
            x = want.argmax(-1)


def test_beam_search_on_cuda_finds_what_it_finds_on_the_cpu() -> None:
    torch.manual_seed(1)
    from charlm.vocab import Vocab

    vocab = Vocab(sorted("abcde"))
    model = CharLM(ModelConfig(vocab_size=5, hidden_size=16)).double().eval()
    cpu = generate(model, vocab, "ab", 6, beam_width=8, num_samples=3)
    gpu = generate(model.cuda(), vocab, "ab", 6, beam_width=8, num_samples=3)
    assert gpu == cpu


def test_one_process_torchrun_trains_on_cuda(tiny_config, tmp_path: Path) -> None:
    """torchrun with one process on the GPU (one GPU cannot hold two NCCL ranks)."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
           "-m", "charlm", "train", tiny_config.corpus, "--out", str(out), "--device", "cuda",
           "--max-steps", "20", "--hidden-size", "32", "--seq-len", "16", "--batch-size", "8",
           "--lr", "0.01", "--quiet"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "checkpoint.pt").is_file()
