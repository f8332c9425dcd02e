"""Evaluation as one call: read, score, report. What `charlm eval perplexity`, a server and a
notebook call alike.

    report = evaluate_inputs(model, vocab, ["test.txt"], Scoring(dynamic=True))
    print(report.text())                  # what the command prints; report.as_dict(): --json
    report = evaluate_text(model, vocab, "To be, or not to be", Scoring(html_max_chars=100))
    report.per_char.as_dict()             # per character: surprisal, top predictions

The settings (`charlm.scoring`) are checked where they are made; this module runs them: the
inputs read as `charlm train` reads them, the score static or dynamic (with --dynamic-rms, the
gradient statistics read first), and per character, when asked, what the --html page shows.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charlm.corpus import Corpus
from charlm.dynamic import RMS_CHARS, rms_dynamic
from charlm.errors import CharLMError, flag
from charlm.evaluate import Score, check_scorable, score, score_text, surprisal
from charlm.inputs import Reading, read
from charlm.model import CharLM
from charlm.scoring import Dynamic, Scoring
from charlm.storage import write_text
from charlm.surprisal import Surprisal, render_html
from charlm.vocab import Vocab, recode


@dataclass(frozen=True)
class Report:
    """The score of a text and what to say about it: printed, dumped as JSON, or a page."""

    score: Score
    unit: str  # "char", or "byte" for a byte-level model
    dynamic: Dynamic | None  # the dynamic update used (its statistics too), None: static
    note: str  # what was read and skipped, when there were several documents
    source: str  # what was scored, as the page names it
    about: str  # the model, in a line
    length: int  # characters in the whole text
    per_char: Surprisal | None  # its first Scoring.html_max_chars characters, one by one

    def as_dict(self) -> dict[str, Any]:
        """`--json`: the score's numbers (JSON has no infinity: null), the unit, and the
        dynamic settings when there were some."""
        out: dict[str, Any] = {
            k: v if math.isfinite(v) else None for k, v in self.score.as_dict().items()
        }
        out["unit"] = self.unit
        if self.dynamic is not None:
            out["dynamic"] = {"lr": self.dynamic.lr, "decay": self.dynamic.decay}
            if self.dynamic.grad_rms is not None:
                out["dynamic"]["rms"] = True
        return out

    def text(self) -> str:
        """The lines `charlm eval perplexity` prints."""
        s, unit = self.score, self.unit
        lines = [
            f"perplexity     {s.perplexity:.4f}",
            f"bits per {unit:<5} {s.bits_per_char:.4f}",
            f"nll (nats)     {s.nll:.4f}",
            f"{unit}s scored   {s.chars}",
        ]
        if s.skipped:
            lines.append(f"{unit}s skipped  {s.skipped} (not in the vocabulary)")
        if self.dynamic is not None:
            d = self.dynamic
            lines.append(f"dynamic        {d.update} lr {d.lr:g}, decay {d.decay:g}")
        return "\n".join(lines)

    def html(self) -> str:
        """The surprisal page (`--html`) of the characters scored one by one."""
        if self.per_char is None:
            raise CharLMError("no per-character scores to show: score with html_max_chars set")
        note = page_note(self.per_char, self.length, self.score, self.dynamic)
        return render_html(self.per_char, self.source, self.about, note)

    def write_html(self, path: str | os.PathLike[str]) -> Path:
        """Write the page, a write failure being the user's problem, in one line."""
        path = Path(path)
        write_text(path, self.html())
        return path


Say = Callable[[str], None]
DEFAULT_SCORING, DEFAULT_READING = Scoring(), Reading()  # frozen: safe as defaults


def _quiet(_: str) -> None:
    """Say nothing: the default for a library call."""


def evaluate_inputs(
    model: CharLM,
    vocab: Vocab,
    inputs: Sequence[str],
    scoring: Scoring = DEFAULT_SCORING,
    reading: Reading = DEFAULT_READING,
    *,
    model_name: str = "the checkpoint",
    progress: bool = False,
    say: Say = _quiet,
) -> Report:
    """Score INPUTS (files, folders, globs, archives, corpus names, NAME:PART) joined into one
    text, as `charlm eval perplexity` does. `say` hears what was read before the scoring
    starts (a long text takes minutes); `progress` shows a bar on a terminal."""
    _check_page(vocab, scoring)
    corpus, ids = read_scored_text(inputs, vocab, reading, scoring.skip_unknown, model_name)
    if corpus.note:
        say(corpus.note)
    adapt = adaptation(model, vocab, scoring, reading, model_name, say)
    result = score(model, ids, scoring.seq_len, scoring.streams, progress, adapt)
    result.skipped = len(corpus.ids) - len(ids)
    source = os.fspath(Path(inputs[0]) if len(inputs) == 1 else Path(corpus.source))
    shown = None
    if scoring.html_max_chars is not None:  # a character-level corpus: one id, one character
        shown = corpus.vocab.decode(corpus.ids[: scoring.html_max_chars])
    return _report(model, vocab, scoring, result, adapt, note=corpus.note, source=source,
                   length=len(corpus.ids), shown=shown)  # fmt: skip


