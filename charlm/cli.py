"""The `charlm` command: a thin click layer over the library functions.

Every training flag is generated from a TrainConfig field, so the dataclass stays the one place
where settings, defaults and help live. Mistakes a user can make surface as CharLMError and end
here as one line on stderr with exit code 1.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import shlex
import sys
from dataclasses import MISSING, fields, replace
from typing import TYPE_CHECKING, Any

import click

from charlm import __version__
from charlm.api import Limits
from charlm.config import DEVICE_HELP, READING
from charlm.console import (
    PIPE_CLOSED_EXIT,
    OutputClosed,
    OutputFailed,
    forgive_output,
    guard_streams,
    silence_stdout,
)
from charlm.errors import CharLMError, command_line
from charlm.export import FORMATS, QUANTIZE
from charlm.scoring import PAGE_CHARS, Scoring

if TYPE_CHECKING:
    from collections.abc import Callable
    from dataclasses import Field

    from charlm.config import TrainConfig
    from charlm.model import CharLM
    from charlm.sampling import Sampling
    from charlm.train import TrainResult
    from charlm.vocab import Vocab


def _say_error(e: Exception) -> None:
    """`error: ...` on one line, whatever the message quotes (a value with a newline, say)."""
    click.echo("error: " + str(e).replace("\r", "\\r").replace("\n", "\\n"), err=True)


def _user_errors(fn):
    """Run a command with messages naming flags (errors.flag); turn a CharLMError (or Ctrl-C
    outside training) into one line and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with command_line():
                result = fn(*args, **kwargs)
            sys.stdout.flush()  # a write error surfaces here, not in the interpreter's exit
            return result
        except CharLMError as e:
            if isinstance(e, OutputFailed):
                silence_stdout()
            _say_error(e)
            sys.exit(1)
        except OutputClosed:
            silence_stdout()
            sys.exit(PIPE_CLOSED_EXIT)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


class _Main(click.Group):
    """The command group, with standard streams that cannot end it in a traceback."""

    def main(self, args: list[str] | None = None, **kwargs: Any) -> Any:
        args = sys.argv[1:] if args is None else list(args)
        guard_streams()  # strict for every command, --help too, until training starts
        try:
            return super().main(args, **kwargs)
        except OutputClosed:  # outside a command: --version, --help
            silence_stdout()
            sys.exit(PIPE_CLOSED_EXIT)
        except OutputFailed as e:
            silence_stdout()
            _say_error(e)
            sys.exit(1)


@click.group(
    cls=_Main,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="charlm")
def main() -> None:
    """charlm: train character-level language models on any UTF-8 text.

    \b
      charlm train corpus.txt             train (or: charlm train, on the built-in corpus)
      charlm generate --prefix "ROMEO:"   continue a prefix with the trained model
      charlm eval perplexity test.txt     perplexity and bits per character of a text
    """


def _config_options(names: tuple[str, ...]) -> Callable[[Any], Any]:
    """One click option per named TrainConfig field, with its help, default and choices: the
    one declaration of a setting, whichever command takes it."""
    from charlm.config import TrainConfig

    declared = {f.name: f for f in fields(TrainConfig)}

    def add(fn: Any) -> Any:
        for name in reversed(names):
            fn = _option(declared[name])(fn)
        return fn

    return add


def _option(f: Field) -> Callable[[Any], Any]:
    """The click option of one TrainConfig field."""
    name = "--" + f.name.replace("_", "-")
    help_text = f.metadata["help"]
    if f.type == "tuple[str, ...]":
        return click.option(name, f.name, multiple=True, help=help_text)
    if f.type in ("bool", bool):
        return click.option(
            f"{name}/--no-{name[2:]}", f.name, default=f.default, help=help_text, show_default=True
        )
    kind = {"int": int, "float": float, "str": str}[
        f.type if isinstance(f.type, str) else f.type.__name__
    ]
    if f.metadata.get("choices"):
        kind = click.Choice(f.metadata["choices"])
    assert f.default is not MISSING
    # a value-less flag (`--amp`) means its flag_value; `--amp off` still takes a value
    bare = {"is_flag": False, "flag_value": f.metadata["flag_value"]}
    return click.option(
        name,
        f.name,
        type=kind,
        default=f.default,
        help=help_text,
        show_default=True,
        **(bare if f.metadata.get("flag_value") is not None else {}),
    )


