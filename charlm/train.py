"""The training loop: `Trainer.run` trains a `Learner` on a sampler's batches, in a run folder.

    settle the settings                   (settle.py: auto values, epochs, a resumed run's own)
    with a time budget: measure, settle again with the costs: the plan the schedule spans
    for each epoch:                       (one pass over the training text)
        for each batch (X, Y) of the sampler:
            one optimizer step            (learner.py)
            every --log-every steps: a training row; every --eval-every steps: an evaluation
            on part of the validation text; every --sample-steps: a sample (watch.py)
            with a time budget, every --revise-every seconds: the plan fitted again to the
            recent step rate, the schedule stretched or shrunk to it (budget.py)
        validate, append an epoch row to metrics.jsonl, write checkpoint.pt (and best.pt)

A run stops after --epochs, --max-steps or --time-budget, whichever comes first (StopReason); a
stop in the middle of an epoch still validates and writes a final row and checkpoint. With a
time budget the number of steps that fit is planned early, revised as the run goes, and the LR
schedule spans it (see budget.py); `--replay RUN` trains a budget's run again from its record.
SIGINT / SIGTERM / SIGHUP finish the current step and save a checkpoint that --resume
continues exactly. Tools built on the loop (the benchmark's learning curve, tests) hook in
through `Callback`s; `dry_run` settles a run and writes nothing.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from charlm import checkpoint, distributed
from charlm.budget import Costs, Plan
from charlm.config import TrainConfig, check_config, read_run_config
from charlm.corpus import Corpus
from charlm.errors import CharLMError, expect, flag
from charlm.evaluate import validate
from charlm.inputs import Reading, changes, read
from charlm.learner import Learner
from charlm.measure import Replanning, agree, measure
from charlm.meter import LossMeter, Progress, epoch_row
from charlm.metrics import perplexity
from charlm.precision import resolve_amp, resolve_device
from charlm.progress import EpochProgress, epoch_summary
from charlm.resume import check_state, config_of, plan_of, read_resumed
from charlm.run import CONFIG, RunFolder
from charlm.samplers import LAYOUT, SAMPLERS
from charlm.settle import (
    Facts,
    Settled,
    many_epochs_line,
    resumed,
    settle,
    settled_lines,
    span,
    work_of,
)
from charlm.storage import shown
from charlm.threads import use_threads
from charlm.watch import Watch


def resume_config(out: str | os.PathLike[str], overrides: dict[str, Any]) -> TrainConfig:
    """The config of the run in `out`, with `overrides` applied; model and data changes are
    refused, auto given again means what the run chose, and a length given anew is the run's
    whole length (settle.resumed)."""
    folder = RunFolder(out, writes=False)
    ran = config_of(read_resumed(folder), folder)
    return resumed(ran, {**overrides, "out": os.fspath(out)})


def replay_config(
    run: str | os.PathLike[str], given: dict[str, Any]
) -> tuple[TrainConfig, Plan | None]:
    """What trains the run in `run` again, step for step, and the plan its schedule followed
    (a budget's, revisions and all): the settings of its config.json without a budget, for the
    steps it trained, on as many threads; `given` settings on top (--out: RUN-replay)."""
    folder = RunFolder(run, writes=False)
    if not os.path.lexists(folder.file(CONFIG)):
        raise CharLMError(f"--replay {run}: no config.json there (is it a charlm run folder?)")
    if given.get("time_budget"):
        raise CharLMError("--replay trains the steps the run trained, without a --time-budget")
    settings, record = read_run_config(folder.file(CONFIG))
    source = f"--replay {run}: the plan in its config.json"
    plan = Plan.from_record(record["plan"], source) if record.get("plan") else None
    steps = trained_steps(folder) or (plan.total if plan else settings.get("max_steps", 0))
    out = Path(given.get("out") or f"{os.fspath(run).rstrip('/')}-replay")
    if out.resolve() == Path(run).resolve():
        raise CharLMError(f"--replay reads the run in {run}: give the replay another --out")
    threads = {"threads": record["torch_threads"]} if "torch_threads" in record else {}
    replayed = {"time_budget": 0.0, "max_steps": steps, **threads, **given, "out": str(out)}
    return TrainConfig(**{**settings, **replayed}), plan


def trained_steps(folder: RunFolder) -> int:
    """The steps the run in `folder` has trained, by its latest checkpoint (0: none)."""
    if not os.path.lexists(folder.latest):
        return 0
    ckpt = checkpoint.load(folder.latest)
    return Progress.from_record(ckpt.get("progress"), f"{shown(folder.latest)}: progress").step


def resumed_facts(ckpt: dict[str, Any] | None, folder: RunFolder) -> dict[str, Any]:
    """What a resumed run's checkpoint (read by resume.read_resumed) tells `settle`: the
    settings it ran with, its plan."""
    if ckpt is None:
        return {}
    return {"resumed": config_of(ckpt, folder), "plan": plan_of(ckpt, folder)}


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


class StopReason(str, Enum):
    """Why a run stopped; the value is the word printed (`done (time_budget)`, `SIGINT:
    stopped at step ...`) and recorded, and compares equal to it."""

    EPOCHS = "epochs"
    MAX_STEPS = "max_steps"
    TIME_BUDGET = "time_budget"
    SIGINT = "SIGINT"
    SIGTERM = "SIGTERM"
    SIGHUP = "SIGHUP"

    def __str__(self) -> str:
        return self.value

    @property
    def is_signal(self) -> bool:
        """Interrupted: the run is saved where it stopped, for --resume."""
        return self in (StopReason.SIGINT, StopReason.SIGTERM, StopReason.SIGHUP)

    @property
    def exit_code(self) -> int:
        """0 when finished, 128 + the signal number when interrupted (130 for Ctrl-C)."""
        return 128 + signal.Signals[self.value] if self.is_signal else 0


@dataclass
class TrainResult:
    out: Path
    progress: Progress
    stopped_by: StopReason
    last_row: dict[str, Any] | None

    @property
    def exit_code(self) -> int:
        return self.stopped_by.exit_code


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
        raise CharLMError(f"cannot use {flag('out', cfg.out)}: {e}") from None
    corpus = read(cfg.corpus, Reading.of(cfg), byte_level=cfg.byte_level, away=own)
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
    ckpt = read_resumed(folder)
    check_same_data(ckpt, corpus, cfg)
    return corpus, ckpt


def make_sampler(cfg: TrainConfig, ids: Any, ctx: distributed.Context, layout: int = LAYOUT) -> Any:
    """--sampler's batches of the training ids: this rank's rows of every global batch, in
    the order of `layout` (a resumed run's own: `sampler_layout`)."""
    return SAMPLERS[cfg.sampler](ids, cfg.seq_len, cfg.batch_size, cfg.seed, ctx.rank,
                                 ctx.world_size, cfg.random_offset, layout)  # fmt: skip


def sampler_layout(ckpt: dict[str, Any] | None) -> int:
    """The batch order a run takes: a resumed run keeps the one it began with (samplers.py)."""
    return LAYOUT if ckpt is None else ckpt["sampler_layout"]


def check_validation(val_fraction: float, val_ids: Any) -> None:
    """The validation part, if any, must be scorable."""
    if val_fraction > 0 and len(val_ids) < 2:
        raise CharLMError(
            f"{flag('val_fraction', val_fraction)} leaves {len(val_ids)} characters for "
            f"validation; raise it, or use 0 to skip validation"
        )


def check_same_data(ckpt: dict[str, Any], corpus: Corpus, cfg: TrainConfig) -> None:
    """A resumed run must read what it began with: the same inputs, the same characters (the
    settings that make its text are held to the run's by settle.keep_resumed)."""
    changed = changes(ckpt["inputs"], corpus.inputs)
    if changed:
        raise CharLMError(
            f"cannot resume: the inputs differ from those the run in {cfg.out} began with: "
            f"{changed} (start a new run with another {flag('out', ...)})"
        )
    if ckpt["vocab"] != corpus.vocab.chars:
        raise CharLMError(
            f"cannot resume: the characters of {cfg.corpus} differ from those the run in "
            f"{cfg.out} was trained on (same corpus?)"
        )


def stop_reason(
    cfg: TrainConfig, p: Progress, steps_per_epoch: int, signum: int | None
) -> StopReason | None:
    """Why the run stops after the step it is at, if it does; every rank answers alike."""
    out_of_time = bool(cfg.time_budget and p.elapsed_s >= cfg.time_budget)
    signum, out_of_time = distributed.agree_stop(signum, out_of_time)
    if signum is not None:
        return StopReason(signal.Signals(signum).name)
    if cfg.max_steps and p.step >= cfg.max_steps:
        return StopReason.MAX_STEPS
    # the planned step is the budget's end, and the schedule's
    planned_end = p.planned_steps and p.step >= p.planned_steps < cfg.epochs * steps_per_epoch
    return StopReason.TIME_BUDGET if planned_end or out_of_time else None


def end_line(step: int, planned: int, stopped_by: StopReason, plan: Plan | None) -> str:
    """How far a run went against its plan, and how the plan changed: its last line before
    `done` ("stopped at 637 of 917 planned steps")."""
    if step >= planned:
        line = f"trained {step:,} of {planned:,} planned steps"
    else:
        why = "the clock ran out first" if stopped_by == StopReason.TIME_BUDGET else stopped_by
        line = f"stopped at {step:,} of {planned:,} planned steps ({why})"
    if plan and plan.revisions:
        line += f"; {plan.revisions_line()}; replay exactly with {plan.replay}"
    return line


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


class Run:
    """One run as the loop trains it: its settled settings, data, learner, folder, progress and
    plan, and how they are saved, restored and revised. `Trainer` adds the loop."""

    def __init__(
        self,
        cfg: TrainConfig,
        resume: bool = False,
        progress_bar: bool = True,
        overwrite: bool = False,
        callbacks: Sequence[Callback] = (),
        replay: Plan | None = None,
    ) -> None:
        check_config(cfg)
        self.asked = cfg  # auto left in: settled again as facts arrive (settle.py)
        self.dist = distributed.detect()  # torchrun: this process's rank among several
        self.progress_bar, self.callbacks = progress_bar and self.dist.is_main, list(callbacks)
        self.device = distributed.init(self.dist, resolve_device(cfg.device))
        self.threads = use_threads(cfg.threads)  # it can change results: recorded in config.json
        self.amp, self.amp_reason = resolve_amp(cfg.amp, self.device)
        self.folder, self.resumed = RunFolder(cfg.out, writes=self.dist.is_main), resume
        corpus, ckpt = open_data(cfg, self.folder, resume, overwrite, not self.progress_bar)
        self.vocab, self.inputs, self.corpus_line = corpus.vocab, corpus.inputs, corpus.line()
        self.record = dict(  # config.json's facts beside the settings
            vocab_size=len(self.vocab), corpus_source=corpus.source, torch_threads=self.threads
        )
        self.facts = Facts(amp=self.amp, **{"plan": replay, **resumed_facts(ckpt, self.folder)})
        data = settle(cfg, self.facts).cfg  # how the text is cut sets an epoch's steps
        self.train_ids, self.val_ids = corpus.split(data.val_fraction)
        self.sampler = make_sampler(data, self.train_ids, self.dist, sampler_layout(ckpt))
        self.record["sampler_layout"] = self.sampler.layout  # the batch order (samplers.py)
        check_validation(data.val_fraction, self.val_ids)
        self.facts, self.p = replace(self.facts, steps_per_epoch=len(self.sampler)), Progress()
        self._build(settle(cfg, self.facts))
        if ckpt is not None:
            self.restore(ckpt)
        elif self.plan is not None:  # a replay: the recorded plan, revisions and all
            self.p.planned_steps = self.plan.total
        self._reschedule()
        self.meter = LossMeter(self.p, self.device, self.cfg, len(self.vocab))
        self.watch = Watch(self.cfg, self.folder, self.vocab, self.val_ids, len(self.sampler),
                           self.dist, self._say)  # fmt: skip
        self.replanning = Replanning(cfg.revise_every, cfg.log_every, self.dist, self.device)
        self.work = work_of(self.cfg, len(self.sampler))  # what a revised plan pays for

    def _build(self, settled: Settled) -> None:
        """Run as `settled` says: its model, optimizer and schedule, the model from the seed."""
        self.settled, self.cfg, self.plan = settled, settled.cfg, settled.plan
        carries = self.sampler.carries_state
        self.learner = Learner(self.cfg, len(self.vocab), self.device, self.amp, carries)
        self._reschedule()
        self.model = self.learner.model  # the plain module (not DDP, not compiled)

    def _say(self, line: str) -> None:
        if self.progress_bar and line:
            tqdm.write(line, file=sys.stdout)

    def save(self, best: bool = False) -> None:
        """Write checkpoint.pt (and best.pt), the running sums folded into the progress."""
        self.meter.fold()
        # the payload is built on every rank (it gathers the hidden state), written on rank 0
        self.folder.save_checkpoint(partial(checkpoint.save, self.payload()), best)
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
            "plan": self.plan.record() if self.plan else None,
            "sampler_layout": self.sampler.layout,
            "output_dropout": True,  # --dropout covers the last layer's output (model.py)
        }

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from a `payload()` (read by resume.read_resumed): the run goes on exactly
        where it was, once every part of its state is checked against this run."""
        progress = check_state(ckpt, self.learner, len(self.sampler), self.folder)
        self.learner.load_state_dict(ckpt, self.sampler.rows)
        vars(self.p).update(asdict(progress))  # in place: the meter holds p
        self.learner.reschedule(self.schedule_steps())  # the plan kept, --lr perhaps changed

    def _write_config(self) -> None:
        """config.json: every effective setting, and the plan once there is one."""
        plan = {"plan": self.plan.record()} if self.plan else {}
        self.folder.write_config({**asdict(self.cfg), **self.record, **plan})

    def schedule_steps(self) -> int:
        """The steps the schedule spans: the budget's plan, else --epochs or --max-steps."""
        return self.p.planned_steps or span(self.cfg, len(self.sampler))  # 0: a budget will plan

    def _reschedule(self) -> None:
        """The schedule over `schedule_steps()`: a plan's first steps, then its revisions."""
        plan = self.plan
        if plan is None:
            self.learner.reschedule(self.schedule_steps())
        else:
            self.learner.reschedule(plan.steps, plan.schedule())

    def measure_costs(self) -> Costs:
        """What a step, a validation, an evaluation, a sample and a checkpoint cost here
        (measure.py); a public hook for known costs (the tests' plans do not depend on the
        machine's load)."""
        budget_s, val_chars = self.cfg.time_budget, len(self.val_ids)

        def probe() -> None:  # built on every rank (it gathers the state), written on rank 0
            self.folder.probe(partial(checkpoint.save, self.payload()))

        watched = self.watch.costs(self.model)
        return measure(self.learner, self.sampler, probe, self.p.epoch, budget_s, val_chars,
                       *watched)  # fmt: skip

    def fit_budget(self) -> None:
        """Measure and settle again with the costs (the steps the budget allows), until the
        plan is made from the costs of the model it trains: a first plan of many epochs may
        change the model, built from the seed as a replay builds it."""
        while self.settled.needs_costs:
            costs, spent_s = agree(self.measure_costs(), self.p.elapsed_s, self.dist, self.device)
            facts = replace(self.facts, costs=costs, spent_s=spent_s, step=self.p.step)
            self.p.elapsed_s += costs.measure_s  # the measuring is spent from the budget
            settled = settle(self.asked, replace(facts, plan=self.plan))  # the first plan, if any
            if settled.needs_costs:  # its model is not the one measured
                self._say(many_epochs_line(settled))
                self._build(settled)
            self.settled, self.cfg, self.plan = settled, settled.cfg, settled.plan
        self.p.planned_steps = self.plan.total
        self._reschedule()

    def _revise(self) -> None:
        """A budget's plan fitted again to the recent step rate, when due: the schedule
        stretches or shrinks, config.json records the revision."""
        plan, cfg = self.plan, self.cfg
        if not (cfg.time_budget and plan and plan.measured):
            return
        p = self.p
        revised = self.replanning.revise(
            plan, p.step, p.elapsed_s, cfg.time_budget, self.work, cfg.out
        )
        if revised is not None:
            self.settled = settle(self.asked, replace(self.facts, plan=revised))
            self.cfg, self.plan, p.planned_steps = self.settled.cfg, revised, revised.total
            self._reschedule()
            self._write_config()


class Trainer(Run):
    """One run: `run()` is the loop."""

    def run(self) -> TrainResult:
        """Train until --epochs, --max-steps, the time budget or a signal stops the run."""
        p, row = self.p, None
        with self.folder.session(fresh=not self.resumed, step=p.step), Interrupts() as signals:
            self._say(self.corpus_line)  # first what it reads, then (describe) how
            self._write_config()
            if self.settled.needs_costs:
                self.fit_budget()
                self._write_config()
            steps = self.schedule_steps()
            self._say(describe(self.cfg, self.learner, steps, self.amp_reason, self.threads))
            self._say(self.plan.line() if self.plan else "")
            self.watch.start({**asdict(self.cfg), **self.record})
            # a resumed run may already be at its limit: then it trains no step, writes no row
            stopped_by = self._stop_reason(signals)
            if stopped_by and stopped_by.is_signal and not p.step:
                self.save()  # stopped while measuring: --resume keeps the plan and trains it
            while p.epoch < self.cfg.epochs and stopped_by is None:
                stopped_by = self._train_epoch(signals)
                finished = p.batch == len(self.sampler)
                if stopped_by and stopped_by.is_signal and not finished:
                    self.save()  # no metrics row: the epoch goes on when resumed
                    break
                # an epoch whose last batch was trained is finished, whatever stopped the run
                row = self._end_epoch(partial=not finished)
                if stopped_by is None and p.epoch < self.cfg.epochs:  # its end may spend the budget
                    stopped_by = self._stop_reason(signals)
            self.watch.close()
        stopped_by = stopped_by or StopReason.EPOCHS
        self._say(end_line(p.step, self.schedule_steps(), stopped_by, self.plan))
        return TrainResult(self.folder.path, p, stopped_by, row)

    def _train_epoch(self, signals: Interrupts) -> StopReason | None:
        """Train the epoch's remaining batches; why the run stops, if it does."""
        cfg, p, stopped_by = self.cfg, self.p, None
        bar = EpochProgress(p.epoch + 1, cfg.epochs, len(self.sampler), p.batch,
                            enabled=self.progress_bar, budget_s=cfg.time_budget)  # fmt: skip
        tick = time.perf_counter()
        for X, Y in self.sampler.batches(p.epoch, p.batch):
            self.meter.add(*self.learner.step(*self.learner.to_device(X, Y)))
            now = time.perf_counter()
            p.count_step(now - tick)
            self.replanning.add(now - tick)
            tick = now
            bar.step()
            for callback in self.callbacks:
                callback.on_step(self)
            if p.step % cfg.log_every == 0:  # the only host syncs: every log_every steps
                self.meter.fold()  # the sums read, checked for NaN, kept in p
                self.watch.train_row(p, self.learner.lr)
                mean, left = self.meter.mean(), p.seconds_left(cfg.time_budget, len(self.sampler))
                bar.report(
                    mean, perplexity(mean), p.chars_per_s(cfg.seq_len * cfg.batch_size), left
                )
            if cfg.save_every and p.step % cfg.save_every == 0:
                self.save()
            stopped_by = self._stop_reason(signals)
            if stopped_by:
                break
            if self.watch.due(p):  # its time is the budget's, not the step's
                self.watch.between(self.model, p, self.learner.lr)
                tick = time.perf_counter()
                p.elapsed_s += tick - now
            self._revise()
        bar.close()
        return stopped_by

    def _end_epoch(self, partial: bool) -> dict[str, Any]:
        """Validate, then write the epoch's metrics row, checkpoints and sample."""
        start = time.perf_counter()  # epoch-end work is part of the time budget
        self.meter.fold()
        cfg, p, E = self.cfg, self.p, len(self.sampler)
        val_loss = validate(self.model, self.val_ids, cfg.seq_len, cfg.batch_size, self.dist)
        p.elapsed_s += time.perf_counter() - start
        start = time.perf_counter()
        row = epoch_row(p, val_loss, self.learner.lr, cfg.seq_len * cfg.batch_size, partial, E)
        self.watch.row(row)
        best = p.keep_best(val_loss)  # the full validation's: never an evaluation's part
        if not partial:
            p.next_epoch()
            self.learner.state = None  # the consecutive sampler starts its streams afresh
        self.save(best=best)
        self._say(epoch_summary(row))
        self.watch.epoch_end(self.model, row)
        for callback in self.callbacks:
            callback.on_epoch_end(self, row)
        p.elapsed_s += time.perf_counter() - start  # saving and sampling (after the checkpoint)
        return row

    def _stop_reason(self, signals: Interrupts) -> StopReason | None:
        return stop_reason(self.cfg, self.p, len(self.sampler), signals.signum)


def train(cfg: TrainConfig, resume: bool = False, **options: Any) -> TrainResult:
    """Train a model as `cfg` says (continuing the run in cfg.out when `resume`); `options`
    are Trainer's: progress_bar, overwrite, callbacks.

    A fresh run refuses a folder that already holds one unless `overwrite`: hours of training
    are not lost to a repeated command.
    """
    expect("resume", resume, "bool")
    with distributed.session():  # under torchrun: one process of several
        result = Trainer(cfg, resume, **options).run()
    if result.stopped_by == StopReason.TIME_BUDGET and not result.progress.step:
        raise CharLMError(
            f"{flag('time_budget', f'{cfg.time_budget:g}')} s is too short for one step here: "
            f"measuring what a step costs took {result.progress.elapsed_s:.2g} s of it; nothing "
            f"was trained or saved (give a longer budget)"
        )
    return result


def dry_run(
    cfg: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    replay: Plan | None = None,
) -> list[str]:
    """What `train(cfg, resume)` would train, as lines to print: every setting as settled, and
    under a time budget the measured costs and the plan (under torchrun, rank 0's: the other
    ranks return none). Nothing is written (no run folder, no lock): a checkpoint's cost is
    measured in a temporary folder."""
    with distributed.session():
        trainer = Trainer(cfg, resume, progress_bar=not quiet, overwrite=overwrite, replay=replay)
        with tempfile.TemporaryDirectory(prefix="charlm-dry-run-") as tmp:
            trainer.folder = RunFolder(tmp, writes=trainer.folder.writes)
            if trainer.settled.needs_costs:
                trainer.fit_budget()
    facts = {**trainer.record, "steps_per_epoch": len(trainer.sampler)}
    steps, plan = trainer.schedule_steps(), trainer.plan
    lines = [
        "settled (a dry run: nothing is written)",
        *settled_lines(trainer.settled, cfg, facts),
        describe(trainer.cfg, trainer.learner, steps, trainer.amp_reason, trainer.threads),
    ]
    if plan is not None and plan.measured is not None:
        lines.append(plan.measured.line())
    lines += [plan.line()] if plan else []
    return lines if trainer.dist.is_main else []
