"""The built-in corpus: Python's own help text, a corpus every Python has, offline.

`charlm train` with no corpus trains on it, so a first run needs no download and no file. It is
a name like the named corpora (`charlm corpora` lists it first), read by the one input path
(charlm/inputs.py); no manifest may take its name. Kept in a module of its own, with no imports
of charlm's, so that the settings (charlm/config.py) can name it as their default corpus.
"""

from __future__ import annotations

import re

BUILTIN = "builtin"  # the name of the built-in corpus, which no manifest may take
BUILTIN_SOURCE = "builtin (Python's pydoc help topics)"
BUILTIN_DESCRIPTION = "Python's pydoc help topics, shipped with Python: always offline"
BUILTIN_LICENSE = "PSF License (Python documentation)"


# what a model would learn to draw instead of words: a grid table's borders (+-----+-----+,
# +=====+) and the rule lines under titles (*****, =====, -----, ~~~~~)
BORDER = re.compile(r"[ \t]*\+(?:[-=]+\+)+[ \t]*")
RULE = re.compile(r"[ \t]*([-=*~])\1{2,}[ \t]*")


def builtin_text() -> str:
    """Python's own help topics (`pydoc_data.topics`), cleaned (`clean`): ~0.45 MB of English
    prose, code and grammar, always offline."""
    from pydoc_data.topics import topics  # here: only a run on the built-in corpus pays for it

    return clean("\n\n".join(topics[key] for key in sorted(topics)))


def clean(text: str) -> str:
    """The text without what teaches nothing: the borders of grid tables (their rows keep
    their cells, in their columns, with spaces where the `|` between them was) and lines that
    are only a rule of `=`, `-`, `*` or `~`. Every other line is kept as it is: the `|` of a
    grammar rule, a `|` inside a cell, a traceback's `^^^^`."""
    kept: list[str] = []
    columns: list[int] = []  # where the `+` of the current table's border lines are
    for line in text.split("\n"):
        if BORDER.fullmatch(line):
            columns = [i for i, c in enumerate(line) if c == "+"]
            continue
        if columns and all(i < len(line) and line[i] == "|" for i in columns):
            cells = "".join(" " if i in columns else c for i, c in enumerate(line)).rstrip()
            if cells.strip(" =\t"):  # not the |=====|=====| under a header
                kept.append(cells)
            continue
        columns = []
        if not RULE.fullmatch(line):
            kept.append(line)
    return "\n".join(kept)