def _training_flags() -> tuple[str, ...]:
    """Every TrainConfig field but corpus (the positional argument)."""
    from charlm.config import TrainConfig

    return tuple(f.name for f in fields(TrainConfig) if f.name != "corpus")


@main.command(short_help="Train a model on text files, folders, archives or a named corpus.")
@click.argument("corpus", nargs=-1)
@_config_options(_training_flags())
@click.option("--resume", is_flag=True, help="continue the run in --out from its checkpoint.pt")
@click.option("--overwrite", is_flag=True, help="start afresh in an --out that holds a run")
@click.option("--quiet", is_flag=True, help="no progress bar or samples")
@click.option(
    "--config",
    "config_file",
    metavar="PATH",
    help="settings from a .json or .toml file (keys: these flags); flags given override it",
)
@click.option(
    "--dry-run",
    "dry",
    is_flag=True,
    help="print every setting as the run would settle it (a --time-budget's measured costs "
    "and plan too), and write nothing",
)
@click.option(
    "--replay",
    "replay_run",
    help="train the run in this folder again, step for step: its settings and its plan with "
    "the plan's revisions, without a budget (into --out, else FOLDER-replay)",
)
@click.pass_context
@_user_errors
def train(
    ctx: click.Context,
    corpus: tuple[str, ...],
    resume: bool,
    overwrite: bool,
    quiet: bool,
    config_file: str | None,
    dry: bool,
    replay_run: str | None,
    **settings: Any,
) -> None:
    """Train a model on CORPUS: UTF-8 text files, folders, globs or a corpus name (none: the
    built-in corpus).

    Folders are walked in sorted order, leaving out hidden folders, virtual environments and
    binary files (counted); .gz/.bz2/.xz files and .zip members are read as streams. The
    documents are joined with --separator; validation is the last --val-fraction of the
    joined text (a named corpus's declared split wins).

    \b
    Examples:
      charlm train                                   # built-in corpus, offline
      charlm train tinyshakespeare.txt --time-budget 180
      charlm train ~/src/project --include '*.py'    # a source tree
      charlm train enwik8                            # its standard split, bytes
      charlm train corpus.txt --model rnn --embedding-dim 0 --optimizer sgd --lr 1
      charlm train corpus.txt --resume               # continue an interrupted run
      charlm train --config run.toml --epochs 2      # settings from a file, flags win
      charlm train corpus.txt --time-budget 600 --dry-run   # what it would train
      charlm train --replay runs/charlm              # a budget's run again, step for step
    """
    from charlm import distributed
    from charlm.train import dry_run
    from charlm.train import train as run_training

    given = _given(ctx, corpus, config_file, settings)
    cfg, plan = _run_config(settings, given, resume, replay_run)
    if dry:
        for line in dry_run(cfg, resume=resume, overwrite=overwrite, quiet=quiet, replay=plan):
            click.echo(line)  # under torchrun, rank 0 reports for all
        return
    forgive_output()  # training only reports progress: a lost terminal or pipe must not end it
    result = run_training(
        cfg, resume=resume, progress_bar=not quiet, overwrite=overwrite, replay=plan
    )
    if not distributed.detect().is_main:
        sys.exit(result.exit_code)  # under torchrun, rank 0 reports for all
    _say_end(cfg, result, quiet)


def _say_end(cfg: TrainConfig, result: TrainResult, quiet: bool) -> None:
    """How the run ended: where to resume it after a signal, else what to run next."""
    if result.stopped_by.is_signal:
        args = [cfg.corpus] if isinstance(cfg.corpus, str) else list(cfg.corpus)
        corpus_arg = "" if args == ["builtin"] else " " + " ".join(map(shlex.quote, args))
        click.echo(
            f"{result.stopped_by}: stopped at step {result.progress.step}, checkpoint saved in "
            f"{cfg.out}. Resume with: charlm train{corpus_arg} --out {cfg.out} --resume",
            err=True,
        )
        sys.exit(result.exit_code)
    click.echo(f"done ({result.stopped_by}); saved in {cfg.out}")
    _next_commands(cfg, quiet)


def _next_commands(cfg: TrainConfig, quiet: bool) -> None:
    """What a finished run can do next, with its folder and corpus filled in (not --quiet)."""
    if quiet:
        return
    out = shlex.quote(cfg.out)
    click.echo("next:")
    click.echo(f"  charlm generate --checkpoint {out} --length 300 --temperature 0.8")
    click.echo(f"  charlm eval perplexity {_scored_inputs(cfg)} --checkpoint {out}")
    click.echo(f"  charlm plot {out} -o {shlex.quote(os.path.join(cfg.out, 'curves.png'))}")


