"""Generation: prefix handling, reproducibility, sampling controls."""

import pytest
import torch

from charlm.decode import next_char_probs
from charlm.errors import CharLMError
from charlm.generate import generate
from charlm.model import CharLM, ModelConfig
from charlm.vocab import Vocab

VOCAB = Vocab(sorted(set("abcdefgh \n")))


@pytest.fixture
def model():
    torch.manual_seed(0)
    return CharLM(ModelConfig(vocab_size=len(VOCAB), hidden_size=16, embedding_dim=8))


def test_output_starts_with_prefix_and_has_length(model):
    (text,) = generate(model, VOCAB, "abc", 50, seed=1)
    assert text.startswith("abc") and len(text) == 53


def test_same_seed_same_text_and_several_samples(model):
    a = generate(model, VOCAB, "ab", 40, seed=3, num_samples=4)
    b = generate(model, VOCAB, "ab", 40, seed=3, num_samples=4)
    assert a == b and len(a) == 4 and len(set(a)) > 1
    assert generate(model, VOCAB, "ab", 40, seed=4) != a[:1]


def test_greedy_and_top_k_1_agree_and_follow_the_argmax(model):
    (g,) = generate(model, VOCAB, "a", 20, greedy=True)
    (k,) = generate(model, VOCAB, "a", 20, top_k=1, seed=5)
    assert g == k
    logits, _ = model(torch.from_numpy(VOCAB.encode(g[:-1]))[:, None])
    assert VOCAB.chars[int(logits[-1, 0].argmax())] == g[-1]


def test_unknown_prefix_character_is_named(model):
    with pytest.raises(CharLMError, match="'Z'"):
        generate(model, VOCAB, "abZ", 10)


@pytest.mark.parametrize(
    "kwargs", [{"temperature": 0}, {"top_k": 0}, {"top_p": 0}, {"num_samples": 0}]
)
def test_bad_sampling_settings(model, kwargs):
    with pytest.raises(CharLMError):
        generate(model, VOCAB, "a", 10, **kwargs)
    with pytest.raises(CharLMError, match="length"):
        generate(model, VOCAB, "a", -1)


def test_top_k_and_top_p_keep_only_the_likeliest():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.count_nonzero(next_char_probs(logits, 1.0, 2, None)) == 2
    p = next_char_probs(logits, 1.0, None, 0.75)
    assert torch.count_nonzero(p) == 2 and p.sum().item() == pytest.approx(1.0)
    assert torch.allclose(next_char_probs(logits, 1.0, None, None), logits.exp())


# every precision a cell allows: the min cells' unbounded states refuse int8
PRECISIONS = [(k, p) for k in ("rnn", "lstm", "gru") for p in ({}, {"amp": True}, {"int8": True})]
PRECISIONS += [(k, p) for k in ("mingru", "minlstm") for p in ({}, {"amp": True})]


@pytest.mark.parametrize(("kind", "precision"), PRECISIONS)
@pytest.mark.parametrize("temperature", [1e-30, 1e-45, 1e-300, 5e-324])
def test_a_temperature_whose_logits_overflow_is_greedy(kind, temperature, precision):
    """T -> 0 is the argmax; it once overflowed inside the sampler's scaled weights and wrote
    only newlines."""
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=len(VOCAB), model=kind, hidden_size=16)).eval()
    n = 3 if precision else 1
    greedy = generate(model, VOCAB, "ab", 30, greedy=True, num_samples=n, **precision)
    cold = generate(model, VOCAB, "ab", 30, temperature=temperature, seed=1, num_samples=n,
                    **precision)  # fmt: skip
    assert cold == greedy
    assert len(set(greedy[0][2:])) > 1 or greedy[0][2] != "\n"  # not the overflow's newlines
