"""The training loop: `Trainer.run` trains a `Learner` on a sampler's batches, in a run folder.

    for each epoch:                       (one pass over the training text)
        for each batch (X, Y) of the sampler:
            one optimizer step            (learner.py)
        validate, append a row to metrics.jsonl, write checkpoint.pt (and best.pt)

A run stops after --epochs, --max-steps or --time-budget, whichever comes first; a stop in the
middle of an epoch still validates and writes a final row and checkpoint. With a time budget the
number of steps that fit is planned once, early, and the LR schedule spans it (see budget.py).
SIGINT / SIGTERM / SIGHUP finish the current step and save a checkpoint that --resume continues
exactly. Tools built on the loop (the benchmark's learning curve, tests) hook in through
`Callback`s.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from charlm import checkpoint, distributed
from charlm.budget import Costs, agreed_fit, measure, plan_line, plan_record
from charlm.config import (
    AUTO,
    AUTO_FIELDS,
    DEFAULT_EPOCHS,
    FIXED_ON_RESUME,
    MANY_EPOCHS,
    MODEL_FIELDS,
    TrainConfig,
    check_config,
    flag,
    resolve_auto,
)
from charlm.corpus import Corpus
from charlm.errors import CharLMError
from charlm.generate import generate
from charlm.inputs import Selection, changes, load_inputs, unescape
from charlm.learner import Learner
from charlm.meter import LossMeter, Progress, epoch_row
from charlm.metrics import perplexity
from charlm.precision import resolve_amp, resolve_device
from charlm.progress import EpochProgress, epoch_summary
from charlm.run import RunFolder
from charlm.samplers import LAYOUT, SAMPLERS
from charlm.threads import use_threads
from charlm.vocab import Vocab


def resume_config(out: str | os.PathLike[str], overrides: dict[str, Any]) -> TrainConfig:
    """The config of the run in `out`, with `overrides` applied; model changes are refused."""
    ckpt = checkpoint.load(Path(out) / checkpoint.LATEST)
    cfg = TrainConfig(**ckpt["config"])
    # auto, given again, means what the run chose: its config holds that
    overrides = {k: v for k, v in overrides.items() if not (k in AUTO and v == AUTO[k])}
    for name, value in overrides.items():
        if name in FIXED_ON_RESUME and value != getattr(cfg, name):
            raise CharLMError(
                f"cannot resume with {flag(name)} {value}: the run in {out} was trained with "
                f"{flag(name)} {getattr(cfg, name)} (start a new run with another --out)"
            )
    return replace(cfg, **{**overrides, "out": os.fspath(out)})


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


class Callback:
    """Hooks into a run for tools built on the loop; override what you need."""

    def on_step(self, trainer: Trainer) -> None:
        """After each optimizer step (`trainer.p.step` is its number)."""

    def on_checkpoint(self, trainer: Trainer) -> None:
        """After each checkpoint is written."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        """After an epoch's metrics row (`row`) is written."""


def read_corpus(cfg: TrainConfig, quiet: bool) -> Corpus:
    """The training text as `cfg` selects it; the run's own folder is never read (its files
    change as the run goes on)."""
    try:
        own = (str(Path(cfg.out).resolve()),)
    except (OSError, RuntimeError) as e:  # a symlink loop
        raise CharLMError(f"cannot use --out {cfg.out}: {e}") from None
    chosen = Selection(tuple(cfg.include), tuple(cfg.exclude), cfg.hidden, own)
    corpus = load_inputs(
        cfg.corpus, chosen, separator=unescape(cfg.separator), encoding=cfg.encoding,
        errors=cfg.errors, byte_level=cfg.byte_level,
    )  # fmt: skip
    if corpus.note and not quiet:
        tqdm.write(corpus.note, file=sys.stderr)
    return corpus


def open_data(
    cfg: TrainConfig, folder: RunFolder, resume: bool, overwrite: bool, quiet: bool
) -> tuple[Corpus, dict[str, Any] | None]:
    """The corpus, and the checkpoint to resume (None for a fresh run), checked together."""
    # the corpus first: a mistyped path must not be reported as a clash with an older run
    corpus = read_corpus(cfg, quiet)
    if not resume:
        folder.check_new(overwrite)
        return corpus, None
    ckpt = checkpoint.load(folder.latest)
    try:
        check_same_data(ckpt, corpus, cfg)
    except (KeyError, TypeError, AttributeError) as e:
        raise damaged(folder, e) from None
    return corpus, ckpt


