"""Evaluation: perplexity equals exp of the mean NLL computed independently."""

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charlm.errors import CharLMError, command_line
from charlm.evaluate import score, score_text
from charlm.model import CharLM, ModelConfig
from charlm.vocab import Vocab
from tests.conftest import char_nll

TEXT = "the quick brown fox jumps over the lazy dog. " * 20
VOCAB = Vocab(sorted(set(TEXT)))


@pytest.fixture
def model():
    torch.manual_seed(0)
    return CharLM(
        ModelConfig(
            vocab_size=len(VOCAB), model="gru", hidden_size=16, embedding_dim=8, dropout=0.0
        )
    ).double()


def reference_nll(model, ids):
    """One forward over the whole text: NLL of every character after the first."""
    x = torch.from_numpy(ids)
    with torch.no_grad():
        logits, _ = model(x[:-1, None])
    return F.cross_entropy(logits[:, 0], x[1:], reduction="none")


def test_perplexity_is_exp_of_mean_nll(model):
    ids = VOCAB.encode(TEXT)
    expected = reference_nll(model, ids)
    result = score(model, ids, seq_len=17)
    assert result.chars == len(ids) - 1
    assert result.nll == pytest.approx(expected.mean().item(), abs=1e-6)
    assert result.perplexity == pytest.approx(math.exp(expected.mean().item()), rel=1e-6)
    assert result.bits_per_char == pytest.approx(expected.mean().item() / math.log(2))


def test_window_length_does_not_change_the_score(model):
    ids = VOCAB.encode(TEXT)
    a = char_nll(model, ids, seq_len=5)
    b = char_nll(model, ids, seq_len=1000)
    assert torch.allclose(a, b, atol=1e-6)


def test_several_streams_score_all_but_each_stream_start(model):
    ids = VOCAB.encode(TEXT)
    whole = reference_nll(model, ids)
    nll = char_nll(model, ids, seq_len=13, streams=4)
    length = -(-len(ids) // 4)
    assert len(nll) == len(ids) - 4
    # stream 0 is the start of the text, scored exactly as in the single pass
    assert torch.allclose(nll[: length - 1], whole[: length - 1].float(), atol=1e-5)


def test_unknown_characters_listed_or_skipped(model):
    with pytest.raises(CharLMError, match="'Q'"):
        score_text(model, VOCAB, "the Quick")
    result = score_text(model, VOCAB, "the Quick fox", skip_unknown=True)
    assert result.skipped == 1 and result.chars == len("the uick fox") - 1
    direct = score(model, np.asarray(VOCAB.encode("the uick fox")))
    assert result.nll == pytest.approx(direct.nll)


def test_scoring_reads_a_memmap_without_loading_it(model, tmp_path):
    ids = VOCAB.encode(TEXT)
    path = tmp_path / "ids.u8"
    ids.astype(np.uint8).tofile(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    assert score(model, mm, seq_len=11, streams=3).nll == pytest.approx(
        score(model, ids, seq_len=11, streams=3).nll, abs=1e-9
    )
    assert score(model, ids, 11, 3).chars == len(char_nll(model, ids, 11, 3))


def test_score_text_in_streams_and_its_progress_bar(model, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    ids = VOCAB.encode(TEXT)
    exact = score_text(model, VOCAB, TEXT, seq_len=11)
    assert score_text(model, VOCAB, TEXT, seq_len=11, streams=3) == score(model, ids, 11, 3)
    assert exact == score(model, ids, 11)
    err = Terminal()
    monkeypatch.setattr("sys.stderr", err)
    assert score_text(model, VOCAB, TEXT, seq_len=11, progress=True) == exact
    assert "scoring" in err.getvalue() and "char" in err.getvalue()
    quiet = Terminal()
    monkeypatch.setattr("sys.stderr", quiet)
    score_text(model, VOCAB, TEXT, seq_len=11)
    assert quiet.getvalue() == ""
    with pytest.raises(CharLMError, match=r"^streams must be > 0"):
        score_text(model, VOCAB, TEXT, streams=0)
    with command_line(), pytest.raises(CharLMError, match="--streams"):
        score_text(model, VOCAB, TEXT, streams=0)
