"""A real `charlm serve` process on a loopback port: streaming, many clients at once, clients
that hang up, a flood, OpenAI's own client, a red-team pass of hostile requests, slow clients,
and stopping on SIGTERM/SIGINT. Every loop here is bounded in count and time."""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from charlm.checkpoint import load_model
from charlm.generate import generate
from tests.serving import Server, call, serving, tiny_run

LIMITS = [
    "--max-batch",
    "8",
    "--queue",
    "16",
    "--max-tokens",
    "100000",
    "--max-prompt",
    "500",
    "--max-n",
    "4",
    "--max-body",
    "20000",
    "--timeout",
    "1",
    "--threads",
    "1",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
    return str(tiny_run(tmp_path_factory.mktemp("live") / "tiny"))


@pytest.fixture(scope="module")
def server(run):
    with serving(run, *LIMITS) as s:
        yield s


def stream(url: str, body: dict, timeout: float = 60) -> list[tuple[float, object]]:
    """(arrival time, data) of each event of a streamed completion, read as it comes."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    conn.request("POST", "/v1/completions", json.dumps({**body, "stream": True}))
    r = conn.getresponse()
    assert r.status == 200, r.read()
    out, buf = [], b""
    while chunk := r.read1(65536):
        buf += chunk
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            data = event.decode().removeprefix("data: ")
            out.append((time.monotonic(), data if data == "[DONE]" else json.loads(data)))
    conn.close()
    return out


def text_of(events: list) -> str:
    return "".join(d["choices"][0]["text"] for _, d in events if d != "[DONE]" and d["choices"])


def health(server: Server) -> dict:
    return json.loads(call(server.url + "/health")[2])


def wait_for(predicate, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_stream_arrives_as_it_is_made_and_equals_the_plain_answer(server) -> None:
    body = {"prompt": "First Citizen:", "max_tokens": 3000, "seed": 1}
    events = stream(server.url, body)
    assert events[-1][1] == "[DONE]"
    assert len(events) >= 4  # in pieces, as made
    status, _, plain = call(server.url + "/v1/completions", body)
    assert status == 200
    assert text_of(events) == json.loads(plain)["choices"][0]["text"]


def test_concurrent_clients_are_stepped_together(server) -> None:
    bodies = [{"prompt": "All:" * k, "max_tokens": 6000, "seed": k} for k in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda b: stream(server.url, b), bodies))
    firsts = [events[0][0] for events in results]
    ends = [events[-1][0] for events in results]
    assert max(firsts) < min(ends)  # every client had characters before any was done
    assert all(len(text_of(events)) == 6000 for events in results)
    assert health(server)["widest_batch"] >= 4


def _hang_up_after_first_bytes(server: Server, body: dict) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        data = json.dumps(body).encode()
        s.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(data), data)
        )
        assert wait_for(lambda: health(server)["streams"] == 1)
        if body.get("stream"):
            assert s.recv(100).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("streamed", [True, False])
def test_a_client_that_hangs_up_frees_its_stream(server, streamed: bool) -> None:
    assert wait_for(lambda: health(server)["streams"] == 0)
    _hang_up_after_first_bytes(server, {"prompt": "A", "max_tokens": 100000, "stream": streamed})
    assert wait_for(lambda: health(server)["streams"] == 0, 5)


def test_a_flood_is_answered_503_with_retry_after_or_served_in_full(server) -> None:
    body = {"prompt": "You", "max_tokens": 3000, "n": 4}
    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(lambda _: call(server.url + "/v1/completions", body), range(40)))
    statuses = [status for status, _, _ in answers]
    assert set(statuses) == {200, 503}, statuses
    for status, headers, raw in answers:
        body_ = json.loads(raw)
        if status == 503:
            assert headers["retry-after"] == "1" and "waiting already" in body_["error"]["message"]
        else:
            assert [len(c["text"]) for c in body_["choices"]] == [3000] * 4
    assert health(server)["status"] == "ok"


def test_openais_client_works_unchanged_streaming_and_not(server, run) -> None:
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == ["tiny"]
    done = client.completions.create(model="tiny", prompt="Speak", max_tokens=50, seed=3)
    model, vocab, _ = load_model(run, "cpu")
    assert "Speak" + done.choices[0].text == generate(model, vocab, "Speak", 50, seed=3)[0]
    assert done.choices[0].finish_reason == "length" and done.usage.completion_tokens == 50
    chunks = list(
        client.completions.create(model="tiny", prompt="Speak", max_tokens=50, seed=3, stream=True)
    )
    assert "".join(c.choices[0].text for c in chunks) == done.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"
    with pytest.raises(openai.NotFoundError, match="POST /v1/completions"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}])


def raw(server: Server, request: bytes, timeout: float = 5) -> bytes:
    """Send bytes as they are; what comes back before the server closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        s.sendall(request)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return out


def post(body: bytes, path: str = "/v1/completions", extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n%s\r\n%s" % (
        path.encode(),
        len(body),
        extra,
        body,
    )


def get(path: bytes) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path


DEEP = b"[" * 50_000 + b"]" * 50_000
HOSTILE = {  # name: (raw request, status)
    "Content-Length over --max-body": (post(b"{}").replace(b"Length: 2", b"Length: 99999"), 413),
    "malformed JSON": (post(b'{"prompt": '), 400),
    "JSON that is an array": (post(b"[]"), 400),
    "JSON that is a string": (post(b'"hello"'), 400),
    "NaN": (post(b'{"temperature": NaN}'), 400),
    "-Infinity": (post(b'{"top_p": -Infinity}'), 400),
    "1e999": (post(b'{"temperature": 1e999}'), 400),
    "a huge max_tokens": (post(b'{"max_tokens": 100000000000000000000000000000}'), 400),
    "a 5000-digit number": (post(b'{"n": ' + b"9" * 5000 + b"}"), 400),
    "negative n": (post(b'{"n": -3}'), 400),
    "n as a string": (post(b'{"n": "3"}'), 422),
    "max_tokens as a float": (post(b'{"max_tokens": 1e3}'), 422),
    "temperature as a boolean": (post(b'{"temperature": true}'), 422),
    "prompt as an object": (post(b'{"prompt": {"$gt": ""}}'), 422),
    "prompt as token ids": (post(b'{"prompt": [15496, 11]}'), 400),
    "a prompt over --max-prompt": (post(json.dumps({"prompt": "a" * 501}).encode()), 400),
    "an emoji prompt": (post(json.dumps({"prompt": "\U0001f600\U0001f4a9"}).encode()), 400),
    "a lone surrogate": (post(b'{"prompt": "\\ud800x"}'), 400),
    "NUL and RTL marks": (post(b'{"prompt": "\\u0000\\u202e\\u200f"}'), 400),
    "combining characters": (post(json.dumps({"prompt": "e\u0301" * 10}).encode()), 400),
    "invalid UTF-8": (post(b'{"prompt": "\xff\xfe\xc3"}'), 400),
    "deeply nested JSON": (post(DEEP[:19_000] + DEEP[-1:]), 400),
    "100 stop sequences": (post(json.dumps({"stop": ["x"] * 100}).encode()), 400),
    "an empty stop sequence": (post(b'{"stop": [""]}'), 400),
    "top_k 0": (post(b'{"top_k": 0}'), 400),
    "top_p 1.5": (post(b'{"top_p": 1.5}'), 400),
    "a seed past 2**64": (post(b'{"seed": 99999999999999999999999}'), 400),
    "a beam with stream": (post(b'{"beam_width": 4, "stream": true}'), 400),
    "a beam a billion wide": (post(b'{"beam_width": 1000000000}'), 400),
    "n over --max-n": (post(b'{"n": 5}'), 400),
    "an unknown model": (post(b'{"model": "../../etc/passwd"}'), 404),
    "an unknown field": (post(b'{"prompt_file": "/etc/passwd"}'), 400),
    "a score with nothing to score": (post(b'{"text": "a"}', "/v1/score"), 400),
    "a score of a number": (post(b'{"text": 12}', "/v1/score"), 422),
    "GET on a POST route": (get(b"/v1/completions"), 405),
    "an unserved route": (post(b"{}", "/v1/chat/completions"), 404),
    "a path that climbs": (get(b"/../../../../etc/passwd"), 404),
    "a 100 KB URL": (get(b"/" + b"a" * 100_000), 404),
    "not HTTP at all": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, 400),
    "a Content-Length that lies": (post(b"{}").replace(b"Length: 2", b"Length: -5"), 400),
}