def damaged(folder: RunFolder, e: Exception) -> CharLMError:
    return CharLMError(
        f"cannot resume from {folder.latest}: its training state is damaged "
        f"({type(e).__name__}: {e})"
    )


def make_sampler(cfg: TrainConfig, ids: Any, ctx: distributed.Context) -> Any:
    """--sampler's batches of the training ids: this rank's rows of every global batch."""
    return SAMPLERS[cfg.sampler](
        ids, cfg.seq_len, cfg.batch_size, cfg.seed, ctx.rank, ctx.world_size, cfg.random_offset
    )


def epochs_for(steps: int, steps_per_epoch: int) -> int:
    """The epochs that hold `steps` steps (0 steps: DEFAULT_EPOCHS)."""
    return -(-steps // steps_per_epoch) if steps else DEFAULT_EPOCHS


def check_validation(val_fraction: float, val_ids: Any) -> None:
    """The validation part, if any, must be scorable."""
    if val_fraction > 0 and len(val_ids) < 2:
        raise CharLMError(
            f"--val-fraction {val_fraction} leaves {len(val_ids)} characters for validation; "
            f"raise it, or use 0 to skip validation"
        )


def check_same_data(ckpt: dict[str, Any], corpus: Corpus, cfg: TrainConfig) -> None:
    """A resumed run must read what it began with: the same inputs, the same batch order."""
    changed = changes(ckpt.get("inputs", corpus.inputs), corpus.inputs)
    if changed:
        raise CharLMError(
            f"cannot resume: the inputs differ from those the run in {cfg.out} began with: "
            f"{changed} (start a new run with another --out)"
        )
    if ckpt["vocab"] != corpus.vocab.chars:
        raise CharLMError(
            f"cannot resume: the characters of {cfg.corpus} differ from those the run in "
            f"{cfg.out} was trained on (same corpus?)"
        )
    if ckpt["config"].get("dropout") and not ckpt.get("output_dropout"):
        raise CharLMError(
            f"cannot resume the run in {cfg.out}: it was trained with --dropout between layers "
            f"only, and this charlm applies it before the output layer too, so the rest of "
            f"the run would train another model. Start a new run with --overwrite or another "
            f"--out, or finish this one with the charlm that started it"
        )
    if ckpt.get("sampler_layout", 1) != LAYOUT:  # written before the textbook's samplers
        raise CharLMError(
            f"cannot resume the run in {cfg.out}: it was trained with charlm 0.1's batch "
            f"order, which this charlm no longer has (its samplers follow the textbook), so "
            f"the rest of the run would see other batches. Start a new run with --overwrite "
            f"or another --out, or finish this one with charlm 0.1"
        )


def epoch_sample(model: torch.nn.Module, vocab: Vocab, cfg: TrainConfig, epoch: int) -> str:
    """A sample of --sample-length characters at temperature 0.8, seeded by seed + epoch."""
    prefix = "\n" if "\n" in vocab.chars else ""
    return generate(
        model, vocab, prefix, cfg.sample_length, temperature=0.8, seed=cfg.seed + epoch
    )[0]


def describe(cfg: TrainConfig, learner: Learner, steps: int, amp_reason: str, threads: int) -> str:
    """The settings that change the maths, in one line a newcomer reads before training."""
    m = learner.model_cfg
    params = sum(p.numel() for p in learner.model.parameters())
    embedding = f"embedding {m.embedding_dim}" if m.embedding_dim else "one-hot input"
    embedding += f", dropout {m.dropout:g}" if m.dropout else ""
    schedule = cfg.lr_schedule + (f" (warm-up {cfg.warmup_steps})" if cfg.warmup_steps else "")
    offset = " + random offset" if cfg.random_offset else ""
    precision = "bfloat16 autocast" if learner.amp else "float32"
    return (
        f"{m.model} {m.num_layers}x{m.hidden_size}, {embedding}, {params:,} parameters | "
        f"sampler {cfg.sampler}{offset}, batch {cfg.batch_size} x {cfg.seq_len} | "
        f"{cfg.optimizer} lr {cfg.lr:g}, {schedule} schedule over {steps:,} steps, "
        f"clip {cfg.clip:g} | {learner.device.type} {precision} ({amp_reason}), "
        f"{threads} thread{'s' if threads > 1 else ''}, seed {cfg.seed}"
    )


class Trainer:
    """One run: its settings, data, learner, folder and progress. `run()` is the loop."""

    def __init__(
        self,
        cfg: TrainConfig,
        resume: bool = False,
        progress_bar: bool = True,
        overwrite: bool = False,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        check_config(cfg)
        self.asked = cfg  # with auto left in: a long plan may choose again (_plan)
        cfg = resolve_auto(cfg)  # auto settings: by the budget; recorded as chosen
        self.dist = distributed.detect()  # torchrun: this process's rank among several
        self.progress_bar, self.callbacks = progress_bar and self.dist.is_main, list(callbacks)
        self.device = distributed.init(self.dist, resolve_device(cfg.device))
        self.threads = use_threads(cfg.threads)  # it can change results: recorded in config.json
        self.amp, self.amp_reason = resolve_amp(cfg.amp, self.device)
        cfg = replace(cfg, amp="on" if self.amp else "off")  # recorded as resolved
        self.folder, self.resumed = RunFolder(cfg.out, writes=self.dist.is_main), resume
        corpus, ckpt = open_data(cfg, self.folder, resume, overwrite, not self.progress_bar)
        self.vocab, self.inputs = corpus.vocab, corpus.inputs
        self.record = dict(  # config.json's facts beside the settings
            vocab_size=len(self.vocab), corpus_source=corpus.source, torch_threads=self.threads
        )
        self.train_ids, self.val_ids = corpus.split(cfg.val_fraction)
        self.sampler = make_sampler(cfg, self.train_ids, self.dist)
        check_validation(cfg.val_fraction, self.val_ids)
        if cfg.epochs == 0 and not cfg.time_budget:  # a budget sets them once it has a plan
            cfg = replace(cfg, epochs=epochs_for(cfg.max_steps, len(self.sampler)))
        self.cfg, self.p, self.plan = cfg, Progress(), None  # plan: budget.plan_record
        self._build_learner()
        if ckpt is not None:
            self.restore(ckpt)
        self.meter = LossMeter(self.p, self.device, cfg, len(self.vocab))

    def _build_learner(self) -> None:
        """The model, its optimizer and schedule as self.cfg says, initialised from the seed."""
        carries = self.sampler.carries_state
        self.learner = Learner(self.cfg, len(self.vocab), self.device, self.amp, carries)
        self.learner.reschedule(self.schedule_steps())
        self.model = self.learner.model  # the plain module (not DDP, not compiled)

    def run(self) -> TrainResult:
        """Train until --epochs, --max-steps, the time budget or a signal stops the run."""
        p, row = self.p, None
        with self.folder.session(fresh=not self.resumed, step=p.step), Interrupts() as signals:
            self._write_config()
            if self.cfg.time_budget and not p.planned_steps:
                self._plan()
            steps = self.schedule_steps()
            self._say(describe(self.cfg, self.learner, steps, self.amp_reason, self.threads))
            self._say(plan_line(self.plan) if self.plan else "")
            # a resumed run may already be at its limit: then it trains no step, writes no row
            stopped_by = self._stop_reason(signals)
            if stopped_by and stopped_by.startswith("SIG") and not p.step:
                self.save()  # stopped while measuring: --resume keeps the plan and trains it
            while p.epoch < self.cfg.epochs and stopped_by is None:
                stopped_by = self._train_epoch(signals)
                finished = p.batch == len(self.sampler)
                if stopped_by and stopped_by.startswith("SIG") and not finished:
                    self.save()  # no metrics row: the epoch goes on when resumed
                    break
                # an epoch whose last batch was trained is finished, whatever stopped the run
                row = self._end_epoch(partial=not finished)
                if stopped_by is None and p.epoch < self.cfg.epochs:  # its end may spend the budget
                    stopped_by = self._stop_reason(signals)
        return TrainResult(self.folder.path, p, stopped_by or "epochs", row)

    def _train_epoch(self, signals: Interrupts) -> str | None:
        """Train the epoch's remaining batches; why the run stops, if it does."""
        cfg, p, stopped_by = self.cfg, self.p, None
        bar = EpochProgress(p.epoch + 1, cfg.epochs, len(self.sampler), p.batch,
                            enabled=self.progress_bar, budget_s=cfg.time_budget)  # fmt: skip
        tick = time.perf_counter()
        for X, Y in self.sampler.batches(p.epoch, p.batch):
            self.meter.add(*self.learner.step(*self.learner.to_device(X, Y)))
            now = time.perf_counter()
            p.count_step(now - tick)
            tick = now
            bar.step()
            for callback in self.callbacks:
                callback.on_step(self)
            if p.step % cfg.log_every == 0:  # the only host syncs: every log_every steps
                self.meter.check()
                mean, left = self.meter.mean(), p.seconds_left(cfg.time_budget, len(self.sampler))
                bar.report(
                    mean, perplexity(mean), p.chars_per_s(cfg.seq_len * cfg.batch_size), left
                )
            if cfg.save_every and p.step % cfg.save_every == 0:
                self.save()
            stopped_by = self._stop_reason(signals)
            if stopped_by:
                break
        bar.close()
        return stopped_by

    def _end_epoch(self, partial: bool) -> dict[str, Any]:
        """Validate, then write the epoch's metrics row, checkpoints and sample."""
        start = time.perf_counter()  # epoch-end work is part of the time budget
        self.meter.fold()
        val_loss = self.learner.validate(self.val_ids, self.dist)
        p = self.p
        p.elapsed_s += time.perf_counter() - start
        start = time.perf_counter()
        chars_per_batch = self.cfg.seq_len * self.cfg.batch_size
        row = epoch_row(p, val_loss, self.learner.lr, chars_per_batch, partial)
        self.folder.append_row(row)
        best = val_loss is not None and val_loss < p.best_val_loss
        if best:
            p.best_val_loss = val_loss
        if not partial:
            p.next_epoch()
            self.learner.state = None  # the consecutive sampler starts its streams afresh
        self.save(best=best)
        self._say(epoch_summary(row))
        every = self.cfg.sample_every
        if every and (row["epoch"] % every == 0 or partial) and self.dist.is_main:
            text = epoch_sample(self.model, self.vocab, self.cfg, row["epoch"])
            self.folder.append_sample(row["epoch"], text)
            self._say(f"--- sample after epoch {row['epoch']} ---\n{text.strip()}\n---")
        for callback in self.callbacks:
            callback.on_epoch_end(self, row)
        p.elapsed_s += time.perf_counter() - start  # saving and sampling (after the checkpoint)
        return row

    def _stop_reason(self, signals: Interrupts) -> str | None:
        cfg, p = self.cfg, self.p
        out_of_time = bool(cfg.time_budget and p.elapsed_s >= cfg.time_budget)
        signum, out_of_time = distributed.agree_stop(signals.signum, out_of_time)
        if signum is not None:
            return signal.Signals(signum).name
        if cfg.max_steps and p.step >= cfg.max_steps:
            return "max_steps"
        # the planned step is the budget's end, and the schedule's
        planned_end = p.planned_steps and p.step >= p.planned_steps < cfg.epochs * len(self.sampler)
        return "time_budget" if planned_end or out_of_time else None

    def _say(self, line: str) -> None:
        if self.progress_bar and line:
            tqdm.write(line, file=sys.stdout)

    def save(self, best: bool = False) -> None:
        """Write checkpoint.pt (and best.pt), the running sums folded into the progress."""
        self.meter.fold()
        payload = self.payload()  # on every rank: it gathers the hidden state
        self.folder.save_checkpoint(payload, best)
        for callback in self.callbacks:
            callback.on_checkpoint(self)

    def payload(self) -> dict[str, Any]:
        """The run's state as a checkpoint holds it (on every rank: it gathers the state)."""
        return {
            "config": asdict(self.cfg),
            "model_config": asdict(self.learner.model_cfg),
            "vocab": self.vocab.chars,
            "inputs": self.inputs,
            **self.learner.state_dict(),
            "progress": asdict(self.p),
            "plan": self.plan,
            "sampler_layout": LAYOUT,
            "output_dropout": True,  # --dropout covers the last layer's output (model.py)
        }

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from a `payload()`: the run goes on exactly where it was."""
        try:
            progress = Progress(**ckpt["progress"])
            progress.check()
            self.learner.load_state_dict(ckpt, self.sampler.rows)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
            raise damaged(self.folder, e) from None
        vars(self.p).update(asdict(progress))  # in place: the meter holds p
        self.plan = ckpt.get("plan")
        # a resumed run keeps its plan, and may change --lr: the schedule continues from there
        self.learner.reschedule(self.schedule_steps())

    def _write_config(self) -> None:
        """config.json: every effective setting, and the plan once there is one."""
        plan = {} if self.plan is None else {"plan": self.plan}
        self.folder.write_config({**asdict(self.cfg), **self.record, **plan})

    def schedule_steps(self) -> int:
        """The steps the schedule spans: the budget's plan, else --epochs or --max-steps."""
        if self.p.planned_steps:
            return self.p.planned_steps
        limits = [self.cfg.epochs * len(self.sampler), self.cfg.max_steps]
        return min(n for n in limits if n) if any(limits) else 0  # 0: a budget will plan

    def measure_costs(self) -> Costs:
        """What a step, a validation and a checkpoint cost here (budget.measure); a public hook
        for known costs (the tests' plans do not depend on the machine's load)."""
        return measure(self)

    def _plan(self) -> None:
        """Fix, once, the number of steps the budget allows; the schedule spans it.

        A plan of many epochs may change what auto chose (config.AUTO_MANY_EPOCHS): the run
        then starts over with that model, measured and planned again.
        """
        limit = self.schedule_steps() or math.inf
        costs = self._fit(limit)
        epochs = epochs_for(self.p.planned_steps, len(self.sampler))
        chosen = resolve_auto(self.asked, epochs)
        if any(getattr(chosen, name) != getattr(self.cfg, name) for name in MODEL_FIELDS):
            self._say(
                f"auto: the plan holds {epochs} epochs, more than {MANY_EPOCHS}: hidden size "
                f"{chosen.hidden_size} and dropout {chosen.dropout:g} learn more on a text this "
                f"short; measuring that model"
            )
            self.cfg = replace(self.cfg, **{name: getattr(chosen, name) for name in AUTO_FIELDS})
            self._build_learner()  # from the seed, as a replay builds it
            costs = self._fit(limit)
        set_by = "time_budget" if self.p.planned_steps < limit else "epochs/max_steps"
        if not self.cfg.epochs:  # only the budget bounds the run: the epochs that hold the plan
            self.cfg = replace(self.cfg, epochs=epochs_for(self.p.planned_steps, len(self.sampler)))
        given = {name: getattr(self.cfg, name) for name in AUTO_FIELDS}
        self.plan = plan_record(self.p.planned_steps, set_by, costs, given)
        self.learner.reschedule(self.schedule_steps())
        self._write_config()

    def _fit(self, limit: float) -> Costs:
        """Measure this model's costs and plan the steps that fit in what is left of the budget
        (or `limit`, if fewer); the measuring is spent from the budget."""
        costs = self.measure_costs()
        self.p.planned_steps = min(limit, self.p.step + agreed_fit(self, costs))
        self.p.elapsed_s += costs.measure_s
        return costs


def train(cfg: TrainConfig, resume: bool = False, **options: Any) -> TrainResult:
    """Train a model as `cfg` says (continuing the run in cfg.out when `resume`); `options`
    are Trainer's: progress_bar, overwrite, callbacks.

    A fresh run refuses a folder that already holds one unless `overwrite`: hours of training
    are not lost to a repeated command.
    """
    with distributed.session():  # under torchrun: one process of several
        return Trainer(cfg, resume, **options).run()
