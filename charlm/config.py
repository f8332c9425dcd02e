"""Every setting of a training run: one dataclass, its defaults, help texts and checks.

Kept apart from the training loop and free of torch, so that the `charlm` command can build its
options and answer --help, --version and Tab completion without importing torch (~2 s).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from charlm.builtin import BUILTIN
from charlm.documents import decoder
from charlm.errors import CharLMError, brief, flag
from charlm.schema import Int, Record, Str, check, parse_json
from charlm.storage import FILE, look, read_text, shown
from charlm.threads import check_threads

MODELS = ("rnn", "lstm", "gru", "mingru", "minlstm")
INITS = ("auto", "textbook", "pytorch")
OPTIMIZERS = ("sgd", "adam", "adamw")
AMP_CHOICES = ("auto", "on", "off")
DEFAULT_EPOCHS = 7  # the run's length when neither --epochs, --max-steps nor a budget is given
SCHEDULES = ("constant", "cosine", "step")
DECODE_ERRORS = ("strict", "replace", "surrogateescape")
DEVICE_HELP = (
    "where to run: auto (the GPU if CUDA has one, else the CPU), or any device torch knows: "
    "cpu, cuda, cuda:1, mps, xpu"
)
SCHEDULE_HELP = (
    "learning-rate schedule over the planned steps: --epochs, --max-steps, or what fits in "
    "--time-budget, whichever is fewest"
)


def _opt(
    default: Any, help: str, choices: tuple[str, ...] | None = None, flag_value: Any = None
) -> Any:
    """A setting; `flag_value` is what the bare flag means when its value is left out."""
    return field(
        default=default, metadata={"help": help, "choices": choices, "flag_value": flag_value}
    )


@dataclass
class TrainConfig:
    """Every setting of a training run; saved as config.json and inside every checkpoint."""

    # one input as a string, several as a sequence: files, folders, globs, names (see inputs.py)
    corpus: str | tuple[str, ...] = _opt(BUILTIN, "training text: files, folders, globs, a name")
    out: str = _opt("runs/charlm", "run folder: checkpoints, metrics.jsonl, config.json")
    # model
    model: str = _opt(
        "lstm",
        "recurrent cell: hand-written rnn, nn.LSTM / nn.GRU, or minGRU / minLSTM (residual "
        "blocks trained in parallel over time; docs/models.md)",
        MODELS,
    )
    embedding_dim: int = _opt(64, "learned embedding size; 0 = one-hot input")
    hidden_size: int = _opt(
        0,
        "hidden units per layer; 0: auto, 384 under a 120 s --time-budget, 640 where a longer "
        "one plans more than 12 epochs, else 448",
    )
    num_layers: int = _opt(1, "stacked recurrent layers")
    dropout: float = _opt(
        -1.0,
        "dropout on each layer's output: between layers and before the output layer; -1: auto, "
        "0.5 where a --time-budget of 120 s or more plans more than 12 epochs, else 0.25",
    )
    init: str = _opt("auto", "weight init (auto: textbook for rnn, pytorch otherwise)", INITS)
    init_std: float = _opt(0.01, "std of the textbook N(0, std^2) init")
    # data
    sampler: str = _opt(
        "random",
        "batch order: random windows (state reset per batch) or consecutive (state carried)",
        ("random", "consecutive"),
    )
    random_offset: bool = _opt(
        False, "shift each epoch's windows by a random phase in [0, seq_len) (not in the textbook)"
    )
    seq_len: int = _opt(
        0,
        "characters per training window (BPTT length); 0: auto, 64 for a --time-budget under "
        "120 s, else 128",
    )
    batch_size: int = _opt(32, "windows per batch")
    val_fraction: float = _opt(0.1, "last fraction of the text held out for validation")
    encoding: str = _opt("utf-8", "text encoding of the corpus")
    errors: str = _opt(
        "strict",
        "undecodable bytes: strict fails, replace reads U+FFFD, surrogateescape keeps them "
        "(and writes them back as they were)",
        DECODE_ERRORS,
    )
    include: tuple[str, ...] = _opt((), "in folders: read only files matching this (repeatable)")
    exclude: tuple[str, ...] = _opt((), "in folders: skip files/folders matching this (repeatable)")
    hidden: bool = _opt(False, "also read hidden files and folders and virtual environments")
    separator: str = _opt(r"\n", r"put between two documents (\n, \t: newline, tab)")
    byte_level: bool = _opt(
        False, "model bytes (a vocabulary of the 256 byte values): any file; bits per byte"
    )
    # optimisation
    optimizer: str = _opt("adam", "optimizer", OPTIMIZERS)
    lr: float = _opt(
        0.0, "learning rate; 0: auto (adam, adamw): 0.01 for a --time-budget under 120 s, else 5e-3"
    )
    weight_decay: float = _opt(0.0, "weight decay")
    clip: float = _opt(1.0, "clip the global gradient norm to this (0: no clipping)")
    lr_schedule: str = _opt("cosine", SCHEDULE_HELP, SCHEDULES)
    warmup_steps: int = _opt(0, "linear warm-up steps")
    lr_step_size: int = _opt(1000, "step schedule: steps between decays")
    lr_gamma: float = _opt(0.5, "step schedule: decay factor")
    # length of the run
    epochs: int = _opt(
        0,
        f"passes over the training text; 0: as many as --max-steps or --time-budget allow, "
        f"else {DEFAULT_EPOCHS}",
    )
    max_steps: int = _opt(0, "stop after this many steps in all (0: no limit)")
    time_budget: float = _opt(
        0.0,
        "seconds for the whole run, validation included: the steps that fit are measured and "
        "planned at the start, revised as the run goes, and the LR schedule spans them "
        "(0: no limit)",
    )
    revise_every: float = _opt(
        3.0,
        "a --time-budget's plan is fitted again to the recent step rate every N seconds of "
        "steps (0: planned once, at the start)",
    )
    # bookkeeping
    seed: int = _opt(1337, "random seed: same seed, same data, same result")
    device: str = _opt("auto", DEVICE_HELP)
    threads: int = _opt(0, "CPU threads for torch (0: auto, one per core; see docs/speed.md)")
    eval_every: int = _opt(
        250,
        "validate on the first --eval-chars characters of the validation text every N steps "
        "(0: only the full validation, at epoch ends)",
    )
    eval_chars: int = _opt(8192, "characters of the validation text each --eval-every scores")
    sample_every: int = _opt(1, "print a sample every N epochs (0: no samples at all)")
    sample_steps: int = _opt(
        500, "also print a sample every N steps into an epoch (0: at epoch ends only)"
    )
    sample_length: int = _opt(200, "characters per training sample")
    save_every: int = _opt(0, "also checkpoint every N steps (0: only at epoch ends)")
    log_every: int = _opt(
        20, "steps between training rows in metrics.jsonl, progress-bar updates and NaN checks"
    )
    tensorboard: str = _opt(
        "", "also log to TensorBoard in this folder (pip install tensorboard; '': no)"
    )
    amp: str = _opt(
        "auto",
        "bfloat16 autocast; auto: on where the hardware computes bfloat16 (CUDA GPUs that "
        "support it, CPUs with AVX512-BF16 or AMX); a bare --amp means on",
        AMP_CHOICES,
        flag_value="on",
    )
    compile: bool = _opt(False, "torch.compile the model")

    def __post_init__(self) -> None:
        if isinstance(self.amp, bool):  # configs and checkpoints from before --amp auto
            self.amp = "on" if self.amp else "off"

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **overrides: Any) -> TrainConfig:
        """The settings of a .json / .toml file (see `read_settings`), `overrides` on top."""
        return cls(**{**read_settings(path), **overrides})


MODEL_FIELDS = (
    "model",
    "embedding_dim",
    "hidden_size",
    "num_layers",
    "dropout",
    "init",
    "init_std",
)
# the settings that say how text is read: a run reads its corpus with them, an evaluation its
# inputs (inputs.Reading), and both commands take the same flags for them
READING = ("encoding", "errors", "include", "exclude", "hidden", "separator")

POSITIVE = ("num_layers", "batch_size", "sample_length", "log_every", "lr_step_size",
            "eval_chars")  # fmt: skip
NON_NEGATIVE = ("epochs", "hidden_size", "embedding_dim", "max_steps", "time_budget",
                "sample_every", "save_every", "warmup_steps", "clip", "weight_decay", "seq_len",
                "lr", "eval_every", "sample_steps", "revise_every")  # fmt: skip
# sizes torch can index, and a depth that can be built in seconds; any float beyond FLOAT_MAX
# overflows once it meets float32 (an lr of 1e308 is a torch traceback, not a setting)
SIZE_MAX, LAYERS_MAX, FLOAT_MAX = 2**31 - 1, 1024, 1e30
# a budget whose plan, at a microsecond a step, still counts steps and epochs below 2**63: what
# a run settles from it, --resume accepts
TIME_BUDGET_MAX = 1e9
SIZES = ("hidden_size", "embedding_dim", "seq_len", "batch_size", "sample_length")


# the values that mean auto: settle.py chooses them by the budget and the plan
AUTO = {"hidden_size": 0, "seq_len": 0, "lr": 0.0, "dropout": -1.0}
AUTO_FIELDS = tuple(AUTO)


def check_config(cfg: TrainConfig) -> None:
    """Refuse settings that cannot train, naming the flag, before any work is done."""
    if not isinstance(cfg, TrainConfig):
        raise CharLMError(f"the settings of a run must be a TrainConfig, got {brief(cfg)}")
    check_types(cfg)
    for name in POSITIVE:
        if getattr(cfg, name) <= 0:
            raise CharLMError(f"{flag(name)} must be > 0, got {brief(getattr(cfg, name))}")
    for name in NON_NEGATIVE:
        if getattr(cfg, name) < 0:
            raise CharLMError(f"{flag(name)} must be >= 0, got {brief(getattr(cfg, name))}")
    check_threads(cfg.threads)
    for f in fields(TrainConfig):  # NaN passes every comparison, infinity means nothing here
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not (math.isfinite(value) and abs(value) <= FLOAT_MAX):
            raise CharLMError(
                f"{flag(f.name)} must be a finite number up to 1e30, got {brief(value)}"
            )
        if isinstance(value, int) and not -(2**63) <= value < 2**63:  # what torch can take
            raise CharLMError(f"{flag(f.name)} is out of range: {brief(value)}")
    for name in SIZES:
        if getattr(cfg, name) > SIZE_MAX:
            raise CharLMError(
                f"{flag(name)} must be at most {SIZE_MAX}, got {brief(getattr(cfg, name))}"
            )
    if cfg.num_layers > LAYERS_MAX:
        raise CharLMError(
            f"{flag('num_layers')} must be at most {LAYERS_MAX}, got {brief(cfg.num_layers)}"
        )
    if cfg.time_budget > TIME_BUDGET_MAX:  # its plan's steps and epochs stay numbers torch takes
        raise CharLMError(
            f"{flag('time_budget')} must be at most {TIME_BUDGET_MAX:g} seconds (31 years), got "
            f"{cfg.time_budget:g}"
        )
    _check_factors(cfg)
    decoder(cfg.encoding, cfg.errors)  # a text encoding, a known handler


def check_types(cfg: TrainConfig) -> None:
    """Each setting of the type its field declares (the Python API takes anything)."""
    for f in fields(TrainConfig):
        value, kind = getattr(cfg, f.name), f.type if isinstance(f.type, str) else f.type.__name__
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, int | float) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "str": isinstance(value, str),
        }.get(kind)
        if ok is None:  # tuple[str, ...], or one string or several (corpus)
            ok = isinstance(value, tuple | list) and all(isinstance(v, str) for v in value)
            ok = ok or (kind.startswith("str") and isinstance(value, str))
        if not ok:
            raise CharLMError(f"{flag(f.name)} must be {kind}, got {brief(value)}")
        texts = [value] if isinstance(value, str) else value if kind.endswith("...]") else []
        if any("\x00" in text for text in texts):  # no path, pattern or separator holds one
            raise CharLMError(f"{flag(f.name)} holds a NUL byte: {brief(value)}")
    if not cfg.out:
        raise CharLMError(f"{flag('out')} must name a folder, got ''")
    if not cfg.corpus:
        raise CharLMError("no corpus: name files, folders, globs or a corpus (or 'builtin')")


def _check_factors(cfg: TrainConfig) -> None:
    if not 0 <= cfg.seed < 2**63:
        raise CharLMError(f"{flag('seed')} must be in [0, 2**63), got {brief(cfg.seed)}")
    if not 0 < cfg.lr_gamma <= 1:
        raise CharLMError(
            f"{flag('lr_gamma')} is a decay factor: it must be in (0, 1], got {brief(cfg.lr_gamma)}"
        )
    if cfg.optimizer == "sgd" and not cfg.lr:
        raise CharLMError(
            f"{flag('optimizer', 'sgd')} has no automatic {flag('lr')}: give one (the "
            f"textbook's: 100)"
        )
    if not (0 <= cfg.dropout < 1 or cfg.dropout == AUTO["dropout"]):
        raise CharLMError(
            f"{flag('dropout')} must be in [0, 1), or -1 for auto, got {brief(cfg.dropout)}"
        )
    if not 0 <= cfg.val_fraction < 1:
        raise CharLMError(
            f"{flag('val_fraction')} must be in [0, 1), got {brief(cfg.val_fraction)}"
        )
    if not cfg.init_std > 0:
        raise CharLMError(f"{flag('init_std')} must be > 0, got {brief(cfg.init_std)}")
    for f in fields(TrainConfig):
        choices = f.metadata.get("choices")
        if choices and getattr(cfg, f.name) not in choices:
            raise CharLMError(f"{flag(f.name)} must be one of {', '.join(choices)}")


# keys a run's config.json records beside the settings, and their declared types: accepted, so
# that a run can be repeated with `charlm train --config runs/charlm/config.json`, and ignored
# there. The plan is the budget's to read where a run resumes (budget.Plan), from a checkpoint
RECORD = {
    "vocab_size": Int(1, 0x110000),
    "corpus_source": Str(),
    "torch_threads": Int(1, 1 << 20),
    "sampler_layout": Int(1, 1 << 20),
    "plan": Record({}, extra=True),
}
RECORD_KEYS = tuple(RECORD)
SETTINGS_BYTES = 1 << 20  # a settings file or config.json: a few KB; more is not one
# what every checkpoint of this layout records: a resumed run continues every one of them
# (a setting added later is absent from older checkpoints, and takes its default)
SAVED = (
    "corpus", "out", "model", "embedding_dim", "hidden_size", "num_layers", "dropout", "init",
    "init_std", "sampler", "random_offset", "seq_len", "batch_size", "val_fraction", "encoding",
    "errors", "include", "exclude", "hidden", "separator", "byte_level", "optimizer", "lr",
    "weight_decay", "clip", "lr_schedule", "warmup_steps", "lr_step_size", "lr_gamma", "epochs",
    "max_steps", "time_budget", "seed", "device", "threads", "sample_every", "sample_length",
    "save_every", "log_every", "amp", "compile",
)  # fmt: skip


def _kinds() -> dict[str, str]:
    """Each setting's declared type, as written in TrainConfig."""
    return {f.name: str(f.type) for f in fields(TrainConfig)}