def evaluate_text(
    model: CharLM,
    vocab: Vocab,
    text: str,
    scoring: Scoring = DEFAULT_SCORING,
    reading: Reading = DEFAULT_READING,
    *,
    source: str = "text",
    progress: bool = False,
    say: Say = _quiet,
) -> Report:
    """Score a string (a server's request, a notebook's cell); with Scoring.html_max_chars,
    per character too. `reading` reads --dynamic-rms's text, if any."""
    _check_page(vocab, scoring)
    adapt = adaptation(model, vocab, scoring, reading, "the checkpoint", say)
    result = score_text(model, vocab, text, scoring.seq_len, scoring.skip_unknown,
                        scoring.streams, progress, adapt)  # fmt: skip
    shown = None if scoring.html_max_chars is None else text[: scoring.html_max_chars]
    return _report(model, vocab, scoring, result, adapt, note="", source=source,
                   length=len(text), shown=shown)  # fmt: skip


def adaptation(
    model: CharLM, vocab: Vocab, scoring: Scoring, reading: Reading, model_name: str, say: Say
) -> Dynamic | None:
    """The dynamic update `scoring` asks for; with --dynamic-rms, its gradient statistics
    from that text (read as the scored one is: characters the model lacks are skipped)."""
    adapt = scoring.adapt
    path = scoring.dynamic_rms
    if adapt is None or path is None:
        return adapt
    try:
        _, train_ids = read_scored_text((path,), vocab, reading, True, model_name)
    except CharLMError as e:
        raise CharLMError(f"{flag('dynamic_rms', path)}: {e}") from None
    chars = min(len(train_ids), RMS_CHARS)
    say(f"--dynamic-rms: gradient statistics from {chars:,} characters of {path}")
    return rms_dynamic(model, train_ids, scoring.seq_len, adapt.lr, adapt.decay)


def read_scored_text(
    inputs: Sequence[str], vocab: Vocab, reading: Reading, skip_unknown: bool, model_name: str
) -> tuple[Corpus, np.ndarray]:
    """What `charlm eval perplexity INPUTS` scores: the inputs read as `charlm train` reads
    them, and their ids in the model's vocabulary (`model_name` names it in errors)."""
    corpus = read(inputs, reading, byte_level=vocab.is_bytes)
    if corpus.vocab.is_bytes != vocab.is_bytes:
        raise CharLMError(
            f"{' '.join(inputs)} is counted in bytes (its manifest's unit), but the model in "
            f"{model_name} reads characters: train one with {flag('byte_level', True)} to "
            f"compare"
        )
    try:
        ids = recode(corpus.ids, corpus.vocab, vocab, skip_unknown)
    except CharLMError as e:
        raise CharLMError(
            f"{e}; to score the text without them, add {flag('skip_unknown', True)}"
        ) from None
    check_scorable(len(ids))
    return corpus, ids


def _check_page(vocab: Vocab, scoring: Scoring) -> None:
    if scoring.html_max_chars is not None and vocab.is_bytes:
        raise CharLMError(
            f"{flag('html', python='html_max_chars')} shows characters: it needs a "
            f"character-level model"
        )


def _report(
    model: CharLM,
    vocab: Vocab,
    scoring: Scoring,
    result: Score,
    adapt: Dynamic | None,
    *,
    note: str,
    source: str,
    length: int,
    shown: str | None,
) -> Report:
    """The report, with per-character scores of `shown` (the start of the text) if given."""
    per_char = None if shown is None else surprisal(model, vocab, shown, scoring.seq_len, adapt)
    unit = "byte" if vocab.is_bytes else "char"
    return Report(result, unit, adapt, note, source, describe(model, vocab), length, per_char)


def describe(model: CharLM, vocab: Vocab) -> str:
    """The page's line on the model."""
    mc = model.cfg
    layers = f"{mc.num_layers} layer{'s' if mc.num_layers > 1 else ''}"
    return (
        f"{mc.model.upper()}, {layers} of {mc.hidden_size} units, "
        f"{len(vocab)} characters in its vocabulary"
    )


def page_note(s: Surprisal, length: int, whole: Score, dynamic: Dynamic | None) -> str:
    """What the page says under its numbers: that `s` is the start of a text of `length`
    characters (with `whole`'s numbers), how the model adapted, what it skipped."""
    notes = []
    if len(s.text) < length:
        notes.append(
            f"Showing the first {len(s.text):,} of {length:,} characters (--html-max-chars); "
            f"the numbers above are for those. The whole text: perplexity "
            f"{whole.perplexity:.4f}, {whole.bits_per_char:.4f} bits per character over "
            f"{whole.chars:,} characters."
        )
    if dynamic is not None:
        notes.append(
            f"Dynamic evaluation: the model learned from the text as it read it ({dynamic.update}, "
            f"lr {dynamic.lr:g}, decay {dynamic.decay:g}); each character is scored before that."
        )
    skipped = s.known.count(False)
    if skipped:
        what = "character is" if skipped == 1 else "characters are"
        notes.append(
            f"{skipped:,} {what} outside the model's vocabulary: skipped, wavy underlined."
        )
    return " ".join(notes)
