"""The checked reader of a run's checkpoint for --resume: every part of the payload, against
the run it continues, before anything is built from it.

    format, version      checkpoint.load (through the opener: never a FIFO, never a pickle)
    what can continue    sampler_layout, output_dropout: the batch order and the model this
                         charlm trains (older runs are refused with the reason)
    config               config.saved_config: every setting saved, known, of its type, in range
    plan                 budget.PLAN
    inputs, vocab        the documents' identities (corpus.IDENTITY), distinct characters
    progress             meter.Progress.from_record; its batch within the epoch, its step the
                         schedule's
    model, optimizer,    Learner.state_schema: the weights', the optimizer's and the carried
    scheduler, rng,      state's shapes and dtypes against the model being resumed, the RNG
    state                state's size

`read_resumed` checks what the run's settings are settled from (before the model is built);
`check_state` the rest, once the learner that will take it exists. Nothing of the file reaches
torch's load_state_dict, numpy or the optimizer before both have accepted it.
"""

from __future__ import annotations

from typing import Any

from charlm import checkpoint
from charlm.budget import Plan
from charlm.config import TrainConfig, saved_config
from charlm.corpus import IDENTITY
from charlm.errors import CharLMError, flag
from charlm.learner import Learner
from charlm.meter import Progress
from charlm.run import RunFolder
from charlm.samplers import LAYOUTS
from charlm.schema import Bool, Int, Record, Seq, Str, check
from charlm.storage import shown

# the keys a resumed run reads besides the learner's (Learner.state_schema)
PAYLOAD = Record(
    {"inputs": Seq(IDENTITY), "vocab": Seq(Str(most=1, nul=True), least=1, most=0x110000)},
    {"sampler_layout": Int(), "output_dropout": Bool()},
    extra=True,
)


def source(folder: RunFolder) -> str:
    """How messages name the checkpoint being resumed."""
    return f"cannot resume from {shown(folder.latest)}"


def read_resumed(folder: RunFolder) -> dict[str, Any]:
    """The checkpoint of the run in `folder`, its settings, plan, inputs and vocabulary
    checked (`check_state` checks the rest once the learner exists)."""
    ckpt = checkpoint.load(folder.latest)
    continues(ckpt, folder)
    check(PAYLOAD, ckpt, source(folder))
    config_of(ckpt, folder)
    plan_of(ckpt, folder)
    return ckpt


def config_of(ckpt: dict[str, Any], folder: RunFolder) -> TrainConfig:
    """The settings the run saved: every one of them (a resumed run continues them all)."""
    return saved_config(ckpt.get("config"), source(folder), complete=True)


def plan_of(ckpt: dict[str, Any], folder: RunFolder) -> Plan | None:
    """The run's plan, if it has one."""
    record = ckpt.get("plan")
    return None if record is None else Plan.from_record(record, f"{source(folder)}: plan")


def continues(ckpt: dict[str, Any], folder: RunFolder) -> None:
    """Refuse a run this charlm cannot continue as it began, saying why."""
    out = folder.path
    config = ckpt.get("config")
    dropout = config.get("dropout") if isinstance(config, dict) else None
    if dropout and not ckpt.get("output_dropout"):
        raise CharLMError(
            f"cannot resume the run in {out}: it was trained with {flag('dropout')} between "
            f"layers only, and this charlm applies it before the output layer too, so the rest "
            f"of the run would train another model. Start a new run with "
            f"{flag('overwrite', True)} or another {flag('out', ...)}, or finish this one with "
            f"the charlm that started it"
        )
    if ckpt.get("sampler_layout", 1) not in LAYOUTS:  # before the textbook's samplers
        raise CharLMError(
            f"cannot resume the run in {out}: it was trained with charlm 0.1's batch "
            f"order, which this charlm no longer has (its samplers follow the textbook), so "
            f"the rest of the run would see other batches. Start a new run with "
            f"{flag('overwrite', True)} or another {flag('out', ...)}, or finish this one with "
            f"charlm 0.1"
        )


def check_state(
    ckpt: dict[str, Any], learner: Learner, steps_per_epoch: int, folder: RunFolder
) -> Progress:
    """The run's progress, once the learner's part of the checkpoint fits `learner` (see
    Learner.state_schema) and the progress fits the epoch and the schedule."""
    where = source(folder)
    progress = Progress.from_record(ckpt.get("progress"), f"{where}: progress")
    check(learner.state_schema(), ckpt, where)
    if progress.batch > steps_per_epoch:  # an epoch that would never end
        raise CharLMError(
            f"{where}: progress.batch {progress.batch} is past the end of an epoch "
            f"({steps_per_epoch} batches)"
        )
    if progress.epoch_batches > progress.batch or progress.batch > progress.step:
        raise CharLMError(f"{where}: progress counts more batches than steps")
    last = ckpt["scheduler"]["last_epoch"]
    if last != progress.step:  # the schedule's step is the run's: else another learning rate
        raise CharLMError(
            f"{where}: scheduler.last_epoch {last} is not the step the run is at ({progress.step})"
        )
    return progress