def read_settings(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Training settings from a .json or .toml file, so a run is a file that can be shared.

    Keys are TrainConfig field names, with dashes or underscores (`hidden-size`, `hidden_size`).
    Only the settings the file names are returned: what it leaves out keeps its default.
    """
    return read_run_config(path)[0]


def read_run_config(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(settings, record) of a settings file or a run's config.json (see `read_settings`):
    every key known, every value of its declared type; the record's keys (RECORD) checked."""
    data = _read_table(path)
    names = [key.replace("-", "_") for key in data]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise CharLMError(f"{path}: the setting {twice[0]!r} is given twice")
    kinds = _kinds()
    unknown = [k for k in data if k.replace("-", "_") not in kinds and k not in RECORD]
    if unknown:
        raise CharLMError(
            f"{path}: unknown setting(s): {', '.join(unknown)} (the settings are the options "
            f"of `charlm train --help`)"
        )
    settings = {
        key.replace("-", "_"): _setting(path, key, value, kinds[key.replace("-", "_")])
        for key, value in data.items()
        if key.replace("-", "_") in kinds
    }
    record = check(Record({}, RECORD), {k: v for k, v in data.items() if k in RECORD}, str(path))
    return settings, record


def saved_config(record: Any, source: str, complete: bool = False) -> TrainConfig:
    """The settings a run saved (a checkpoint's "config"), read as a settings file is: every
    key known, every value of its declared type and within its range (one line naming
    `source` otherwise). `complete`: every setting in SAVED must be there, as a resumed run
    continues each of them (without, `info` shows what an older run saved)."""
    if not isinstance(record, dict):
        raise CharLMError(f"{source}: its settings are not an object, got {brief(record)}")
    kinds = _kinds()
    unknown = [str(k) for k in record if k not in kinds]
    if unknown:
        raise CharLMError(f"{source}: unknown setting(s): {', '.join(unknown)[:200]}")
    missing = [k for k in SAVED if k not in record] if complete else []
    if missing:
        raise CharLMError(f"{source}: setting(s) missing: {', '.join(missing)}")
    cfg = TrainConfig(**{k: _setting(source, k, v, kinds[k]) for k, v in record.items()})
    try:
        check_config(cfg)
    except CharLMError as e:
        raise CharLMError(f"{source}: {e}") from None
    return cfg


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys name each setting once (`hidden-size` and `hidden_size` too)."""
    seen: set[str] = set()
    for key, _ in pairs:
        name = key.replace("-", "_")
        if name in seen:
            raise ValueError(f"the setting {key!r} is given twice")
        seen.add(name)
    return dict(pairs)


def _read_table(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The one table of settings a .json or .toml file holds, read through the opener."""
    look(path, FILE, "config file", missing=f"no such config file: {shown(path)}")
    suffix = Path(path).suffix.lower()
    if suffix not in (".json", ".toml"):
        raise CharLMError(f"{shown(path)}: a config file must end in .json or .toml")
    text = read_text(path, "config file", SETTINGS_BYTES)
    if suffix == ".json":
        data = parse_json(text, shown(path), "a config file", _no_duplicates)
    else:
        try:
            import tomllib
        except ModuleNotFoundError:
            raise CharLMError(
                f"{path}: TOML config files need Python 3.11 or newer; use a .json file"
            ) from None
        try:
            data = tomllib.loads(text)
        except (tomllib.TOMLDecodeError, RecursionError, ValueError) as e:
            raise CharLMError(f"{shown(path)} is not valid TOML: {str(e)[:100]}") from None
    if not isinstance(data, dict):
        raise CharLMError(f"{path} must hold one object of settings, got {type(data).__name__}")
    return data


def _setting(path: str | os.PathLike[str], key: str, value: Any, kind: str) -> Any:
    """One value of a config file, checked against its field's declared type."""
    if kind.endswith("tuple[str, ...]"):  # corpus (one or several), --include, --exclude
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        if isinstance(value, str):
            return value if kind.startswith("str") else (value,)
        raise CharLMError(f"{path}: {key} must be a string or a list of strings")
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:  # `lr = 1` and 400 zeros, in TOML
            why = f"must be a number up to 1e30, got {brief(value)}"
            raise CharLMError(f"{path}: {key} {why}") from None
    if key.replace("-", "_") == "amp" and isinstance(value, bool):  # before --amp auto existed
        value = "on" if value else "off"
    wanted = {"int": int, "float": float, "str": str, "bool": bool}[kind]
    if not isinstance(value, wanted) or (kind == "int" and isinstance(value, bool)):
        raise CharLMError(f"{path}: {key} must be {kind}, got {brief(value)}")
    return value
