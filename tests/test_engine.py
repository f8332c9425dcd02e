"""The serving engine (`charlm.engine`) held to the plain path, `charlm.generate`.

A request alone is `generate`'s run exactly (float32, every decoder, every precision); many
requests joining and leaving a running batch give `generate`'s texts in float64, where the
batch's different rounding cannot flip a draw. The parts are checked on their own too: the
batched prefill against one forward pass per prompt, a stepper's rows loaded mid-batch against
a fresh stepper, stop sequences against a plain search, the waiting line, cancelling, draining.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
import torch

from charlm.engine import Busy, Closed, Engine, Job, Stops, capacity, prefill, start_ids
from charlm.generate import generate
from charlm.model import CharLM, ModelConfig
from charlm.sampling import Sampling
from charlm.stepper import Stepper
from charlm.vocab import Vocab

VOCAB = Vocab(sorted(set("abcdefghij klmnop\nqrstuvwxyz.,")))
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=cuda)]


def make_model(
    kind: str = "lstm", layers: int = 1, dtype=torch.float32, vocab=VOCAB, device: str = "cpu"
) -> CharLM:
    """A small model with weights large enough that its distributions are peaked."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=len(vocab),
        model=kind,
        hidden_size=24,
        num_layers=layers,
        embedding_dim=8,
        dropout=0.0,
        init="pytorch",
    )
    model = CharLM(cfg).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3)
    return model.to(device).eval()


@pytest.fixture
def engines():
    made: list[Engine] = []

    def make(*args, **kwargs) -> Engine:
        made.append(Engine(*args, **kwargs))
        return made[-1]

    yield make
    for engine in made:
        engine.close()


SETTINGS = [
    dict(seed=1),
    dict(seed=2, temperature=0.6),
    dict(seed=3, temperature=1.7, top_k=4),
    dict(seed=4, top_p=0.7),
    dict(seed=5, top_k=6, top_p=0.9),
    dict(greedy=True),
    dict(seed=6, temperature=1e-40),  # overflows float32: greedy, as generate switches
]


@pytest.mark.parametrize("options", SETTINGS, ids=lambda o: "-".join(map(str, o.values())))
@pytest.mark.parametrize("prompt", ["hello world", "", "h"])
def test_a_request_alone_is_generate_exactly(engines, options: dict, prompt: str) -> None:
    model = make_model()
    engine = engines(model, VOCAB)
    s = Sampling(length=150, **options)  # over NOISE_STEPS: the noise is drawn again
    [(text, finish)] = engine.complete(prompt, s)
    assert prompt + text == generate(model, VOCAB, prompt, settings=s)[0]
    assert finish == "length"


@pytest.mark.parametrize(("kind", "layers"), [("rnn", 2), ("gru", 1), ("lstm", 2)])
@pytest.mark.parametrize("precision", ["amp", "int8"])
def test_a_request_alone_is_generate_in_every_cell_and_precision(
    engines, kind: str, layers: int, precision: str
) -> None:
    model = make_model(kind, layers)
    engine = engines(model, VOCAB, **{precision: True})
    s = Sampling(length=80, seed=9, **{precision: True})
    [(text, _)] = engine.complete("the quick fox", s)
    assert "the quick fox" + text == generate(model, VOCAB, "the quick fox", settings=s)[0]


@cuda
@pytest.mark.parametrize("amp", [False, True])
def test_on_a_gpu_a_request_alone_is_generate(engines, amp: bool) -> None:
    model = make_model(device="cuda")
    engine = engines(model, VOCAB, amp=amp)
    for options in SETTINGS:
        s = Sampling(length=150, amp=amp, **options)
        [(text, _)] = engine.complete("hello world", s)
        assert "hello world" + text == generate(model, VOCAB, "hello world", settings=s)[0]


def test_a_byte_level_request_alone_is_generate(engines) -> None:
    vocab = Vocab.of_bytes()
    model = make_model(vocab=vocab)
    engine = engines(model, vocab)
    s = Sampling(length=120, seed=3)
    [(text, _)] = engine.complete("héllo", s)
    assert "héllo" + text == generate(model, vocab, "héllo", settings=s)[0]


def _collector(texts: dict, key: object, n: int, done: threading.Event, count: list) -> Job:
    """A job's deliver that keeps its streams' texts and says when all are finished."""
    finished = set()

    def deliver(pieces) -> None:
        for p in pieces:
            texts[key, p.index] = texts.get((key, p.index), "") + p.text
            if p.finish:
                finished.add(p.index)
                texts[key, p.index, "finish"] = p.finish
        if len(finished) == n:
            count[0] -= 1
            if count[0] == 0:
                done.set()

    return deliver


@pytest.mark.parametrize("device", DEVICES)
def test_requests_joining_and_leaving_a_running_batch_get_generates_texts(device: str) -> None:
    """float64: the batch's rounding is far below any gap between two draws' scores."""
    model = make_model("lstm", 2, torch.float64, device=device)
    requests = [
        (
            "abc" * k,
            Sampling(
                length=30 + 17 * k,
                seed=k,
                num_samples=1 + k % 3,
                temperature=0.5 + 0.25 * (k % 4),
                top_k=5 if k % 4 == 1 else None,
                top_p=0.8 if k % 4 == 2 else None,
                greedy=k == 7,
            ),
        )
        for k in range(10)
    ]
    texts: dict = {}
    done, count = threading.Event(), [len(requests)]
    engine = Engine(
        model,
        VOCAB,
        max_batch=16,
        dispatch=lambda made: [job.deliver(p) for job, p in made.items()],
    )
    try:
        for k, (prompt, s) in enumerate(requests):
            deliver = _collector(texts, k, s.num_samples, done, count)
            engine.submit([Job(prompt, s, (), deliver)])
            time.sleep(0.002 * k)  # later requests join a batch already running
        assert done.wait(60)
        assert engine.widest > 3  # they were stepped together
    finally:
        engine.close()
    for k, (prompt, s) in enumerate(requests):
        want = generate(model, VOCAB, prompt, settings=s)
        got = [prompt + texts[k, j] for j in range(s.num_samples)]
        assert got == want, k