def _scored_inputs(cfg: TrainConfig) -> str:
    """The run's corpus as `eval perplexity` reads it: a named corpus's test part where it
    declares a split, else its inputs, with the reading flags the run was given."""
    from charlm import catalog
    from charlm.config import TrainConfig

    args = [cfg.corpus] if isinstance(cfg.corpus, str) else list(cfg.corpus)
    if len(args) == 1 and not os.path.lexists(args[0]):
        named = catalog.lookup(args[0])
        if named is not None and named[0].split is not None and named[1] is None:
            args = [f"{args[0]}:test"]
    defaults = TrainConfig()
    for name in READING:
        value, flag = getattr(cfg, name), "--" + name.replace("_", "-")
        if value == getattr(defaults, name):
            continue
        if isinstance(value, bool):
            args.append(flag)
        else:
            args += [a for v in ([value] if isinstance(value, str) else value) for a in (flag, v)]
    return " ".join(map(shlex.quote, args))


def _given(
    ctx: click.Context, corpus: tuple[str, ...], config_file: str | None, settings: dict[str, Any]
) -> dict[str, Any]:
    """The settings a `charlm train` was given: in its --config file, then its flags."""
    from charlm.config import read_settings

    typed = click.core.ParameterSource.COMMANDLINE
    given = {k: v for k, v in settings.items() if ctx.get_parameter_source(k) == typed}
    if corpus:
        given["corpus"] = corpus[0] if len(corpus) == 1 else corpus
    # precedence: defaults < the config file < flags on the command line
    return {**(read_settings(config_file) if config_file else {}), **given}


def _run_config(
    settings: dict[str, Any], given: dict[str, Any], resume: bool, replay: str | None
) -> tuple[Any, Any]:
    """The TrainConfig a `charlm train` runs, and the plan it replays (--replay), if any."""
    from charlm.config import TrainConfig
    from charlm.train import replay_config, resume_config

    if replay is not None and resume:
        raise CharLMError("--replay starts a new run and --resume continues one: give one")
    if replay is not None:
        return replay_config(replay, given)
    out = given.get("out", settings["out"])
    return resume_config(out, given) if resume else TrainConfig(**{**settings, **given}), None


_checkpoint_option = click.option(
    "--checkpoint",
    "checkpoint_path",
    default="runs/charlm",
    show_default=True,
    help="a run folder (its best.pt, else checkpoint.pt) or a checkpoint file",
)
_device_option = click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
_threads_option = click.option(
    "--threads",
    default=0,
    show_default=True,
    help="CPU threads for torch (0: auto, one per core; fewer on a busy machine: docs/speed.md)",
)


