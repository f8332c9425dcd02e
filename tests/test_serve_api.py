"""`charlm serve`'s API through Starlette's test client: OpenAI's completions semantics held to
`charlm.generate` and `charlm.report` (the library the routes call), the playground page, the
errors a client can cause (each a JSON body naming what was wrong), the API key and CORS."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from charlm.api import Limits
from charlm.checkpoint import load_model
from charlm.engine import Piece
from charlm.generate import generate
from charlm.report import evaluate_text
from charlm.sampling import Sampling
from charlm.scoring import Scoring
from charlm.serve import Choices, Envelope, Options, Service, _events, create_app, sources
from charlm.surprisal import script, style
from tests.conftest import ROOT
from tests.serving import free_port, tiny_run

LIMITS = Limits(max_tokens=600, max_prompt=300, max_n=6, max_body=6000, max_batch=8, queue=16)


def client_for(runs: list[tuple[str, str]], **options) -> TestClient:
    service = Service(runs, Options(limits=LIMITS, **options))
    return TestClient(create_app(service))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[tuple[str, str]]:
    root = tmp_path_factory.mktemp("serve")
    return [("tiny", str(tiny_run(root / "tiny"))), ("other", str(tiny_run(root / "o", seed=1)))]


@pytest.fixture(scope="module")
def client(runs):
    with client_for(runs) as c:
        assert c.app.state.service.ready.wait(60)
        yield c


@pytest.fixture(scope="module")
def tiny(runs):
    model, vocab, _ = load_model(runs[0][1], "cpu")
    return model, vocab


def complete(client: TestClient, **body) -> dict:
    r = client.post("/v1/completions", json={"model": "tiny", **body})
    assert r.status_code == 200, r.text
    return r.json()


def error(client: TestClient, status: int, path: str = "/v1/completions", **kw) -> str:
    """The message of an error answer, which must be OpenAI's JSON error body."""
    r = client.post(path, **kw) if "json" in kw or "content" in kw else client.get(path)
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    return body["message"]


def events(client: TestClient, body: dict) -> list:
    """The data of every Server-Sent Event of a streamed completion, [DONE] last."""
    with client.stream("POST", "/v1/completions", json={"model": "tiny", **body}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = "".join(r.iter_text())
    assert raw.endswith("\n\n")
    out = []
    for event in raw.split("\n\n")[:-1]:
        assert event.startswith("data: ")
        data = event[len("data: ") :]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_health_and_models(client) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["models"] == ["tiny", "other"]
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["tiny", "other"]
    assert all(m["object"] == "model" and m["owned_by"] == "charlm" for m in models["data"])


def test_while_loading_health_says_so_and_the_api_asks_to_retry(runs) -> None:
    c = client_for(runs)  # no lifespan: the models are never loaded
    r = c.get("/health")
    assert (r.status_code, r.json(), r.headers["retry-after"]) == (503, {"status": "loading"}, "1")
    r = c.post("/v1/completions", json={"model": "tiny"})
    assert r.status_code == 503 and r.json()["error"]["type"] == "loading"


def test_a_seeded_completion_is_charlm_generates_text(client, tiny) -> None:
    body = complete(client, prompt="First", max_tokens=60, seed=7, temperature=0.9, top_k=10)
    s = Sampling(60, temperature=0.9, top_k=10, seed=7)
    want = generate(*tiny, "First", settings=s)[0]
    [choice] = body["choices"]
    assert "First" + choice["text"] == want
    assert choice == {
        "text": choice["text"],
        "index": 0,
        "logprobs": None,
        "finish_reason": "length",
    }
    assert body["object"] == "text_completion" and body["model"] == "tiny"
    assert body["id"].startswith("cmpl-")
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 60, "total_tokens": 65}


def test_temperature_zero_is_greedy_and_max_tokens_defaults_to_16(client, tiny) -> None:
    [choice] = complete(client, prompt="All:", temperature=0)["choices"]
    assert "All:" + choice["text"] == generate(*tiny, "All:", 16, greedy=True)[0]


def test_n_and_a_list_of_prompts_give_prompt_major_choices(client, tiny) -> None:
    body = complete(client, prompt=["Speak", "You are"], n=3, max_tokens=30, seed=3)
    texts = [c["text"] for c in body["choices"]]
    assert [c["index"] for c in body["choices"]] == list(range(6))
    for k, prompt in enumerate(["Speak", "You are"]):
        want = generate(*tiny, prompt, 30, seed=3, num_samples=3)
        assert [prompt + t for t in texts[3 * k : 3 * k + 3]] == want
    assert body["usage"]["prompt_tokens"] == len("Speak") + len("You are")
    assert body["usage"]["completion_tokens"] == 6 * 30


