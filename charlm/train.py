"""The training loop: every setting in one dataclass, one function that runs it.

    for each epoch:                       (one pass over the training text)
        for each batch (X, Y) of the sampler:
            logits, H = model(X, H)       (H carried and detached for the consecutive sampler)
            loss = cross_entropy(logits, Y); backward; clip the global grad norm; step
        validate, append a row to metrics.jsonl, write checkpoint.pt (and best.pt)

A run stops after --epochs, --max-steps or --time-budget, whichever comes first; a stop in the
middle of an epoch still validates and writes a final row and checkpoint. With a time budget the
number of steps that fit is planned once, early, and the LR schedule spans it (see budget.py).
SIGINT / SIGTERM / SIGHUP finish the current step and save a checkpoint that --resume continues
exactly.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from charlm import checkpoint, distributed
from charlm.budget import (
    MEASURE_FRACTION,
    MEASURE_STEPS,
    WARM_UP_STEPS,
    Costs,
    plan_line,
    plan_record,
    plan_steps,
)
from charlm.config import (
    DEFAULT_EPOCHS,
    FIXED_ON_RESUME,
    MODEL_FIELDS,
    TrainConfig,
    check_config,
    flag,
)
from charlm.data import Vocab
from charlm.errors import CharLMError
from charlm.evaluate import nll_sum
from charlm.generate import generate
from charlm.inputs import Selection, changes, load_inputs, unescape
from charlm.model import CharLM, ModelConfig, detach_state
from charlm.precision import resolve_amp
from charlm.progress import EpochProgress
from charlm.samplers import LAYOUT, SAMPLERS
from charlm.threads import use_threads


def perplexity(loss: float) -> float:
    """exp(loss), inf instead of an OverflowError for a diverging run."""
    return math.exp(loss) if loss < 700 else math.inf


def epoch_summary(row: dict[str, Any]) -> str:
    """One line per epoch for the terminal."""
    val = (
        ""
        if row["val_loss"] is None
        else (f", val ppl {row['val_ppl']:.3f}, val bpc {row['val_bpc']:.3f}")
    )
    return (
        f"epoch {row['epoch']}{' (partial)' if row['partial'] else ''}: step {row['step']}, "
        f"train ppl {row['train_ppl']:.3f}{val}, {row['chars_per_sec']:,.0f} chars/s, "
        f"{row['elapsed_s']:.0f} s"
    )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CharLMError("--device cuda was asked for, but no CUDA device is available")
    return torch.device(name)


def prepare_out(out: Path) -> None:
    """Create the run folder and prove it is writable now, not after an hour of training."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise CharLMError(f"cannot write to --out {out}: {e.strerror}") from None


def resume_config(out: str | os.PathLike[str], overrides: dict[str, Any]) -> TrainConfig:
    """The config of the run in `out`, with `overrides` applied; model changes are refused."""
    ckpt = checkpoint.load(Path(out) / checkpoint.LATEST)
    cfg = TrainConfig(**ckpt["config"])
    for name, value in overrides.items():
        if name in FIXED_ON_RESUME and value != getattr(cfg, name):
            raise CharLMError(
                f"cannot resume with {flag(name)} {value}: the run in {out} was trained with "
                f"{flag(name)} {getattr(cfg, name)} (start a new run with another --out)"
            )
    return replace(cfg, **{**overrides, "out": os.fspath(out)})