@main.command(short_help="Continue a prefix with a trained model.")
@_checkpoint_option
@click.option("--prefix", default="", help="text to continue (printed first, as is)")
@click.option("--length", default=200, show_default=True, help="characters to generate")
@click.option("--temperature", default=1.0, show_default=True, help="<1 sharper, >1 wilder")
@click.option("--top-k", type=int, default=None, help="sample among the k likeliest characters")
@click.option("--top-p", type=float, default=None, help="nucleus sampling: smallest set of mass p")
@click.option("--greedy", is_flag=True, help="always take the likeliest character")
@click.option("--seed", type=int, default=None, help="same seed, same text")
@click.option("--num-samples", default=1, show_default=True, help="samples drawn as one batch")
@click.option("--stream", is_flag=True, help="print characters as they are produced (1 sample)")
@click.option(
    "--amp",
    is_flag=True,
    help="several samples: bfloat16 matmuls (faster on GPUs and CPUs with AVX512-BF16/AMX)",
)
@click.option(
    "--int8",
    is_flag=True,
    help="several samples on CPU: int8 matmuls (fastest on CPUs with AVX512-VNNI)",
)
@click.option(
    "--beam-width",
    type=int,
    default=None,
    help="beam search: the likeliest continuations a beam of this many finds (deterministic; "
    "--num-samples N <= width prints the N best, best first)",
)
@click.option(
    "--interactive",
    is_flag=True,
    help="prompt loop: each line typed is a prefix; Ctrl-D ends (line n uses --seed + n)",
)
@_device_option
@_threads_option
@_user_errors
def generate(
    checkpoint_path: str,
    prefix: str,
    length: int,
    device: str,
    threads: int,
    stream: bool,
    interactive: bool,
    **sampling: Any,
) -> None:
    """Continue --prefix with a trained model.

    Each sample starts on a new line with its prefix; samples are separated by a blank line.

    \b
    Examples:
      charlm generate --prefix "ROMEO:" --length 300 --temperature 0.8 --seed 1
      charlm generate --prefix "ROMEO:" --stream          # watch it being written
      charlm generate --num-samples 64 --int8             # many samples, fast, on a CPU
      charlm generate --num-samples 64 --amp              # many samples, fast, on a GPU
      charlm generate --beam-width 8 --num-samples 3      # the 3 likeliest a beam of 8 finds
      charlm generate --interactive                       # type prefixes, Ctrl-D to quit
    """
    from charlm.sampling import Sampling

    if stream and sampling["num_samples"] != 1:
        raise CharLMError(
            f"--stream prints one sample as it is produced, but --num-samples is "
            f"{sampling['num_samples']}: drop --stream or use --num-samples 1"
        )
    settings = Sampling(length, **sampling)
    if stream:
        settings.check_stream()
    model, vocab, _ = _load(checkpoint_path, device, threads)
    if not interactive:
        _print_samples(model, vocab, prefix, stream, settings)
        return
    # at a terminal the continuation streams (one sample); piped, it prints as in generate
    _interactive(model, vocab, stream or settings.num_samples == 1, settings)


def _print_samples(
    model: CharLM, vocab: Vocab, prefix: str, stream: bool, settings: Sampling
) -> None:
    """Print each sample from a fresh line, prefix first, a blank line between samples."""
    from charlm.generate import generate as sample
    from charlm.generate import stream as sample_stream

    out = sys.stdout
    vocab.encode(prefix)  # a prefix the model cannot read fails before anything is printed
    # one sample is written as it is made, in any length (a beam's only once it is found)
    if settings.beam_width is None and (stream or settings.num_samples == 1):
        out.write(prefix)
        last = prefix
        for (char,) in sample_stream(model, vocab, prefix, settings=settings):
            out.write(char)
            if stream:
                out.flush()
            last = char or last
        out.write("" if last.endswith("\n") else "\n")
        out.flush()
        return
    texts = sample(model, vocab, prefix, settings=settings)
    out.write("\n".join(t if t.endswith("\n") else t + "\n" for t in texts))
    out.flush()


def _interactive(model: CharLM, vocab: Vocab, stream: bool, settings: Sampling) -> None:
    """Read prefixes line by line until end of input or Ctrl-C; a bad prefix is not fatal."""
    tty = sys.stdin.isatty()
    if tty:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing and history for input())
        click.echo("type a prefix and Enter; Ctrl-D (end of input) or Ctrl-C quits", err=True)
    seed = settings.seed
    try:
        for n in itertools.count():
            try:
                line = input("> " if tty else "")
            except EOFError:
                break
            if n and not tty:  # piped: a blank line between continuations, as in generate
                sys.stdout.write("\n")
            # a seeded session is repeatable, and its lines still get different draws
            line_seed = None if seed is None else seed + n - (2**64 if seed + n >= 2**64 else 0)
            numbered = replace(settings, seed=line_seed)
            try:
                _print_samples(model, vocab, line, stream, numbered)
            except CharLMError as e:
                _say_error(e)
    except KeyboardInterrupt:
        pass
    if tty:
        click.echo("", err=True)


@main.group(name="eval", short_help="Score texts with a trained model.")
def eval_group() -> None:
    """Score texts with a trained model."""


