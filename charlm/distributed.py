"""Several processes, one run: torchrun's environment, the process group, the few collectives.

torchrun starts one process per device and tells each who it is (RANK, WORLD_SIZE, LOCAL_RANK;
MASTER_ADDR / MASTER_PORT for the rendezvous). Every rank builds the same model from the same
seed, DistributedDataParallel averages the gradients, and each rank trains on its own rows of
every global batch (see samplers.py), so W processes with --batch-size B take the same steps
as one process with --batch-size B.

    global batch (B rows):  | rank 0: rows [0, B/W) | rank 1: rows [B/W, 2B/W) | ...

Rank 0 is the only one that touches --out (checkpoints, metrics, samples, progress bar).
Without torchrun (no WORLD_SIZE, or WORLD_SIZE=1) every function here does nothing, at no cost.

Host-side decisions (stop on a signal or on the time budget) are all-reduced over a gloo group
on the CPU, so they never wait for the GPU; tensors that live on the device (loss sums, the
carried hidden state) go through the default group (NCCL on CUDA, gloo on CPU).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from charlm.errors import CharLMError, flag
from charlm.model import State

_control: dist.ProcessGroup | None = None  # gloo group for host-side flags
_owned = False  # True when charlm created the process group (and so destroys it)
_vote: tuple[dist.Work, torch.Tensor] | None = None  # the stop vote in flight


@dataclass(frozen=True)
class Context:
    """Who this process is among the processes of the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and prints; the others only compute."""
        return self.rank == 0


def detect(env: Mapping[str, str] = os.environ) -> Context:
    """The Context torchrun describes in the environment; a single process without it."""
    if "WORLD_SIZE" not in env:
        return Context()
    try:
        ctx = Context(
            rank=int(env.get("RANK", "0")),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", "0")),
        )
    except ValueError:
        raise CharLMError(
            "RANK, WORLD_SIZE and LOCAL_RANK must be integers (launch with torchrun), got "
            f"{env.get('RANK')!r}, {env.get('WORLD_SIZE')!r}, {env.get('LOCAL_RANK')!r}"
        ) from None
    if not (ctx.world_size >= 1 and 0 <= ctx.rank < ctx.world_size and ctx.local_rank >= 0):
        raise CharLMError(
            f"inconsistent torchrun environment: RANK {ctx.rank}, WORLD_SIZE {ctx.world_size}, "
            f"LOCAL_RANK {ctx.local_rank}"
        )
    return ctx


def init(ctx: Context, device: torch.device) -> torch.device:
    """Join the process group (NCCL on CUDA, gloo on CPU); return the device this rank uses.

    On CUDA each rank takes cuda:LOCAL_RANK, so one machine's ranks use one GPU each; a
    --device that names one GPU (cuda:1) would put every rank on it, and is refused (the GPUs
    a machine's ranks use are chosen with CUDA_VISIBLE_DEVICES). Other accelerators are not
    run under torchrun.
    """
    global _control, _owned
    if not ctx.enabled:
        return device
    check_device(device)
    if device.type == "cuda":
        if ctx.local_rank >= torch.cuda.device_count():
            raise CharLMError(
                f"LOCAL_RANK {ctx.local_rank} needs a GPU, but this machine has "
                f"{torch.cuda.device_count()}: lower --nproc-per-node"
            )
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=ctx.rank, world_size=ctx.world_size)
        _owned = True
    if _control is None:
        _control = dist.new_group(backend="gloo")  # its own connections: never behind DDP's
    return device


def check_device(device: torch.device) -> None:
    """Under torchrun: CUDA, each rank on the GPU of its LOCAL_RANK, or the CPU."""
    if device.type not in ("cuda", "cpu"):
        raise CharLMError(
            f"{flag('device', str(device))}: under torchrun charlm runs on CUDA GPUs (NCCL) or the "
            f"CPU (gloo), not on {device.type}"
        )
    if device.type == "cuda" and device.index is not None:
        raise CharLMError(
            f"{flag('device', str(device))} names one GPU, but under torchrun each process takes "
            f"the GPU of its LOCAL_RANK (cuda:0, cuda:1, ...): use {flag('device', 'cuda')} "
            f"and choose the GPUs with CUDA_VISIBLE_DEVICES"
        )


def destroy() -> None:
    """Leave the process group, if charlm made it."""
    global _control, _owned
    _finish_vote()
    if _owned and dist.is_initialized():
        dist.destroy_process_group()
    _control, _owned = None, False


@contextmanager
def session() -> Iterator[None]:
    """Destroy the group at the end; on success, first wait for rank 0's last checkpoint.

    Without the barrier the other ranks could exit first, and torchrun would stop rank 0 while
    it writes. After an error there is no barrier: the other ranks may never reach it.
    """
    try:
        yield
        _finish_vote()
        if _enabled():
            dist.barrier(group=_control)
    finally:
        destroy()


def _enabled() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model in DistributedDataParallel (gradients averaged over ranks), or as it is."""
    if not _enabled():
        return model
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of `t` over ranks, in a new tensor (`t` itself with one process)."""
    if not _enabled():
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t


def average_(*tensors: torch.Tensor) -> None:
    """Replace each tensor by its mean over ranks, in place, in one all-reduce."""
    if not _enabled():
        return
    flat = torch.stack([t.reshape(()) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for t, v in zip(tensors, flat, strict=True):
        t.copy_(v)


def agree_stop(signum: int | None, out_of_time: bool) -> tuple[int | None, bool]:
    """Whether any rank got a signal or ran out of time, so that all stop at the same step.

    Called after every step on every rank. The signal deliveries and the clocks of the ranks
    differ, and a rank that stopped alone would leave the others waiting forever, so the flags
    are all-reduced (max) over the CPU gloo group. The all-reduce started after step k is only
    read after step k+1: no rank ever waits for it, and all stop one step later, together.
    """
    global _vote
    if _control is None:
        return signum, out_of_time
    decided = _finish_vote()
    flags = torch.tensor([signum or 0, int(out_of_time)], dtype=torch.int32)
    _vote = dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=_control, async_op=True), flags
    return decided


def _finish_vote() -> tuple[int | None, bool]:
    """Wait for the vote in flight (if any) and return its (signal, out of time) outcome."""
    global _vote
    if _vote is None:
        return None, False
    work, flags = _vote
    _vote = None
    work.wait()
    return (int(flags[0]) or None), bool(flags[1])


def gather_rows(state: State | None) -> State | None:
    """Each rank's (L, B/W, H) hidden state -> the global (L, B, H) one (on every rank).

    The checkpoint then holds the same state whatever the world size, and a run resumed with
    another one takes its rows back with `take_rows`.
    """
    if state is None or not _enabled():
        return state
    if isinstance(state, tuple):
        return tuple(gather_rows(s) for s in state)
    parts = [torch.empty_like(state) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, state.contiguous())
    return torch.cat(parts, dim=1)


def take_rows(state: State | list[torch.Tensor] | None, rows: slice) -> State | None:
    """This rank's rows (batch dimension 1) of a global hidden state from a checkpoint."""
    if state is None:
        return None
    if isinstance(state, (list, tuple)):
        return tuple(s[:, rows] for s in state)
    return state[:, rows]
