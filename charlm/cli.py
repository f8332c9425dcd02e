"""The `charlm` command: a thin click layer over the library functions.

Every training flag is generated from a TrainConfig field, so the dataclass stays the one place
where settings, defaults and help live. Mistakes a user can make surface as CharLMError and end
here as one line on stderr with exit code 1.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import click

from charlm import __version__
from charlm.errors import CharLMError


def _user_errors(fn):
    """Turn a CharLMError (or Ctrl-C outside training) into one line and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CharLMError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="charlm")
def main() -> None:
    """charlm: train character-level language models on any UTF-8 text.

    \b
      charlm train corpus.txt             train (or: charlm train, on the built-in corpus)
      charlm generate --prefix "ROMEO:"   continue a prefix with the trained model
      charlm eval perplexity test.txt     perplexity and bits per character of a text
    """


def _train_options(fn):
    """One click option per TrainConfig field (corpus is the positional argument)."""
    from charlm.train import TrainConfig

    for f in reversed(fields(TrainConfig)):
        if f.name == "corpus":
            continue
        name = "--" + f.name.replace("_", "-")
        help_text = f.metadata["help"]
        if f.type in ("bool", bool):
            fn = click.option(
                f"{name}/--no-{name[2:]}",
                f.name,
                default=f.default,
                help=help_text,
                show_default=True,
            )(fn)
            continue
        kind = {"int": int, "float": float, "str": str}[
            f.type if isinstance(f.type, str) else f.type.__name__
        ]
        if f.metadata.get("choices"):
            kind = click.Choice(f.metadata["choices"])
        assert f.default is not MISSING
        fn = click.option(
            name, f.name, type=kind, default=f.default, help=help_text, show_default=True
        )(fn)
    return fn


@main.command()
@click.argument("corpus", required=False)
@_train_options
@click.option("--resume", is_flag=True, help="continue the run in --out from its checkpoint.pt")
@click.option("--quiet", is_flag=True, help="no progress bar or samples")
@click.pass_context
@_user_errors
def train(
    ctx: click.Context, corpus: str | None, resume: bool, quiet: bool, **settings: Any
) -> None:
    """Train a model on CORPUS (a UTF-8 text file; none: the built-in corpus).

    \b
    Examples:
      charlm train                                   # built-in corpus, offline
      charlm train tinyshakespeare.txt --time-budget 180
      charlm train corpus.txt --model rnn --embedding-dim 0 --optimizer sgd --lr 1
      charlm train corpus.txt --resume               # continue an interrupted run
    """
    from charlm.train import TrainConfig, resume_config
    from charlm.train import train as run_training

    given = {
        k: v
        for k, v in settings.items()
        if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE
    }
    if corpus is not None:
        given["corpus"] = corpus
    cfg = resume_config(settings["out"], given) if resume else TrainConfig(**{**settings, **given})
    result = run_training(cfg, resume=resume, progress_bar=not quiet)
    if result.stopped_by.startswith("SIG"):
        corpus_arg = "" if cfg.corpus == "builtin" else f" {cfg.corpus}"
        click.echo(
            f"{result.stopped_by}: stopped at step {result.progress.step}, checkpoint saved in "
            f"{cfg.out}. Resume with: charlm train{corpus_arg} --out {cfg.out} --resume",
            err=True,
        )
        sys.exit(result.exit_code)
    row = result.last_row
    if row is not None:
        val = (
            f", val ppl {row['val_ppl']:.3f}, val bpc {row['val_bpc']:.3f}"
            if row["val_loss"] is not None
            else ""
        )
        click.echo(
            f"done ({result.stopped_by}): epoch {row['epoch']}, step {row['step']}, "
            f"train ppl {row['train_ppl']:.3f}{val}; saved in {cfg.out}"
        )


_checkpoint_option = click.option(
    "--checkpoint",
    "checkpoint_path",
    default="runs/charlm",
    show_default=True,
    help="a run folder (its best.pt, else checkpoint.pt) or a checkpoint file",
)
_device_option = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)