def test_stop_cuts_the_text_before_the_first_stop_sequence(client, tiny) -> None:
    full = generate(*tiny, "A", 200, seed=5)[0][1:]
    stops = [full[150:152], full[40:42]]
    first = min(full.index(s) for s in stops)
    [choice] = complete(client, prompt="A", max_tokens=200, seed=5, stop=stops)["choices"]
    assert (choice["text"], choice["finish_reason"]) == (full[:first], "stop")
    [choice] = complete(client, prompt="A", max_tokens=200, seed=5, stop=full[40:42])["choices"]
    assert choice["text"] == full[: full.index(full[40:42])]


def test_echo_puts_the_prompt_first(client) -> None:
    plain = complete(client, prompt="Before", max_tokens=20, seed=1)["choices"][0]["text"]
    echoed = complete(client, prompt="Before", max_tokens=20, seed=1, echo=True)
    assert echoed["choices"][0]["text"] == "Before" + plain
    assert echoed["usage"]["completion_tokens"] == 20


def test_a_stream_is_coalesced_events_ending_done_with_the_same_text(client) -> None:
    body = {"prompt": "First Citizen:", "max_tokens": 500, "seed": 2}
    plain = complete(client, **body)["choices"][0]["text"]
    got = events(client, {**body, "stream": True, "stream_options": {"include_usage": True}})
    assert got[-1] == "[DONE]"
    *chunks, usage = got[:-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 500
    assert "".join(c["choices"][0]["text"] for c in chunks) == plain
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert all(c["object"] == "text_completion" and c["id"] == chunks[0]["id"] for c in chunks)
    assert len(chunks) < 100  # several characters an event, not one each


def test_a_stream_of_several_choices_names_each(client) -> None:
    got = events(client, {"prompt": "All", "max_tokens": 50, "seed": 4, "n": 2, "stream": True})
    plain = complete(client, prompt="All", max_tokens=50, seed=4, n=2)["choices"]
    for i in range(2):
        mine = [c["choices"][0] for c in got[:-1] if c["choices"][0]["index"] == i]
        assert "".join(c["text"] for c in mine) == plain[i]["text"]
        assert mine[-1]["finish_reason"] == "length"


def test_a_beam_is_generates_beam_and_refuses_what_a_beam_cannot_do(client, tiny) -> None:
    body = complete(client, prompt="You", max_tokens=12, beam_width=4, n=2)
    want = generate(*tiny, "You", 12, beam_width=4, num_samples=2)
    assert ["You" + c["text"] for c in body["choices"]] == want
    for extra, named in [
        ({"stream": True}, "stream"),
        ({"temperature": 0.5}, "temperature"),
        ({"seed": 1}, "seed"),
        ({"top_k": 3}, "top_k"),
    ]:
        message = error(client, 400, json={"model": "tiny", "beam_width": 2, **extra})
        assert f"beam_width does not go with {named}" in message
    assert "n 3 must be <= beam_width 2" in error(
        client, 400, json={"model": "tiny", "beam_width": 2, "n": 3}
    )


def test_score_is_the_reports_numbers_and_the_pages_data(client, tiny) -> None:
    text = "First Citizen:\nSpeak, speak."
    r = client.post("/v1/score", json={"model": "tiny", "text": text})
    assert r.status_code == 200, r.text
    body = r.json()
    report = evaluate_text(*tiny, text, Scoring(html_max_chars=len(text)))
    assert body["perplexity"] == pytest.approx(report.score.perplexity, rel=1e-12)
    assert body["bits_per_char"] == pytest.approx(report.score.bits_per_char, rel=1e-12)
    assert body["chars"] == len(text) - 1 and body["unit"] == "char"
    assert body["per_char"]["bits"] == report.per_char.as_dict()["bits"]
    assert body["per_char"]["top"] == report.per_char.as_dict()["top"]
    assert body["per_char"]["known"] == [True] * len(text)
    dynamic = client.post("/v1/score", json={"model": "tiny", "text": text * 3, "dynamic": True})
    assert dynamic.status_code == 200 and dynamic.json()["dynamic"]["lr"] > 0


def test_unknown_characters_are_listed_or_skipped_when_asked(client, tiny) -> None:
    message = error(client, 400, json={"model": "tiny", "prompt": "Fi€rst ☃"})
    assert '"\\u20ac"' in message and '"\\u2603"' in message and "skip_unknown" in message
    body = complete(client, prompt="Fi€rst", max_tokens=10, seed=1, skip_unknown=True)
    assert "First" + body["choices"][0]["text"] == generate(*tiny, "First", 10, seed=1)[0]
    assert body["usage"]["prompt_tokens"] == 5
    assert "text holds 1 character" in error(
        client, 400, "/v1/score", json={"model": "tiny", "text": "Speak€"}
    )
    r = client.post(
        "/v1/score", json={"model": "tiny", "text": "Speak€ speak", "skip_unknown": True}
    )
    assert r.status_code == 200 and r.json()["skipped"] == 1
    assert r.json()["per_char"]["known"].count(False) == 1


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "must be a JSON object, not an array"),
        (b'{"model": "tiny", "temperature": NaN}', 400, "NaN is not JSON"),
        (b'{"model": "tiny", "temperature": 1e999}', 400, "temperature must be a finite number"),
        (b'{"model": "tiny", "n": "2"}', 422, "n must be a whole number, got a string"),
        (b'{"model": "tiny", "n": 2.0}', 422, "n must be a whole number, got a number"),
        (b'{"model": "tiny", "stream": 1}', 422, "stream must be true or false"),
        (b'{"model": "tiny", "prompt": {"a": 1}}', 422, "prompt must be a string or an array"),
        (b'{"model": "tiny", "prompt": [1, 2]}', 400, "prompt as token ids is not supported"),
        (b'{"model": "tiny", "prompt": []}', 400, "prompt is an empty array"),
        (b'{"model": "tiny", "n": 0}', 400, "n must be >= 1, got 0"),
        (b'{"model": "tiny", "max_tokens": 601}', 400, "limit of 600 (--max-tokens)"),
        (
            b'{"model": "tiny", "n": 4, "prompt": ["a", "b"]}',
            400,
            "limit of 6 per request (--max-n)",
        ),
        (b'{"model": "tiny", "top_p": 0}', 400, "top_p must be in (0, 1]"),
        (b'{"model": "tiny", "temperature": -1}', 400, "temperature must be >= 0"),
        (b'{"model": "tiny", "seed": 18446744073709551616}', 400, "seed must be <="),
        (b'{"model": "tiny", "stop": ["a", "b", "c", "d", "e"]}', 400, "5 stop sequences"),
        (b'{"model": "tiny", "max_token": 5}', 400, "unknown field 'max_token'"),
        (b'{"model": "tiny", "logprobs": 2}', 400, "logprobs is not supported"),
        (b'{"model": "tiny", "stream_options": {"include_usage": true}}', 400, "stream_options"),
        (b'{"model": "gpt-4"}', 404, "no model named 'gpt-4': this server serves 'tiny', 'other'"),
        (b'{"prompt": "a"}', 400, "model is required: this server serves 'tiny', 'other'"),
    ],
)
def test_bad_requests_are_json_errors_naming_the_problem(client, body, status, fragment) -> None:
    assert fragment in error(client, status, content=body)