def test_a_red_team_pass_leaves_the_server_alive_and_every_answer_a_clean_error(server) -> None:
    assert len(HOSTILE) >= 30
    for name, (request, status) in HOSTILE.items():
        answer = raw(server, request)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 %d " % status), (name, answer[:300])
        assert b"Traceback" not in answer and b'File "' not in answer, name
        assert len(body) < 2000, name  # nothing echoed back at length
        if b"content-type: application/json" in head:  # the app's answers (uvicorn's: text)
            assert json.loads(body)["error"]["message"], name
        else:
            assert status == 400 and body == b"Invalid HTTP request received.", name
    assert server.proc.poll() is None
    status, _, body = call(server.url + "/v1/completions", {"prompt": "All:", "max_tokens": 5})
    assert status == 200 and len(json.loads(body)["choices"][0]["text"]) == 5


def test_a_body_that_grows_past_the_limit_is_refused_as_it_comes(server) -> None:
    """No Content-Length to check first: chunks, 5 KB at a time, until --max-body is passed."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        answer = b""
        for _ in range(10):
            s.sendall(b"1400\r\n" + b" " * 0x1400 + b"\r\n")
            s.settimeout(0.3)
            try:
                answer = s.recv(65536)
            except TimeoutError:
                continue
            break
        s.settimeout(2)
        with contextlib.suppress(OSError):
            while b"bytes" not in answer and (chunk := s.recv(65536)):  # the rest of the body
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b"limit of 20000 bytes" in answer


def test_slow_clients_are_cut_off_and_others_are_served_meanwhile(server) -> None:
    """Slowloris: headers a byte at a time. A body that never ends: 408."""
    sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(30)]
    start = time.monotonic()
    for s in sockets:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost")
    assert call(server.url + "/health", timeout=2)[0] == 200  # not held up by them
    closed: set[int] = set()
    while len(closed) < len(sockets) and time.monotonic() - start < 5:
        for i, s in enumerate(sockets):
            if i in closed:
                continue
            try:
                s.sendall(b"x")  # a byte now and then, never the end of the head
                s.settimeout(0.01)
                if s.recv(1) == b"":
                    closed.add(i)
            except TimeoutError:
                pass
            except OSError:
                closed.add(i)
        time.sleep(0.2)
    for s in sockets:
        s.close()
    assert len(closed) == len(sockets)  # each cut off after --timeout (1 s)
    slow = post(b'{"prompt": "A"}').replace(b"Length: 15", b"Length: 100")
    answer = raw(server, slow, timeout=5)
    assert answer.startswith(b"HTTP/1.1 408"), answer


def test_sigterm_lets_short_streams_finish_cuts_long_ones_and_exits_0(run) -> None:
    server = Server(run, *LIMITS)
    try:
        results: dict = {}

        def client(name: str, tokens: int) -> None:
            results[name] = stream(server.url, {"prompt": "A", "max_tokens": tokens}, timeout=20)

        threads = [
            threading.Thread(target=client, args=a) for a in (("long", 10**5), ("short", 5000))
        ]
        for t in threads:
            t.start()
        assert wait_for(lambda: health(server)["streams"] == 2)
        server.signal(signal.SIGTERM)
        start = time.monotonic()
        for t in threads:
            t.join(20)
        assert server.proc.wait(15) == 0
        assert time.monotonic() - start < 8  # "within a few seconds"
        assert results["short"][-2][1]["choices"][0]["finish_reason"] == "length"
        assert len(text_of(results["short"])) == 5000
        assert results["long"][-2][1]["error"]["type"] == "server_shutdown"
        assert results["long"][-1][1] == "[DONE]"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=2)
    finally:
        server.stop()


def test_sigint_stops_the_server_with_exit_0(server) -> None:
    """Last in this file: it stops the server the tests above shared."""
    server.signal(signal.SIGINT)
    assert server.proc.wait(15) == 0
