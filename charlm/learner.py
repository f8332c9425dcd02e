"""The model being trained and everything that changes it: optimizer, LR schedule, precision,
and the hidden state carried from batch to batch (consecutive sampler: truncated BPTT).

    logits, H = model(X, H)            H: None (random sampler) or the last batch's, detached
    loss = cross_entropy(logits, Y)    in float32, also under bfloat16 autocast (--amp)
    backward; clip the global gradient norm to --clip; optimizer step; schedule step
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from charlm import distributed
from charlm.cells import cell_class
from charlm.config import MODEL_FIELDS, TrainConfig
from charlm.errors import flag
from charlm.model import CharLM, ModelConfig, State, detach_state
from charlm.optim import (
    OptimSettings,
    Revisions,
    make_optimizer,
    make_scheduler,
    reschedule,
    schedule_schema,
    state_schema,
)
from charlm.resources import check_fits, held_bytes, parameters, training_bytes
from charlm.schema import Null, Opt, Record, Spec, Tensor, Tup

STATES = ("float32", "bfloat16")  # the carried state's dtype: float32, or under --amp bfloat16


def check_training_fits(m: ModelConfig, cfg: TrainConfig, device: torch.device) -> None:
    """Refuse a model and batch that cannot fit in memory, before anything is allocated."""
    H, L, E = m.hidden_size, m.num_layers, m.embedding_dim
    params = parameters(m)
    # per character: the cell's gates and states (`Cell.activation_floats`), logits, embedding
    width = cell_class(m.model).activation_floats(H, L) + m.vocab_size + E
    need = training_bytes(params, cfg.optimizer, cfg.seq_len, cfg.batch_size, width)
    need += held_bytes(cfg.sample_length, 1) if cfg.sample_every else 0  # the epochs' samples
    what = (
        f"training {params:,} parameters ({flag('hidden_size', H)}, {flag('num_layers', L)}, "
        f"{flag('embedding_dim', E)}, {m.vocab_size} characters) on batches of "
        f"{flag('batch_size', cfg.batch_size)} x {flag('seq_len', cfg.seq_len)}, with samples "
        f"of {flag('sample_length', cfg.sample_length)}"
    )
    check_fits(need, what, device)


def optim_settings(cfg: TrainConfig) -> OptimSettings:
    """The optimizer's part of a run's settings."""
    return OptimSettings(
        cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.lr_schedule, cfg.warmup_steps,
        cfg.lr_step_size, cfg.lr_gamma, cfg.clip,
    )  # fmt: skip


class Learner:
    """A CharLM with its optimizer and schedule, on its device; one `step` per batch."""

    def __init__(
        self, cfg: TrainConfig, vocab_size: int, device: torch.device, amp: bool, carries: bool
    ) -> None:
        self.cfg, self.device, self.amp, self.carries = cfg, device, amp, carries
        fields = {k: getattr(cfg, k) for k in MODEL_FIELDS}
        self.model_cfg = ModelConfig(vocab_size=vocab_size, **fields)
        check_training_fits(self.model_cfg, cfg, device)
        torch.manual_seed(cfg.seed)
        self.model = CharLM(self.model_cfg).to(device)
        ddp = distributed.wrap(self.model, device)  # self.model stays the plain module
        self.step_model = torch.compile(ddp) if cfg.compile else ddp
        self.opt = optim_settings(cfg)
        self.optimizer = make_optimizer(self.opt, self.model)
        self.scheduler = make_scheduler(self.opt, self.optimizer, 0)  # `reschedule` sets the span
        self.state: State | None = None  # the carried hidden state

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def reschedule(self, total_steps: int, revisions: Revisions = ()) -> None:
        """The schedule over `total_steps` (a budget's plan, and its `revisions`)."""
        reschedule(self.opt, self.scheduler, total_steps, revisions)

    def to_device(self, X: torch.Tensor, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch on the device; to a CUDA GPU through pinned memory, without waiting for it."""
        if self.device.type == "cpu":
            return X, Y
        if self.device.type != "cuda":  # mps, xpu, ...: a plain copy
            return X.to(self.device), Y.to(self.device)
        return tuple(t.pin_memory().to(self.device, non_blocking=True) for t in (X, Y))

    def step(self, X: torch.Tensor, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on a batch: (loss, gradient norm), left on the device."""
        state = self.state if self.carries else None
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits, state = self.step_model(X, state)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), Y.reshape(-1))
        self.state = detach_state(state) if self.carries else None
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = self.opt.clip if self.opt.clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach(), grad_norm.detach()

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimizer, schedule, RNG and carried state: all a checkpoint needs of it."""
        state = distributed.gather_rows(self.state)  # (L, B, H) whatever the world size
        if state is not None:
            state = [s.cpu() for s in state] if isinstance(state, tuple) else state.cpu()
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng,
            "state": state,
        }

    def state_schema(self) -> Record:
        """What `load_state_dict` reads, declared from this learner, for a checkpoint's reader
        to check before torch sees any of it: weights of the model's names and shapes, the
        optimizer's state against each parameter's shape, the schedule's keys, an RNG state
        of torch's size, the carried state of shape (L, --batch-size, H) or none."""
        weights = {k: Tensor(("float32",), w.shape, finite=True)
                   for k, w in self.model.state_dict().items()}  # fmt: skip
        shapes = [p.shape for p in self.model.parameters()]
        rng = Record(
            {"torch": Tensor(("uint8",), torch.get_rng_state().shape)},
            {"cuda": Tensor(("uint8",))},
        )
        return Record(
            {
                "model": Record(weights),
                "optimizer": state_schema(self.opt, self.optimizer, shapes),
                "scheduler": schedule_schema(len(self.optimizer.param_groups)),
                "rng": rng,
                "state": self._carried_schema(),
            },
            extra=True,
        )

    def _carried_schema(self) -> Spec:
        """None (a fresh epoch, or a sampler that carries nothing), or the whole batch's state
        as `state_dict` gathers it: (L, B, H), a list of two for an LSTM (h, c)."""
        if not self.carries:
            return Null()
        zero = self.model.init_state(self.cfg.batch_size, "meta")
        if isinstance(zero, tuple):
            return Opt(Tup(*(Tensor(STATES, z.shape, finite=True) for z in zero), tuple_=False))
        return Opt(Tensor(STATES, zero.shape, finite=True))

    def load_state_dict(self, ckpt: dict[str, Any], rows: slice) -> None:
        """Continue from `state_dict()`'s keys; `rows`: this rank's rows of the carried state.
        A checkpoint's are checked first (`state_schema`, by resume.py)."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if "cuda" in ckpt["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], self.device)
        state = distributed.take_rows(ckpt["state"], rows)
        if isinstance(state, list | tuple):
            state = tuple(s.to(self.device) for s in state)
        self.state = state.to(self.device) if isinstance(state, torch.Tensor) else state
