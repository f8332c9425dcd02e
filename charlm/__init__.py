"""charlm: character-level language models on PyTorch.

import charlm
result = charlm.train(charlm.TrainConfig(corpus="input.txt", epochs=1))
model, vocab, _ = charlm.load_model("runs/charlm")
print(charlm.generate(model, vocab, "ROMEO:", length=100)[0])
print(charlm.score_text(model, vocab, "Some text to score.").perplexity)
print(charlm.score_text(model, vocab, long_text, dynamic=charlm.Dynamic()).bits_per_char)
print(charlm.evaluate_inputs(model, vocab, ["test.txt"], charlm.Scoring(dynamic=True)).text())

The names below are imported on first use (PEP 562), so that `import charlm` and the `charlm`
command's --help, --version and Tab completion do not pay for importing torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from charlm.threads import choose_wait_policy

__version__ = "0.1.0"

choose_wait_policy()  # before anything imports torch: see charlm/threads.py

# public name -> the module that defines it
_WHERE = {
    "Callback": "charlm.train",
    "CharLM": "charlm.model",
    "CharLMError": "charlm.errors",
    "Dynamic": "charlm.scoring",
    "Corpus": "charlm.corpus",
    "ModelConfig": "charlm.model",
    "Reading": "charlm.inputs",
    "Report": "charlm.report",
    "Score": "charlm.evaluate",
    "Scoring": "charlm.scoring",
    "TrainConfig": "charlm.config",
    "TrainResult": "charlm.train",
    "Vocab": "charlm.vocab",
    "evaluate_inputs": "charlm.report",
    "evaluate_text": "charlm.report",
    "generate": "charlm.generate",
    "load_corpus": "charlm.inputs",
    "load_model": "charlm.checkpoint",
    "score": "charlm.evaluate",
    "score_text": "charlm.evaluate",
    "train": "charlm.train",
}

__all__ = sorted([*_WHERE, "__version__"])


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'charlm' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


class _Package(types.ModuleType):
    """Keeps `charlm.train` and `charlm.generate` the functions once their modules load.

    Importing the module charlm.train binds it on the package as `train`, over the function.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and value.__name__ in _SHADOWED.get(name, ()):
            value = getattr(value, name)
        super().__setattr__(name, value)


_SHADOWED = {"train": ("charlm.train",), "generate": ("charlm.generate",)}
sys.modules[__name__].__class__ = _Package