@eval_group.command(short_help="Perplexity and bits per character of a text.")
@click.argument("inputs", nargs=-1, required=True)
@_checkpoint_option
@click.option(
    "--seq-len", default=Scoring.seq_len, show_default=True, help="window length (state carried)"
)
@click.option("--skip-unknown", is_flag=True, help="skip characters outside the vocabulary")
@click.option(
    "--streams",
    default=Scoring.streams,
    show_default=True,
    help="score the text as this many pieces in one batch: faster (16: ~4x on a 2-core CPU), "
    "but each piece starts without the text before it (1 is exact)",
)
@_config_options(READING)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option(
    "--html",
    "html_out",
    metavar="PATH",
    default=None,
    help="also write a page of the text coloured by surprisal, top-5 predictions on hover",
)
@click.option(
    "--html-max-chars",
    default=PAGE_CHARS,
    show_default=True,
    help="--html shows at most this many characters (from the start)",
)
@click.option(
    "--dynamic",
    is_flag=True,
    help="dynamic evaluation: after scoring each --seq-len window, take an SGD step on it, so "
    "later text is predicted by a model adapted to the text so far (one stream; slower)",
)
@click.option(
    "--dynamic-lr",
    type=float,
    default=None,
    help="--dynamic: SGD step size  [default: tuned on training text, docs/evaluation.md]",
)
@click.option(
    "--dynamic-decay",
    type=float,
    default=None,
    help="--dynamic: pull the weights back towards the trained ones by this fraction per window"
    "  [default: the value tuned on training text, 0 for both updates]",
)
@click.option(
    "--dynamic-rms",
    default=None,
    help="--dynamic: Krause et al.'s RMS-normalised update, with gradient statistics from the "
    "first 100,000 characters of this TRAINING text (never the scored one; a file, folder or "
    "corpus name, read as INPUTS are)",
)
@_device_option
@_threads_option
@_user_errors
def perplexity(
    inputs: tuple[str, ...],
    checkpoint_path: str,
    as_json: bool,
    device: str,
    threads: int,
    html_out: str | None,
    html_max_chars: int,
    **settings: Any,  # Scoring's (--seq-len, --streams, --dynamic...) and Reading's
) -> None:
    """Perplexity and bits per character (per byte, for a byte-level model) of INPUTS.

    INPUTS are read as `charlm train` reads them (files, folders, globs, .gz/.zip, names;
    NAME:PART is one part of a named corpus's split, e.g. enwik8:test) and joined with
    --separator into one text. Every character after the first is scored, the state carried
    through the whole text, across document boundaries too (with --streams N, through each of
    N pieces). A bar shows progress on a terminal.
    --dynamic lets a copy of the model learn from each window once it is scored (the
    checkpoint is not changed).

    \b
    Example:
      charlm eval perplexity test.txt --checkpoint runs/charlm --json
      charlm eval perplexity enwik8:test --checkpoint runs/enwik8    # the standard test part
      charlm eval perplexity test.txt --html surprisal.html   # open it in a browser
      charlm eval perplexity test.txt --dynamic               # adapt to the text as it reads
      charlm eval perplexity test.txt --dynamic --dynamic-rms train.txt   # Krause et al.'s RMS
    """
    from charlm.inputs import Reading
    from charlm.report import evaluate_inputs
    from charlm.storage import check_target

    if html_out is not None:  # a page that cannot be written is refused before the scoring
        check_target(html_out, role="--html")
    reading = Reading(**{name: settings.pop(name) for name in READING})
    page = html_max_chars if html_out is not None else None
    scoring = Scoring(**settings, html_max_chars=page)  # refused here, before the model loads
    model, vocab, _ = _load(checkpoint_path, device, threads)
    report = evaluate_inputs(model, vocab, inputs, scoring, reading, model_name=checkpoint_path,
                             progress=True, say=_say)  # fmt: skip
    if html_out is not None:
        report.write_html(html_out)
        click.echo(f"wrote {html_out}", err=True)
    click.echo(json.dumps(report.as_dict()) if as_json else report.text())


def _say(line: str) -> None:
    """What the library reports on the way (what was read, what it learns from): stderr."""
    click.echo(line, err=True)


def _load(checkpoint_path: str, device: str, threads: int) -> tuple[CharLM, Vocab, dict]:
    """The model to generate or score with, on --threads CPU threads."""
    from charlm.checkpoint import load_model
    from charlm.threads import use_threads

    use_threads(threads)
    return load_model(checkpoint_path, device)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} KB"


LIMIT_HELP = {
    "max_batch": "streams stepped together as one batch",
    "queue": "streams waiting to join the batch; past it a request gets 503 and Retry-After",
    "max_tokens": "the largest max_tokens a completion may ask for (characters)",
    "max_prompt": "characters of a prompt, or of a text to score",
    "max_n": "choices in one request (n x prompts)",
    "max_body": "bytes of a request body",
    "timeout": "seconds a client may take to send a request's head or its body",
}