def test_stop_sequences_end_a_stream_before_them() -> None:
    model = make_model(dtype=torch.float64)
    engine = Engine(model, VOCAB)
    try:
        s = Sampling(length=300, seed=11)
        full = generate(model, VOCAB, "ab", settings=s)[0][2:]
        stop = full[100:102]  # a stop sequence known to occur, maybe earlier too
        [(text, finish)] = engine.complete("ab", s, (stop, "never here!"))
        assert finish == "stop"
        assert text == full[: full.index(stop)]
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("stops", "pieces"),
    [
        (("ab",), ["x", "a", "b", "c"]),
        (("abc", "bd"), ["a", "b", "d"]),
        (("aab",), ["a", "a", "a", "b"]),
        (("\n\n", "END"), ["E", "N", "x", "\n", "y", "\n", "\n"]),
        ((), ["a", "b"]),
        (("zz",), ["a", "b", "c"]),
    ],
)
def test_stops_send_what_no_stop_can_begin_and_cut_at_the_first(stops, pieces) -> None:
    scan, sent, stopped = Stops(stops), "", False
    for piece in pieces:
        out, stopped = scan.push(piece)
        sent += out
        if stopped:
            break
    text = "".join(pieces)
    cuts = [text.find(s) for s in stops if s in text]
    if cuts:
        assert stopped and sent == text[: min(cuts)]
    else:
        assert not stopped and sent + scan.flush() == text


@torch.inference_mode()
def test_prefill_gives_each_prompt_the_state_of_its_own_forward_pass() -> None:
    model = make_model("lstm", 2, torch.float64)
    prompts = ["a", "hello", "hello world", "xy", "hello", "", "the end."]
    ids = [start_ids(VOCAB, p) for p in prompts]
    states = prefill(model, ids)
    for one, (h, c) in zip(ids, states, strict=True):
        if len(one) == 1:
            assert not h.any() and not c.any()
            continue
        want_h, want_c = model(torch.tensor(one[:-1])[:, None], None, dropout=False)[1]
        torch.testing.assert_close(h, want_h, rtol=0, atol=1e-12)
        torch.testing.assert_close(c, want_c, rtol=0, atol=1e-12)


@torch.inference_mode()
@pytest.mark.parametrize("N", [4, 16])  # 16: the wide layout (buffers transposed)
def test_rows_loaded_mid_batch_step_as_a_fresh_stepper_and_the_others_go_on(N: int) -> None:
    model = make_model("gru", 2, torch.float64)
    stepper, untouched = Stepper(model, N), Stepper(model, N)
    x = torch.arange(N) % len(VOCAB)
    for _ in range(4):
        stepper.step(x)
        untouched.step(x)
    state = model(torch.tensor([[3], [5], [7]]), None, dropout=False)[1]
    h, _ = model.rnn.split_state(state)
    rows = torch.tensor([1, 2])
    stepper.load_rows(rows, h.expand(-1, 2, -1), None)
    fresh = Stepper(model, N)
    fresh.load_state(state)
    logits = stepper.step(x)
    torch.testing.assert_close(logits[rows], fresh.step(x)[rows], rtol=0, atol=1e-12)
    kept = torch.tensor([i for i in range(N) if i not in (1, 2)])
    assert torch.equal(logits[kept], untouched.step(x)[kept])  # exactly what they carried
    moved, _ = stepper.rows_state(slice(1, 3))
    torch.testing.assert_close(moved, fresh.rows_state(slice(1, 3))[0], rtol=0, atol=1e-12)


def test_capacity_is_one_or_a_power_of_two_within_the_limit() -> None:
    assert [capacity(n, 64) for n in (0, 1, 2, 3, 5, 16, 17, 64)] == [1, 1, 2, 4, 8, 16, 32, 64]
    assert capacity(40, 48) == 48


def test_the_waiting_line_is_bounded_and_a_draining_engine_takes_nothing(engines) -> None:
    model = make_model()
    engine = engines(model, VOCAB, max_batch=2, max_waiting=3)
    long = Sampling(length=10**9, seed=1)
    running = [Job("a", long) for _ in range(2)]
    engine.submit(running)
    deadline = time.monotonic() + 10
    while engine.live < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    engine.submit([Job("a", replace(long, num_samples=2))])  # waits: the batch is full
    with pytest.raises(Busy, match="2 streams are waiting already"):
        engine.submit([Job("b", replace(long, num_samples=2))])
    finished: list = []
    for job in running:
        job.deliver = finished.extend
    engine.drain(0.0)
    with pytest.raises(Closed):
        engine.submit([Job("c", long)])
    engine.close()
    assert [p.finish for p in finished if p.finish] == ["shutdown", "shutdown"]


def test_a_cancelled_job_leaves_at_the_next_step(engines) -> None:
    engine = engines(make_model(), VOCAB)
    pieces: list = []
    job = Job("a", Sampling(length=10**9, seed=1), deliver=pieces.extend)
    engine.submit([job])
    deadline = time.monotonic() + 10
    while not pieces and time.monotonic() < deadline:
        time.sleep(0.01)
    job.cancelled = True
    while engine.live and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.live == 0
    assert pieces[-1].finish == "cancelled"


def test_a_job_of_no_characters_ends_at_once(engines) -> None:
    engine = engines(make_model(), VOCAB)
    assert engine.complete("abc", Sampling(length=0, num_samples=2)) == [("", "length")] * 2
