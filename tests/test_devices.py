"""--device: any device torch knows; one that is not here is one line naming those that are;
--amp auto per device type; under torchrun, each process on its local rank's GPU.

This machine has no GPU: the GPUs below are what torch is told (torch.cuda.is_available,
device_count, is_bf16_supported mocked), which is all that resolving a device asks of it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from charlm import distributed, precision
from charlm.cli import main
from charlm.config import TrainConfig, check_config
from charlm.errors import CharLMError, command_line
from tests.conftest import one_line_error


@pytest.fixture
def two_gpus(monkeypatch) -> None:
    """torch sees two CUDA GPUs (that support bfloat16), and no other accelerator."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())


@pytest.fixture(autouse=True)
def no_accelerators(monkeypatch) -> None:
    """Whatever this machine has, the tests see a CPU and what they mock."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(precision, "_other_accelerator", lambda: "")
    if hasattr(torch, "xpu"):
        monkeypatch.setattr(torch.xpu, "is_available", lambda: False)


def test_a_cpu_machine_has_the_cpu_and_auto_is_it() -> None:
    assert precision.available_devices() == ["cpu"]
    assert precision.resolve_device("auto") == torch.device("cpu")
    assert precision.resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(
    ("name", "python", "flag", "has"),
    [
        ("cuda", "device='cuda'", "--device cuda", "no CUDA device"),
        ("cuda:1", "device='cuda:1'", "--device cuda:1", "no CUDA device"),
        ("mps", "device='mps'", "--device mps", "no MPS (Apple silicon) device"),
        ("xpu:0", "device='xpu:0'", "--device xpu:0", "no XPU (Intel GPU) device"),
        ("cpu:1", "device='cpu:1'", "--device cpu:1", "1 cpu device"),
    ],
)
def test_a_device_that_is_not_here_names_those_that_are(name, python, flag, has) -> None:
    for speaks, named in ((contextlib.nullcontext, python), (command_line, flag)):
        with speaks(), pytest.raises(CharLMError) as e:
            precision.resolve_device(name)
        message = str(e.value)
        assert message == f"{named} is not available: this machine has {has} (available here: cpu)"


def test_a_name_torch_does_not_know_is_one_line() -> None:
    with pytest.raises(
        CharLMError, match=r"^device='gpu0' is not a device torch knows \(available"
    ):
        precision.resolve_device("gpu0")


def test_cuda_n_is_one_of_the_gpus_there_are(two_gpus) -> None:
    assert precision.available_devices() == ["cpu", "cuda:0", "cuda:1"]
    assert precision.resolve_device("auto") == torch.device("cuda")
    assert precision.resolve_device("cuda:1") == torch.device("cuda", 1)
    with command_line(), pytest.raises(CharLMError) as e:
        precision.resolve_device("cuda:2")
    assert str(e.value) == (
        "--device cuda:2 is not available: this machine has 2 CUDA devices "
        "(available here: cpu, cuda:0, cuda:1)"
    )


def test_mps_is_taken_where_torch_has_it(monkeypatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert precision.available_devices() == ["cpu", "mps"]
    assert precision.resolve_device("mps") == torch.device("mps")
    assert precision.resolve_device("auto") == torch.device("cpu")  # auto: CUDA, else the CPU


def test_amp_auto_decides_per_device_type(two_gpus, monkeypatch) -> None:
    assert precision.resolve_amp("auto", torch.device("cuda", 1)) == (
        True,
        "--amp auto: Fake GPU has bfloat16",
    )
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert precision.resolve_amp("auto", torch.device("cuda")) == (
        False,
        "--amp auto: no bfloat16 on this GPU",
    )
    for kind in ("mps", "xpu"):
        assert precision.resolve_amp("auto", torch.device(kind)) == (
            False,
            f"--amp auto: no bfloat16 speed-up known on {kind}",
        )
        assert precision.resolve_amp("on", torch.device(kind))[0] is True  # asked: on


def test_any_device_string_is_a_setting_torch_checks_when_it_runs() -> None:
    check_config(TrainConfig(device="cuda:1"))  # the settings stay free of torch
    check_config(TrainConfig(device="mps"))


def test_the_commands_say_it_in_one_line(corpus: Path, tmp_path: Path) -> None:
    none = str(tmp_path / "none")
    for command, device in [
        (["train", str(corpus), "--out", str(tmp_path / "o"), "--max-steps", "1"], "cuda:1"),
        (["generate", "--checkpoint", none], "mps"),
        (["eval", "perplexity", str(corpus), "--checkpoint", none], "xpu"),
    ]:
        result = CliRunner().invoke(main, [*command, "--device", device])
        one_line_error(result, f"--device {device} is not available", "(available here: cpu)")
    assert not (tmp_path / "o").exists()


def test_under_torchrun_each_process_takes_its_local_ranks_gpu(two_gpus) -> None:
    distributed.check_device(torch.device("cuda"))
    distributed.check_device(torch.device("cpu"))
    with command_line(), pytest.raises(CharLMError) as e:
        distributed.check_device(torch.device("cuda", 1))
    assert str(e.value) == (
        "--device cuda:1 names one GPU, but under torchrun each process takes the GPU of its "
        "LOCAL_RANK (cuda:0, cuda:1, ...): use --device cuda and choose the GPUs with "
        "CUDA_VISIBLE_DEVICES"
    )
    with pytest.raises(CharLMError, match=r"^device='mps': under torchrun charlm runs on CUDA"):
        distributed.check_device(torch.device("mps"))
    ctx = distributed.Context(rank=1, world_size=2, local_rank=1)
    with pytest.raises(CharLMError, match="names one GPU"):  # before any process group
        distributed.init(ctx, torch.device("cuda", 0))