def _limit_options(fn: Any) -> Any:
    """One option per limit of `charlm.api.Limits`, its default the dataclass's."""
    for name in reversed(LIMIT_HELP):
        default = getattr(Limits, name)
        fn = click.option(
            "--" + name.replace("_", "-"),
            type=type(default),
            default=default,
            show_default=True,
            help=LIMIT_HELP[name],
        )(fn)
    return fn


@main.command(short_help="Serve models over HTTP: an OpenAI-style API and a playground page.")
@click.argument("runs", nargs=-1, required=True, metavar="RUN [RUN ...]")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--name",
    "names",
    multiple=True,
    help="the model's name in the API, once per RUN in order  [default: the run folder's name]",
)
@click.option("--amp", is_flag=True, help="batches of several streams: bfloat16 matmuls")
@click.option("--int8", is_flag=True, help="batches of several streams on CPU: int8 matmuls")
@click.option(
    "--api-key",
    envvar="CHARLM_API_KEY",
    show_envvar=True,
    default=None,
    help="require `Authorization: Bearer KEY` on every route but / and /health",
)
@click.option(
    "--cors",
    multiple=True,
    metavar="ORIGIN",
    help="let pages from ORIGIN (e.g. http://localhost:3000) call the API; repeatable",
)
@_limit_options
@click.option("--access-log", is_flag=True, help="log every request on stderr")
@_device_option
@_threads_option
@_user_errors
def serve(
    runs: tuple[str, ...],
    host: str,
    port: int,
    names: tuple[str, ...],
    amp: bool,
    int8: bool,
    api_key: str | None,
    cors: tuple[str, ...],
    access_log: bool,
    device: str,
    threads: int,
    **limits: Any,
) -> None:
    """Serve trained models over HTTP until Ctrl-C or SIGTERM: a playground page at /, and
    an OpenAI-compatible API at /v1 (completions, streamed or not), plus /v1/score.

    Each RUN is a run folder or a checkpoint file; its name in the API is the folder's name
    (or --name). Requests that generate at the same time are stepped together as one batch.
    Binds 127.0.0.1: only this machine can connect, unless --host says otherwise.

    \b
    Examples:
      charlm serve runs/charlm                      # then open http://127.0.0.1:8000/
      charlm serve runs/shakespeare runs/linux --port 9000
      charlm serve runs/charlm --amp                # many clients, bfloat16 matmuls
      CHARLM_API_KEY=secret charlm serve runs/charlm --host 0.0.0.0
      curl -N http://127.0.0.1:8000/v1/completions -d '{"prompt": "ROMEO:", "stream": true}'
    """
    import importlib.util

    if not all(importlib.util.find_spec(m) for m in ("starlette", "uvicorn")):
        raise CharLMError('charlm serve needs its extra: pip install "charlm[serve]"')
    from charlm.sampling import Sampling
    from charlm.serve import Options, Service, run, sources
    from charlm.threads import use_threads

    Sampling(amp=amp, int8=int8)  # both at once: refused in one line
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(
            f"warning: --host {host} lets other machines connect: anyone who can reach it can "
            "use the models" + ("" if api_key else " (add --api-key)"),
            err=True,
        )
    served = sources(list(runs), list(names))
    use_threads(threads)
    options = Options(Limits(**limits), amp, int8, device, api_key, cors)
    sys.exit(run(Service(served, options), host, port, access_log))