def test_openais_neutral_values_are_accepted(client) -> None:
    neutral = {
        "logprobs": None,
        "suffix": None,
        "best_of": 1,
        "presence_penalty": 0,
        "frequency_penalty": 0.0,
        "logit_bias": {},
        "user": "me",
    }
    assert complete(client, max_tokens=3, **neutral)["choices"][0]["finish_reason"] == "length"


def test_prompts_and_bodies_over_their_limits(client) -> None:
    assert "limit of 300 (--max-prompt)" in error(
        client, 400, json={"model": "tiny", "prompt": "a" * 301}
    )
    assert "limit of 6000 bytes" in error(client, 413, content=b" " * 6001)
    assert "limit of 300" in error(
        client, 400, "/v1/score", json={"model": "tiny", "text": "a" * 301}
    )


def test_unserved_routes_and_methods_say_what_is_served(client) -> None:
    message = error(client, 404, json={"model": "tiny"}, path="/v1/chat/completions")
    assert "POST /v1/completions" in message and "GET /v1/models" in message
    assert "wrong method" in error(client, 405, "/v1/completions")
    assert "no route GET /etc/passwd" in error(client, 404, "/etc/passwd")


def test_the_playground_is_one_offline_page_in_the_surprisal_pages_style(client) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert style() in page and script() in page  # shared, not copied
    assert "${" not in page and "http://" not in page and "https://" not in page  # no CDN