@main.command()
@_checkpoint_option
@click.option("--prefix", default="", help="text to continue (printed first, as is)")
@click.option("--length", default=200, show_default=True, help="characters to generate")
@click.option("--temperature", default=1.0, show_default=True, help="<1 sharper, >1 wilder")
@click.option("--top-k", type=int, default=None, help="sample among the k likeliest characters")
@click.option("--top-p", type=float, default=None, help="nucleus sampling: smallest set of mass p")
@click.option("--greedy", is_flag=True, help="always take the likeliest character")
@click.option("--seed", type=int, default=None, help="same seed, same text")
@click.option("--num-samples", default=1, show_default=True, help="samples drawn as one batch")
@_device_option
@_user_errors
def generate(checkpoint_path: str, prefix: str, length: int, device: str, **sampling: Any) -> None:
    """Continue --prefix with a trained model.

    \b
    Example:
      charlm generate --prefix "ROMEO:" --length 300 --temperature 0.8 --seed 1
    """
    from charlm.generate import generate as sample
    from charlm.train import load_model

    model, vocab, _ = load_model(checkpoint_path, device)
    texts = sample(model, vocab, prefix, length, **sampling)
    click.echo("\n\n".join(texts))


@main.group(name="eval")
def eval_group() -> None:
    """Score texts with a trained model."""


@eval_group.command()
@click.argument("file", type=click.Path(dir_okay=True, path_type=Path))
@_checkpoint_option
@click.option("--seq-len", default=256, show_default=True, help="window length (state carried)")
@click.option("--skip-unknown", is_flag=True, help="skip characters outside the vocabulary")
@click.option("--encoding", default="utf-8", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option(
    "--html",
    "html_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="also write a page of the text coloured by surprisal, top-5 predictions on hover",
)
@click.option(
    "--html-max-chars",
    default=20_000,
    show_default=True,
    help="--html shows at most this many characters (from the start)",
)
@_device_option
@_user_errors
def perplexity(
    file: Path,
    checkpoint_path: str,
    seq_len: int,
    skip_unknown: bool,
    encoding: str,
    as_json: bool,
    device: str,
    html_out: Path | None = None,
    html_max_chars: int = 20_000,
) -> None:
    """Perplexity and bits per character of FILE under the model.

    Every character after the first is scored, the state carried through the whole text.

    \b
    Example:
      charlm eval perplexity test.txt --checkpoint runs/charlm --json
      charlm eval perplexity test.txt --html surprisal.html   # open it in a browser
    """
    from charlm.data import read_text
    from charlm.evaluate import score_text
    from charlm.train import load_model

    if seq_len <= 0:
        raise CharLMError(f"--seq-len must be > 0, got {seq_len}")
    if html_out is not None and html_max_chars < 2:
        raise CharLMError(f"--html-max-chars must be >= 2, got {html_max_chars}")
    model, vocab, ckpt = load_model(checkpoint_path, device)
    text = read_text(file, encoding)
    result = score_text(model, vocab, text, seq_len, skip_unknown)
    if html_out is not None:
        from charlm.surprisal import surprisal_page

        surprisal_page(html_out, model, vocab, ckpt, text, file, result, seq_len, html_max_chars)
        click.echo(f"wrote {html_out}", err=True)
    if as_json:
        click.echo(json.dumps(result.as_dict()))
        return
    click.echo(f"perplexity     {result.perplexity:.4f}")
    click.echo(f"bits per char  {result.bits_per_char:.4f}")
    click.echo(f"nll (nats)     {result.nll:.4f}")
    click.echo(f"chars scored   {result.chars}")
    if result.skipped:
        click.echo(f"chars skipped  {result.skipped} (not in the vocabulary)")


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o", "--out", default="curves.png", show_default=True, help="image file (.png, .svg, .pdf)"
)
@click.option("--dpi", default=120, show_default=True, help="resolution of raster images")
@_user_errors
def plot(runs: tuple[Path, ...], out: str, dpi: int) -> None:
    """Plot perplexity and BPC against epoch and wall time for one or more RUNS.

    \b
    Example:
      charlm plot runs/lstm runs/rnn -o curves.png      # needs: pip install charlm[plot]
    """
    from charlm.plot import plot_runs

    click.echo(f"wrote {plot_runs(runs, out, dpi)}")


@main.command()
@click.argument("run", default="runs/charlm", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@_user_errors
def info(run: Path, as_json: bool) -> None:
    """Model, size, corpus, progress, best validation score and settings of RUN.

    RUN is a run folder (its latest checkpoint is read) or a checkpoint file.

    \b
    Example:
      charlm info runs/charlm --json
    """
    from charlm.info import format_info, run_info

    facts = run_info(run)
    click.echo(json.dumps(facts, indent=2) if as_json else format_info(facts))