def lr_factor(cfg: TrainConfig, total_steps: int):
    """The schedule as a multiplier of --lr at a given step (for LambdaLR)."""

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.lr_schedule == "cosine":
            span = max(1, total_steps - cfg.warmup_steps)
            progress = min(1.0, (step - cfg.warmup_steps) / span)
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))  # down to lr/20
        if cfg.lr_schedule == "step":
            return cfg.lr_gamma ** ((step - cfg.warmup_steps) // cfg.lr_step_size)
        return 1.0

    return factor


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint so that --resume continues exactly."""

    epoch: int = 0  # the epoch in progress (0-based)
    batch: int = 0  # the next batch of that epoch
    step: int = 0  # optimizer steps in all
    elapsed_s: float = 0.0  # training wall time in all, resumed runs included
    best_val_loss: float = math.inf
    # sums over the batches done so far in the current epoch
    epoch_loss: float = 0.0
    epoch_grad_norm: float = 0.0
    epoch_batches: int = 0
    epoch_time_s: float = 0.0
    # the steps the LR schedule spans, fixed once when a --time-budget run starts (0: none yet)
    planned_steps: int = 0


class Interrupts:
    """Turn SIGINT / SIGTERM / SIGHUP into a flag the loop checks after each step.

    SIGHUP (a closed terminal) is left alone when it was already ignored at the start, as
    `nohup` arranges, so that a run started that way outlives its terminal.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                if sig == signal.SIGHUP and signal.getsignal(sig) is signal.SIG_IGN:
                    continue  # nohup
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclass
class TrainResult:
    out: Path
    progress: Progress
    stopped_by: str  # "epochs", "max_steps", "time_budget", or "SIGINT" / "SIGTERM" / "SIGHUP"
    last_row: dict[str, Any] | None

    @property
    def exit_code(self) -> int:
        """0 when finished, 128 + the signal number when interrupted (130 for Ctrl-C)."""
        return 128 + signal.Signals[self.stopped_by] if self.stopped_by.startswith("SIG") else 0


class Trainer:
    """The state of one run: model, optimizer, sampler, progress. `run()` is the loop."""

    def __init__(
        self,
        cfg: TrainConfig,
        resume: bool = False,
        progress_bar: bool = True,
        overwrite: bool = False,
    ) -> None:
        check_config(cfg)
        self.dist = distributed.detect()  # torchrun: this process's rank among several
        self.cfg, self.progress_bar = cfg, progress_bar and self.dist.is_main
        self.out = Path(cfg.out)
        self.device = distributed.init(self.dist, resolve_device(cfg.device))
        self.threads = use_threads(cfg.threads)  # it can change results: recorded in config.json
        self.amp, self.amp_reason = resolve_amp(cfg.amp, self.device)
        self.cfg = cfg = replace(cfg, amp="on" if self.amp else "off")  # recorded as resolved
        # the corpus first: a mistyped path must not be reported as a clash with an older run
        # the run's own folder is never read: its files change as the run goes on
        chosen = Selection(
            tuple(cfg.include), tuple(cfg.exclude), cfg.hidden, (str(self.out.resolve()),)
        )
        corpus = load_inputs(
            cfg.corpus, chosen, separator=unescape(cfg.separator), encoding=cfg.encoding,
            errors=cfg.errors, byte_level=cfg.byte_level,
        )  # fmt: skip
        if corpus.note and self.progress_bar:
            tqdm.write(corpus.note, file=sys.stderr)
        if not resume and not overwrite and (self.out / checkpoint.LATEST).exists():
            raise CharLMError(
                f"{self.out} already holds a run: continue it with --resume, start over with "
                f"--overwrite, or choose another --out"
            )
        if self.dist.is_main:
            prepare_out(self.out)
        ckpt = checkpoint.load(self.out / checkpoint.LATEST) if resume else None
        self.vocab, self.inputs = corpus.vocab, corpus.inputs
        changed = ckpt is not None and changes(ckpt.get("inputs", corpus.inputs), corpus.inputs)
        if changed:
            raise CharLMError(
                f"cannot resume: the inputs differ from those the run in {self.out} began with: "
                f"{changed} (start a new run with another --out)"
            )
        if ckpt is not None and ckpt["vocab"] != self.vocab.chars:
            raise CharLMError(
                f"cannot resume: the characters of {cfg.corpus} differ from those the run in "
                f"{self.out} was trained on (same corpus?)"
            )
        self.train_ids, self.val_ids = corpus.split(cfg.val_fraction)
        self.sampler = SAMPLERS[cfg.sampler](
            self.train_ids,
            cfg.seq_len,
            cfg.batch_size,
            cfg.seed,
            self.dist.rank,
            self.dist.world_size,
            cfg.random_offset,
        )
        if cfg.epochs == 0 and not cfg.time_budget:  # a budget sets them once it has a plan
            steps = cfg.max_steps
            epochs = -(-steps // len(self.sampler)) if steps else DEFAULT_EPOCHS
            self.cfg = cfg = replace(cfg, epochs=epochs)
        if cfg.val_fraction > 0 and len(self.val_ids) < 2:
            raise CharLMError(
                f"--val-fraction {cfg.val_fraction} leaves {len(self.val_ids)} characters for "
                f"validation; raise it, or use 0 to skip validation"
            )

        torch.manual_seed(cfg.seed)
        self.model_cfg = ModelConfig(
            vocab_size=len(self.vocab), **{k: getattr(cfg, k) for k in MODEL_FIELDS}
        )
        self.model = CharLM(self.model_cfg).to(self.device)
        ddp = distributed.wrap(self.model, self.device)  # self.model stays the plain module
        self.step_model = torch.compile(ddp) if cfg.compile else ddp
        self.optimizer = make_optimizer(cfg, self.model)
        self.p = Progress()
        self.plan: dict[str, Any] | None = None  # budget.plan_record, once a budget set a plan
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_factor(cfg, self.schedule_steps())
        )
        self.state = None  # the carried hidden state (consecutive sampler)
        if ckpt is not None:
            self._restore(ckpt)
        elif self.dist.is_main:
            (self.out / "metrics.jsonl").write_text("")
        self.record = {
            "vocab_size": len(self.vocab),
            "corpus_source": corpus.source,
            "torch_threads": self.threads,
        }
        self._write_config()

    def _write_config(self) -> None:
        """config.json: every effective setting, and the plan once there is one."""
        plan = {} if self.plan is None else {"plan": self.plan}
        config = {**asdict(self.cfg), **self.record, **plan}
        if self.dist.is_main:
            (self.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    def describe(self) -> str:
        """The settings that change the maths, in one line a newcomer reads before training."""
        cfg, m = self.cfg, self.model_cfg
        params = sum(p.numel() for p in self.model.parameters())
        embedding = f"embedding {m.embedding_dim}" if m.embedding_dim else "one-hot input"
        schedule = cfg.lr_schedule + (f" (warm-up {cfg.warmup_steps})" if cfg.warmup_steps else "")
        offset = " + random offset" if cfg.random_offset else ""
        precision = "bfloat16 autocast" if self.amp else "float32"
        steps = self.schedule_steps()
        threads = f"{self.threads} thread{'s' if self.threads > 1 else ''}"
        return (
            f"{m.model} {m.num_layers}x{m.hidden_size}, {embedding}, {params:,} parameters | "
            f"sampler {cfg.sampler}{offset}, batch {cfg.batch_size} x {cfg.seq_len} | "
            f"{cfg.optimizer} lr {cfg.lr:g}, {schedule} schedule over {steps:,} steps, "
            f"clip {cfg.clip:g} | {self.device.type} {precision} ({self.amp_reason}), {threads}, "
            f"seed {cfg.seed}"
        )

    # --- the plan: the steps the LR schedule spans --------------------------------------------

    def schedule_steps(self) -> int:
        """The steps the schedule spans: the budget's plan, else --epochs or --max-steps."""
        if self.p.planned_steps:
            return self.p.planned_steps
        limits = [self.cfg.epochs * len(self.sampler), self.cfg.max_steps]
        return min(n for n in limits if n) if any(limits) else 0  # 0: a budget will plan

    def _set_schedule(self) -> None:
        """Point the scheduler at `schedule_steps()` and --lr, from the step the run is at."""
        n = len(self.optimizer.param_groups)
        self.scheduler.lr_lambdas = [lr_factor(self.cfg, self.schedule_steps())] * n
        self.scheduler.base_lrs = [self.cfg.lr] * n
        factor = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        for group in self.optimizer.param_groups:
            group["initial_lr"], group["lr"] = self.cfg.lr, self.cfg.lr * factor

    def measure_costs(self) -> Costs:
        """Time a step, a validation and a checkpoint here, after untimed warm-up steps.

        The steps train a throwaway state: weights, optimizer, scheduler, RNG and hidden state
        are put back afterwards, so the run is the one `--max-steps PLANNED` replays. A public
        hook: a subclass may return known costs (the tests do, for a plan independent of the
        machine's load).
        """
        start = time.perf_counter()
        saved = (
            copy.deepcopy(self.model.state_dict()),
            copy.deepcopy(self.optimizer.state_dict()),
            self.scheduler.state_dict(),
            torch.get_rng_state(),
            self.state,
        )
        X, Y = next(self.sampler.batches(self.p.epoch))
        X, Y = X.to(self.device), Y.to(self.device)
        if self.device.type == "cuda":
            saved = (*saved, torch.cuda.get_rng_state(self.device))
        times: list[float] = []
        for _ in range(WARM_UP_STEPS + MEASURE_STEPS):
            tick = time.perf_counter()
            float(self._train_step(X, Y)[0])  # float(): wait for the device
            times.append(time.perf_counter() - tick)
            over = time.perf_counter() - start > MEASURE_FRACTION * self.cfg.time_budget
            # ranks stop measuring together: each of these steps all-reduces gradients
            over = distributed.all_reduce_sum(torch.tensor(float(over), device=self.device))
            if len(times) > WARM_UP_STEPS and float(over) > 0:
                break
        step_s = statistics.median(times[WARM_UP_STEPS:])  # one slow step does not set the plan
        self.model.load_state_dict(saved[0])
        self.optimizer.load_state_dict(saved[1])
        self.scheduler.load_state_dict(saved[2])
        torch.set_rng_state(saved[3])
        self.state = saved[4]
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(saved[5], self.device)
        validation_s = 0.0
        if len(self.val_ids):
            # a validation window is the shape of a training batch (streams = batch rows)
            self.model.eval()
            with torch.no_grad():
                for _ in range(2):  # the first one warms up
                    tick = time.perf_counter()
                    float(self.model(X)[0].sum())
                    forward_s = time.perf_counter() - tick
            self.model.train()
            windows = math.ceil(math.ceil(len(self.val_ids) / self.cfg.batch_size) / X.shape[0])
            validation_s = windows * forward_s
        tick = time.perf_counter()
        payload = self._payload()  # on every rank: it gathers the hidden state
        if self.dist.is_main:
            probe = self.out / ".checkpoint-probe.pt"
            checkpoint.save(payload, probe)
            probe.unlink()
        checkpoint_s = time.perf_counter() - tick
        return Costs(step_s, validation_s, checkpoint_s, time.perf_counter() - start)

    def _plan(self) -> None:
        """Fix, once, the number of steps the budget allows; the schedule spans it."""
        costs = self.measure_costs()
        fit = plan_steps(
            self.cfg.time_budget - self.p.elapsed_s, costs, len(self.sampler), self.cfg.save_every
        )
        # every rank takes rank 0's plan: their clocks differ, their schedules must not
        mine = torch.tensor(float(fit if self.dist.is_main else 0), device=self.device)
        fit = int(distributed.all_reduce_sum(mine))
        self.p.elapsed_s += costs.measure_s
        limit = self.schedule_steps() or math.inf
        self.p.planned_steps = min(limit, self.p.step + fit)
        set_by = "time_budget" if self.p.planned_steps < limit else "epochs/max_steps"
        if not self.cfg.epochs:  # only the budget bounds the run: the epochs that hold the plan
            epochs = -(-self.p.planned_steps // len(self.sampler))
            self.cfg = replace(self.cfg, epochs=epochs)
        self.plan = plan_record(self.p.planned_steps, set_by, costs)
        self._set_schedule()
        self._write_config()

    # --- checkpoints -------------------------------------------------------------------------

    def _payload(self) -> dict[str, Any]:
        state = distributed.gather_rows(self.state)  # (L, B, H) whatever the world size
        if state is not None:
            state = [s.cpu() for s in state] if isinstance(state, tuple) else state.cpu()
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "config": asdict(self.cfg),
            "model_config": asdict(self.model_cfg),
            "vocab": self.vocab.chars,
            "inputs": self.inputs,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "progress": asdict(self.p),
            "plan": self.plan,
            "rng": rng,
            "state": state,
            "sampler_layout": LAYOUT,
        }

    def _restore(self, ckpt: dict[str, Any]) -> None:
        if ckpt.get("sampler_layout", 1) != LAYOUT:  # written before the textbook's samplers
            raise CharLMError(
                f"cannot resume the run in {self.out}: it was trained with charlm 0.1's batch "
                f"order, which this charlm no longer has (its samplers follow the textbook), so "
                f"the rest of the run would see other batches. Start a new run with --overwrite "
                f"or another --out, or finish this one with charlm 0.1"
            )
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.p = Progress(**ckpt["progress"])
        self.plan = ckpt.get("plan")
        # a resumed run keeps its plan, and may change --lr: the schedule continues from there
        self._set_schedule()
        torch.set_rng_state(ckpt["rng"]["torch"])
        if "cuda" in ckpt["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], self.device)
        state = distributed.take_rows(ckpt["state"], self.sampler.rows)
        if state is not None:
            state = tuple(s.to(self.device) for s in state) if isinstance(state, list) else state
            self.state = state.to(self.device) if isinstance(state, torch.Tensor) else state
        if not self.dist.is_main:
            return
        # rows written after this checkpoint (a crash between the two) would repeat: drop them
        metrics = self.out / "metrics.jsonl"
        rows = metrics.read_text().splitlines() if metrics.exists() else []
        kept = [r for r in rows if r.strip() and json.loads(r)["step"] <= self.p.step]
        metrics.write_text("".join(r + "\n" for r in kept))

    def save(self, best: bool = False) -> None:
        payload = self._payload()  # on every rank: it gathers the hidden state
        if not self.dist.is_main:
            return
        checkpoint.save(payload, self.out / checkpoint.LATEST)
        if best:
            checkpoint.save(payload, self.out / checkpoint.BEST)

    # --- the loop ----------------------------------------------------------------------------

    def _check_finite(self, loss_sum: torch.Tensor) -> None:
        loss_sum = distributed.all_reduce_sum(loss_sum)  # so that every rank stops, or none
        if not math.isfinite(float(loss_sum)):
            raise CharLMError(
                f"the loss became {float(loss_sum)} by step {self.p.step}: training diverged. "
                f"Lower --lr (now {self.cfg.lr}) or set --clip (now {self.cfg.clip}); the last "
                f"good checkpoint in {self.out} is kept"
            )

    def _train_step(self, X: torch.Tensor, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.sampler.carries_state:
            self.state = None
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits, state = self.step_model(X, self.state)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), Y.reshape(-1))
        self.state = detach_state(state) if self.sampler.carries_state else None
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = self.cfg.clip if self.cfg.clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach(), grad_norm.detach()

    def validate(self) -> float | None:
        if len(self.val_ids) == 0:
            return None
        # each rank scores its share of the validation streams; the sums are added up
        cfg, ctx = self.cfg, self.dist
        nll, count = nll_sum(
            self.model, self.val_ids, cfg.seq_len, cfg.batch_size, ctx.rank, ctx.world_size
        )
        total = distributed.all_reduce_sum(
            torch.tensor([nll, count], dtype=torch.float64, device=self.device)
        )
        return float(total[0] / total[1])

    def _end_epoch(self, loss_sum: torch.Tensor, grad_sum: torch.Tensor, partial: bool) -> dict:
        """Validate, write the epoch's metrics row, checkpoints and sample."""
        start = time.perf_counter()  # epoch-end work is part of the time budget
        distributed.average_(loss_sum, grad_sum)  # the global batch's means, as one process
        self._check_finite(loss_sum)
        p, cfg = self.p, self.cfg
        p.epoch_loss += float(loss_sum)
        p.epoch_grad_norm += float(grad_sum)
        train_loss = p.epoch_loss / max(1, p.epoch_batches)
        val_loss = self.validate()
        p.elapsed_s += time.perf_counter() - start
        start = time.perf_counter()
        chars = p.epoch_batches * cfg.seq_len * cfg.batch_size
        row = {
            "epoch": p.epoch + 1,
            "step": p.step,
            "train_loss": train_loss,
            "train_ppl": perplexity(train_loss),
            "val_loss": val_loss,
            "val_ppl": None if val_loss is None else perplexity(val_loss),
            "val_bpc": None if val_loss is None else val_loss / math.log(2),
            "lr": self.scheduler.get_last_lr()[0],
            "grad_norm": p.epoch_grad_norm / max(1, p.epoch_batches),
            "chars_per_sec": chars / max(p.epoch_time_s, 1e-9),
            "elapsed_s": p.elapsed_s,
            "partial": partial,
        }
        if self.dist.is_main:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
        best = val_loss is not None and val_loss < p.best_val_loss
        if best:
            p.best_val_loss = val_loss
        if not partial:
            p.epoch, p.batch = p.epoch + 1, 0
            p.epoch_loss = p.epoch_grad_norm = p.epoch_time_s = 0.0
            p.epoch_batches = 0
            self.state = None  # the consecutive sampler starts its streams afresh
        self.save(best=best)
        if self.progress_bar:
            tqdm.write(epoch_summary(row), file=sys.stdout)
        if cfg.sample_every and (row["epoch"] % cfg.sample_every == 0 or partial):
            self._sample(row["epoch"])
        p.elapsed_s += time.perf_counter() - start  # saving and sampling (after the checkpoint)
        return row

    def _sample(self, epoch: int) -> None:
        if not self.dist.is_main:
            return
        prefix = "\n" if "\n" in self.vocab.chars else ""
        text = generate(
            self.model,
            self.vocab,
            prefix,
            self.cfg.sample_length,
            temperature=0.8,
            seed=self.cfg.seed + epoch,
        )[0]
        with open(self.out / "samples.txt", "a", encoding="utf-8") as f:
            f.write(f"=== epoch {epoch}\n{text.strip()}\n\n")
        if self.progress_bar:
            tqdm.write(f"--- sample after epoch {epoch} ---\n{text.strip()}\n---", file=sys.stdout)

    def _stop_reason(self, interrupts: Interrupts) -> str | None:
        cfg, p = self.cfg, self.p
        out_of_time = bool(cfg.time_budget and p.elapsed_s >= cfg.time_budget)
        signum, out_of_time = distributed.agree_stop(interrupts.signum, out_of_time)
        if signum is not None:
            return signal.Signals(signum).name
        if cfg.max_steps and p.step >= cfg.max_steps:
            return "max_steps"
        if p.planned_steps and p.step >= p.planned_steps < cfg.epochs * len(self.sampler):
            return "time_budget"  # the planned step: the budget's end, the schedule's end
        if out_of_time:
            return "time_budget"
        return None

    def run(self) -> TrainResult:
        if self.cfg.time_budget and not self.p.planned_steps:
            self._plan()
        cfg, p = self.cfg, self.p  # the plan may have set --epochs
        row = None
        if self.progress_bar:
            tqdm.write(self.describe(), file=sys.stdout)
            if self.plan is not None:
                tqdm.write(plan_line(self.plan), file=sys.stdout)
        with Interrupts() as interrupts:
            # a resumed run may already be at its limit: then it trains no step and writes no row
            stopped_by = self._stop_reason(interrupts) if p.step or p.elapsed_s else None
            while p.epoch < cfg.epochs and stopped_by is None:
                loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
                grad_sum = torch.zeros((), dtype=torch.float64, device=self.device)
                bar = EpochProgress(
                    p.epoch + 1,
                    cfg.epochs,
                    len(self.sampler),
                    p.batch,
                    enabled=self.progress_bar,
                    budget_s=cfg.time_budget,
                )
                tick = time.perf_counter()
                for X, Y in self.sampler.batches(p.epoch, p.batch):
                    if self.device.type == "cuda":
                        X = X.pin_memory().to(self.device, non_blocking=True)
                        Y = Y.pin_memory().to(self.device, non_blocking=True)
                    loss, grad_norm = self._train_step(X, Y)
                    loss_sum += loss
                    grad_sum += grad_norm
                    p.batch += 1
                    p.step += 1
                    p.epoch_batches += 1
                    now = time.perf_counter()
                    p.epoch_time_s += now - tick
                    p.elapsed_s += now - tick
                    tick = now
                    bar.step()
                    if p.step % cfg.log_every == 0:  # the only host syncs: every log_every steps
                        self._check_finite(loss_sum)
                        mean = (p.epoch_loss + float(loss_sum)) / p.epoch_batches
                        chars = p.epoch_batches * cfg.seq_len * cfg.batch_size
                        bar.report(mean, perplexity(mean), chars / p.epoch_time_s, self._left())
                    if cfg.save_every and p.step % cfg.save_every == 0:
                        self._fold(loss_sum, grad_sum)
                        self.save()
                    stopped_by = self._stop_reason(interrupts)
                    if stopped_by:
                        break
                bar.close()
                finished = p.batch == len(self.sampler)
                if stopped_by and stopped_by.startswith("SIG") and not finished:
                    self._fold(loss_sum, grad_sum)
                    self.save()  # no metrics row: the epoch goes on when resumed
                    break
                # an epoch whose last batch was trained is finished, whatever stopped the run
                row = self._end_epoch(loss_sum, grad_sum, partial=not finished)
        return TrainResult(self.out, p, stopped_by or "epochs", row)

    def _left(self) -> float:
        """Seconds left: of the --time-budget if there is one (it stops the run), else the epoch."""
        cfg, p = self.cfg, self.p
        if cfg.time_budget:
            return cfg.time_budget - p.elapsed_s
        return (len(self.sampler) - p.batch) * p.epoch_time_s / max(1, p.epoch_batches)

    def _fold(self, loss_sum: torch.Tensor, grad_sum: torch.Tensor) -> None:
        """Move the running sums into Progress (so a checkpoint holds them), and zero them."""
        distributed.average_(loss_sum, grad_sum)  # global means: resumable with any world size
        self._check_finite(loss_sum)
        self.p.epoch_loss += float(loss_sum)
        self.p.epoch_grad_norm += float(grad_sum)
        loss_sum.zero_()
        grad_sum.zero_()


def train(
    cfg: TrainConfig, resume: bool = False, progress_bar: bool = True, overwrite: bool = False
) -> TrainResult:
    """Train a model as `cfg` says (continuing the run in cfg.out when `resume`).

    A fresh run refuses a folder that already holds one unless `overwrite`: hours of training
    are not lost to a repeated command.
    """
    with distributed.session():  # under torchrun: one process of several
        return Trainer(cfg, resume=resume, progress_bar=progress_bar, overwrite=overwrite).run()


def load_model(
    path: str | os.PathLike[str], device: str = "auto"
) -> tuple[CharLM, Vocab, dict[str, Any]]:
    """Model (in eval mode), vocabulary and raw checkpoint from a checkpoint file or run folder."""
    dev = resolve_device(device)
    ckpt = checkpoint.load(path, map_location=dev)
    try:
        model = CharLM(ModelConfig(**ckpt["model_config"])).to(dev)
        model.load_state_dict(ckpt["model"])
        vocab = Vocab(ckpt["vocab"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CharLMError(
            f"{path}: the checkpoint's contents do not fit a charlm model: {e}"
        ) from None
    model.eval()
    return model, vocab, ckpt