def test_an_api_key_guards_every_route_but_the_page_and_health(runs) -> None:
    with client_for(runs[:1], api_key="s3cret") as c:
        assert c.app.state.service.ready.wait(60)
        assert c.get("/health").status_code == 200 and c.get("/").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            r = c.get("/v1/models", headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert r.json()["error"]["type"] == "authentication_error"
        ok = {"Authorization": "Bearer s3cret"}
        assert c.get("/v1/models", headers=ok).status_code == 200
        # one model served: a request may leave out its name
        r = c.post("/v1/completions", json={"max_tokens": 2}, headers=ok)
        assert r.status_code == 200 and r.json()["model"] == "tiny"


def test_cors_is_off_unless_an_origin_is_given(runs, client) -> None:
    asked = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.get("/health", headers=asked).headers
    with client_for(runs[:1], cors=("http://localhost:3000",)) as c:
        r = c.options("/v1/completions", headers=asked)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
        other = {**asked, "Origin": "http://evil.example"}
        assert (
            "access-control-allow-origin" not in c.options("/v1/completions", headers=other).headers
        )


def test_run_names_are_the_folders_and_must_differ(tmp_path: Path) -> None:
    a, b = tiny_run(tmp_path / "a"), tiny_run(tmp_path / "b" / "a")
    assert sources([str(a), str(b / "best.pt")], ["x", "y"]) == [
        ("x", str(a)),
        ("y", str(b / "best.pt")),
    ]
    from charlm.errors import CharLMError

    with pytest.raises(CharLMError, match="both named 'a'"):
        sources([str(a), str(b)], [])
    with pytest.raises(CharLMError, match="--name is given 1 times for 2 RUNs"):
        sources([str(a), str(b)], ["x"])
    with pytest.raises(CharLMError, match="no such checkpoint"):
        sources([str(tmp_path / "nothing")], [])


def test_pieces_delivered_while_an_event_is_being_sent_are_sent_next() -> None:
    """The stream's generator is suspended at each event it yields; pieces the engine
    delivers meanwhile, the last ones included, must still be sent."""

    async def main() -> list:
        choices = Choices(2)
        events = _events(choices, [], Envelope("tiny"), ["", ""], None)
        choices.deliver(0)([Piece(0, "ab", None), Piece(1, "c", None)])
        sent = [await events.__anext__()]  # choice 0's event, suspended as it is sent
        choices.deliver(0)([Piece(0, "d", "length"), Piece(1, "e", "stop")])
        return sent + [e async for e in events]

    sent = asyncio.run(main())
    assert sent[-1] == "data: [DONE]\n\n"
    chunks = [json.loads(e.removeprefix("data: "))["choices"][0] for e in sent[:-1]]
    for i, (text, finish) in enumerate([("abd", "length"), ("ce", "stop")]):
        mine = [c for c in chunks if c["index"] == i]
        assert "".join(c["text"] for c in mine) == text
        assert [c["finish_reason"] for c in mine][-1] == finish


def test_the_command_says_how_to_install_its_extra_when_it_is_missing(monkeypatch) -> None:
    from click.testing import CliRunner

    from charlm.cli import main

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    result = CliRunner().invoke(main, ["serve", "runs/x"])
    assert result.exit_code == 1
    assert result.output == 'error: charlm serve needs its extra: pip install "charlm[serve]"\n'


def test_help_answers_without_torch() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = "import sys; sys.modules['torch'] = None; from charlm.cli import main; main()"
    proc = subprocess.run(
        [sys.executable, "-c", code, "serve", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "charlm serve runs/charlm" in proc.stdout


def test_other_hosts_than_this_machine_are_warned_about(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from charlm.cli import main

    result = CliRunner().invoke(main, ["serve", str(tmp_path / "none"), "--host", "0.0.0.0"])
    warning, error_line = result.output.splitlines()
    assert warning.startswith("warning: --host 0.0.0.0 lets other machines connect")
    assert "(add --api-key)" in warning
    assert error_line.startswith("error: no such checkpoint") and result.exit_code == 1


def test_a_checkpoint_that_cannot_be_loaded_stops_the_server_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "best.pt").write_bytes(b"not a checkpoint")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "charlm",
            "serve",
            str(tmp_path / "bad"),
            "--port",
            str(free_port()),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"error: {tmp_path / 'bad' / 'best.pt'} is not a readable checkpoint (truncated or "
        "corrupt?)"
    ]
