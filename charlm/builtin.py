"""The built-in corpus: Python's own help text, a corpus every Python has, offline.

`charlm train` with no corpus trains on it, so a first run needs no download and no file. It is
a name like the named corpora (`charlm corpora` lists it first), read by the one input path
(charlm/inputs.py); no manifest may take its name. Kept in a module of its own, with no imports
of charlm's, so that the settings (charlm/config.py) can name it as their default corpus.
"""

from __future__ import annotations

BUILTIN = "builtin"  # the name of the built-in corpus, which no manifest may take
BUILTIN_SOURCE = "builtin (Python's pydoc help topics)"
BUILTIN_DESCRIPTION = "Python's pydoc help topics, shipped with Python: always offline"
BUILTIN_LICENSE = "PSF License (Python documentation)"


def builtin_text() -> str:
    """Python's own help topics (`pydoc_data.topics`): ~0.5 MB of English prose, always offline."""
    from pydoc_data.topics import topics  # here: only a run on the built-in corpus pays for it

    return "\n\n".join(topics[key] for key in sorted(topics))
