"""charlm: character-level language models on PyTorch.

import charlm
result = charlm.train(charlm.TrainConfig(corpus="input.txt", epochs=1))
model, vocab, _ = charlm.load_model("runs/charlm")
print(charlm.generate(model, vocab, "ROMEO:", length=100)[0])
print(charlm.score_text(model, vocab, "Some text to score.").perplexity)
print(charlm.score_text(model, vocab, long_text, dynamic=charlm.Dynamic()).bits_per_char)
"""

__version__ = "0.1.0"

from charlm.data import Corpus, Vocab, load_corpus
from charlm.dynamic import Dynamic
from charlm.errors import CharLMError
from charlm.evaluate import Score, score, score_text
from charlm.generate import generate
from charlm.model import CharLM, ModelConfig
from charlm.train import TrainConfig, TrainResult, load_model, train

__all__ = [
    "CharLM",
    "CharLMError",
    "Corpus",
    "Dynamic",
    "ModelConfig",
    "Score",
    "TrainConfig",
    "TrainResult",
    "Vocab",
    "__version__",
    "generate",
    "load_corpus",
    "load_model",
    "score",
    "score_text",
    "train",
]