@main.command(name="corpora", short_help="List the named corpora and where each is found.")
@_user_errors
def corpora_command() -> None:
    """List the named corpora: `charlm train NAME` finds, or downloads once, the text.

    \b
    Each is a JSON manifest in charlm's corpora folder, or in the folder named by
    $CHARLM_CORPORA (add your own there). A name is looked up in $CHARLM_DATA (if set),
    then in the cache ($CHARLM_CACHE/corpora, default ~/.cache/charlm/corpora); if absent it is
    downloaded, checked and cached. Offline, put the file in one of those folders yourself.
    A corpus with a split trains on its train part and validates on its valid part; score
    its test part with `charlm eval perplexity NAME:test`.
    """
    from charlm import builtin, catalog

    found = catalog.entries()  # a malformed manifest fails before anything is printed
    size = len(builtin.builtin_text().encode("utf-8"))
    click.echo(f"{builtin.BUILTIN:<16} {_size(size):>9}  local: ships with Python")
    click.echo(f"    {builtin.BUILTIN_DESCRIPTION}")
    click.echo(f"    license: {builtin.BUILTIN_LICENSE}")
    for c in found.values():
        path = catalog.local_path(c)
        where = f"local: {path}" if path else "not local: downloaded on first use"
        click.echo(f"{c.name:<16} {_size(c.size):>9}  {where}")
        click.echo(f"    {c.description}")
        click.echo(f"    source:  {c.url}")
        click.echo(f"    license: {c.license}")
        if c.split is not None:
            parts = " / ".join(f"{p} {n:,}" for p, n in zip(catalog.PARTS, c.split, strict=True))
            click.echo(f"    split:   {parts} {c.unit}s")
        elif c.unit == "byte":
            click.echo("    read byte-level (its literature counts bytes)")
    data = catalog.data_dir()
    cache = catalog.cache_dir("corpora")
    click.echo(f"\nlooked in: $CHARLM_DATA = {data or '(not set)'}; cache {cache}")
    folders = ", ".join(str(d) for d in catalog.manifest_dirs())
    click.echo(f"manifests: {folders} (add yours: ${catalog.MANIFESTS_ENV})")


@main.command(short_help="Plot the learning curves of one or more runs.")
@click.argument("runs", nargs=-1, required=True)
@click.option(
    "-o", "--out", default="curves.png", show_default=True, help="image file (.png, .svg, .pdf)"
)
@click.option("--dpi", default=120, show_default=True, help="resolution of raster images")
@click.option(
    "--x-axis",
    "axes",
    multiple=True,
    type=click.Choice(["epoch", "step", "time"]),
    help="x axis of a column of panels: fractional epochs, steps or wall time (repeatable; "
    "default: epoch and time)",
)
@_user_errors
def plot(runs: tuple[str, ...], out: str, dpi: int, axes: tuple[str, ...]) -> None:
    """Plot perplexity and BPC of one or more RUNS: training (dashed), validation at epoch
    ends (solid) and the evaluations between them (points).

    \b
    Examples:
      charlm plot runs/lstm runs/rnn -o curves.png   # needs matplotlib: pip install matplotlib
      charlm plot runs/charlm --x-axis step          # against steps only
    """
    from charlm.plot import DEFAULT_AXES, plot_runs
    from charlm.storage import check_target

    check_target(out, role="-o")  # before any run is read or drawn
    click.echo(f"wrote {plot_runs(runs, out, dpi, axes or DEFAULT_AXES)}")


@main.command(short_help="Show a run's model, corpus, progress and best score.")
@click.argument("run", default="runs/charlm")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@_user_errors
def info(run: str, as_json: bool) -> None:
    """Model, size, corpus, progress, best validation score and settings of RUN.

    RUN is a run folder (its latest checkpoint is read) or a checkpoint file.

    \b
    Example:
      charlm info runs/charlm --json
    """
    from charlm.info import format_info, run_info

    facts = run_info(run)
    click.echo(json.dumps(facts, indent=2) if as_json else format_info(facts))


@main.command(name="export", short_help="Write a model as ONNX, safetensors, or one HTML page.")
@click.argument("run", default="runs/charlm")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    required=True,
    help="onnx: one step, state in and out (ONNX Runtime); safetensors: weights, config and "
    "vocabulary (charlm reads it as --checkpoint); html: a page that generates offline",
)
@click.option(
    "-o",
    "--out",
    default=None,
    help="file to write  [default: beside the checkpoint, e.g. runs/charlm/best.onnx]",
)
@click.option(
    "--quantize",
    type=click.Choice(QUANTIZE),
    default=None,
    help="html: store the weight matrices as int8, a scale per output unit (a quarter the size)",
)
@_user_errors
def export_command(run: str, fmt: str, out: str | None, quantize: str | None) -> None:
    """Write the model of RUN (what `charlm generate --checkpoint RUN` uses: a run folder's
    best.pt, else checkpoint.pt, or the file named) in another format.

    \b
    Examples:
      charlm export runs/charlm --format onnx                # runs/charlm/best.onnx
      charlm export runs/charlm --format safetensors -o model.safetensors
      charlm generate --checkpoint model.safetensors         # charlm reads it back
      charlm export runs/charlm --format html --quantize int8 -o charlm.html
    """
    from charlm.export import export

    path = export(run, fmt, out, quantize)
    click.echo(f"wrote {path} ({_size(path.stat().st_size)})")
