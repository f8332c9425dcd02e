"""`charlm serve`: trained models as a web service, and a playground page in the browser.

Starlette (routes, streaming responses, CORS) on uvicorn (the HTTP server): an ASGI stack that
is small, well kept and does nothing charlm does not use. The routes:

    GET  /                 the playground (plain HTML/CSS/JS, package data, works offline)
    GET  /health           {"status": "ok"} (200), or "loading" (503) while the models load
    GET  /v1/models        the models served, as OpenAI's model list
    POST /v1/completions   OpenAI's completions: sampled on the batching engine
                           (`charlm.engine`), or a beam search; `stream` answers with
                           Server-Sent Events ending `data: [DONE]`
    POST /v1/score         a text's perplexity, and per character its surprisal and the
                           model's top predictions (what `eval perplexity --html` shows)

Requests are checked by `charlm.api` before any work is queued; every error is a JSON body,
never a traceback. Sampling runs on each model's engine thread; beams and scores, which are
not batched, on one more thread, so the event loop never waits for the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import secrets
import signal
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from string import Template
from typing import Any

import h11
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from charlm import checkpoint
from charlm.api import (
    ApiError,
    Completion,
    Limits,
    parse_completion,
    parse_json,
    parse_score,
)
from charlm.engine import Busy, Closed, Engine, Job, Piece
from charlm.errors import CharLMError
from charlm.generate import generate
from charlm.model import CharLM
from charlm.report import describe, evaluate_text
from charlm.run import BEST, LATEST
from charlm.surprisal import COLOURS, EDGES, TOP_K, legend, script, style
from charlm.vocab import Vocab

PLAYGROUND = "templates/playground.html"  # inside the package
GRACE = 3.0  # seconds in-flight streams get to finish at SIGTERM/SIGINT before they are cut
FLUSH = 0.03  # seconds between two events of one stream: the characters made meanwhile coalesce
SIDE_QUEUE = 8  # beams and scores waiting for the side thread; past it, 503
OPEN = frozenset({"/", "/health"})  # without the API key: the static page, the health check
ROUTES = "GET /, GET /health, GET /v1/models, POST /v1/completions, POST /v1/score"
RETRY_AFTER = {"Retry-After": "1"}
MAX_CONNECTIONS = 1000  # open connections and requests at once; past it, uvicorn answers 503


@dataclass(frozen=True)
class Options:
    """How the server runs: limits, precision, device, and who may use it."""

    limits: Limits = field(default_factory=Limits)
    amp: bool = False
    int8: bool = False
    device: str = "auto"
    api_key: str | None = None
    cors: tuple[str, ...] = ()
    grace: float = GRACE


def model_name(path: str | Path) -> str:
    """A run folder's name; a checkpoint file's stem, or its folder's for best.pt/checkpoint.pt."""
    path = Path(path).resolve()
    if path.is_file() and path.name not in (BEST, LATEST):
        return path.stem
    return path.parent.name if path.is_file() else path.name


def sources(runs: list[str], names: list[str]) -> list[tuple[str, str]]:
    """(name, path) of each RUN, checked before the server starts: every path a checkpoint,
    every name given once."""
    if names and len(names) != len(runs):
        raise CharLMError(
            f"--name is given {len(names)} times for {len(runs)} RUNs: give one "
            "--name per RUN, in order, or none"
        )
    for run in runs:
        checkpoint.resolve(run)
    chosen = names or [model_name(run) for run in runs]
    seen = {n for n in chosen if chosen.count(n) > 1}
    if seen:
        raise CharLMError(
            f"two RUNs are both named {sorted(seen)[0]!r}: tell them apart with "
            "--name (one per RUN, in order)"
        )
    return list(zip(chosen, runs, strict=True))


@dataclass(eq=False)
class Served:
    """One model as the routes see it."""

    name: str
    model: CharLM
    vocab: Vocab
    engine: Engine
    created: int = field(default_factory=lambda: int(time.time()))

    def read(self, text: str, skip_unknown: bool, param: str) -> str:
        """`text` as the model reads it: characters it does not know are a 400 naming them,
        or dropped when asked."""
        unknown = self.vocab.unknown(text)
        if not unknown:
            return text
        if skip_unknown:
            drop = set(unknown)
            return "".join(c for c in text if c not in drop)
        shown = ", ".join(json.dumps(c) for c in unknown[:20])
        more = f" ({len(unknown)} in all)" if len(unknown) > 20 else ""
        raise ApiError(
            400,
            f"{param} holds {len(unknown)} character(s) the model {self.name!r} "
            f'does not know: {shown}{more}; send "skip_unknown": true to drop them',
            param,
        )


class Service:
    """What the routes serve: the models (loaded once, on a thread, while /health says
    "loading"), their engines, and the side thread for the work that is not batched."""

    def __init__(self, runs: list[tuple[str, str]], options: Options) -> None:
        self.runs, self.options = runs, options
        self.models: dict[str, Served] = {}
        self.error: str | None = None  # why loading failed
        self.ready = threading.Event()  # set when loaded, or when loading failed
        self.side = ThreadPoolExecutor(1, "charlm-side")
        self.side_jobs = 0  # beams and scores queued or running
        self.on_ready: Callable[[Service], None] = lambda service: None

    def load(self, loop: asyncio.AbstractEventLoop) -> None:
        """Load every model and start its engine (call on a thread); failures are said once."""

        def dispatch(made: dict[Job, list[Piece]]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody left to tell
                loop.call_soon_threadsafe(_deliver, made)

        o = self.options
        try:
            for name, path in self.runs:
                model, vocab, _ = checkpoint.load_model(path, o.device)
                engine = Engine(
                    model,
                    vocab,
                    amp=o.amp,
                    int8=o.int8,
                    dispatch=dispatch,
                    max_batch=o.limits.max_batch,
                    max_waiting=o.limits.queue,
                )
                self.models[name] = Served(name, model, vocab, engine)
        except CharLMError as e:
            self.error = str(e)
        except Exception as e:  # a bug, or the machine (out of memory): loud, and it stops
            traceback.print_exc(file=sys.stderr)
            self.error = f"the models could not be loaded: {type(e).__name__}: {e}"
        finally:
            self.ready.set()
            self.on_ready(self)

    def check_ready(self) -> None:
        if not self.ready.is_set():
            raise ApiError(
                503,
                "the models are loading: try again shortly",
                kind="loading",
                headers=RETRY_AFTER,
            )

    def served(self, name: str | None) -> Served:
        """The model a request names (it may omit the name when only one is served)."""
        self.check_ready()
        if name is None and len(self.models) == 1:
            return next(iter(self.models.values()))
        if name not in self.models:
            served = ", ".join(map(repr, self.models))
            if name is None:
                raise ApiError(400, f"model is required: this server serves {served}", "model")
            raise ApiError(
                404,
                f"no model named {name!r}: this server serves {served}",
                "model",
                "not_found_error",
            )
        return self.models[name]

    async def aside(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the side thread (a beam, a score), one at a time, the line bounded."""
        if self.side_jobs >= SIDE_QUEUE:
            raise ApiError(
                503,
                f"{SIDE_QUEUE} beam searches and scores are waiting already: try again shortly",
                kind="overloaded",
                headers=RETRY_AFTER,
            )
        self.side_jobs += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.side, fn)
        except CharLMError as e:
            raise ApiError(400, str(e)) from None
        finally:
            self.side_jobs -= 1

    def drain(self, grace: float) -> None:
        """Stop taking work; the streams in flight end within `grace` seconds."""
        for served in self.models.values():
            served.engine.drain(grace)

    def close(self) -> None:
        self.ready.wait()
        for served in self.models.values():
            served.engine.close()
        self.side.shutdown(wait=False, cancel_futures=True)


def _deliver(made: dict[Job, list[Piece]]) -> None:
    """On the event loop: every job's new pieces to its request."""
    for job, pieces in made.items():
        job.deliver(pieces)


class _Json(JSONResponse):
    """JSON as ASCII: a lone surrogate in a request echoed back cannot break the encoding."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False).encode("ascii")


def _sse(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=True, allow_nan=False)}\n\n"


def error_response(e: ApiError) -> Response:
    return _Json(e.body(), e.status, headers=e.headers)


async def read_body(request: Request, limits: Limits) -> bytes:
    """The request body, refused past --max-body bytes or when slower than --timeout."""
    length = request.headers.get("content-length")
    too_big = ApiError(
        413, f"the request body is over the server's limit of {limits.max_body} bytes"
    )
    if length is not None and length.isdigit() and int(length) > limits.max_body:
        raise too_big

    async def read() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(read(), limits.timeout)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the request body took over {limits.timeout:g} s to arrive") from None
    except ClientDisconnect:  # nobody to answer; said for the log
        raise ApiError(400, "the client hung up before sending the whole body") from None


async def _until_disconnect(request: Request) -> None:
    """Returns when the client hangs up (the body has been read: nothing else comes)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class Choices:
    """A completion request's choices, filled as the engine delivers (on the event loop)."""

    def __init__(self, count: int) -> None:
        self.parts: list[list[str]] = [[] for _ in range(count)]  # each choice's text, in pieces
        self.finish: list[str | None] = [None] * count
        self.fresh: dict[int, str] = {}  # text not yet sent, by choice
        self.ended: set[int] = set()  # finished, not yet said
        self.event = asyncio.Event()

    def deliver(self, offset: int) -> Callable[[list[Piece]], None]:
        def put(pieces: list[Piece]) -> None:
            for p in pieces:
                i = offset + p.index
                self.parts[i].append(p.text)
                self.fresh[i] = self.fresh.get(i, "") + p.text
                if p.finish and self.finish[i] is None:
                    self.finish[i] = p.finish
                    self.ended.add(i)
            self.event.set()

        return put

    @property
    def texts(self) -> list[str]:
        return ["".join(parts) for parts in self.parts]

    @property
    def done(self) -> bool:
        return all(self.finish)

    def failure(self) -> ApiError | None:
        """Why the choices did not all finish as OpenAI's API finishes them."""
        if "error" in self.finish:
            return ApiError(500, "the engine failed (see the server's log)", kind="server_error")
        if "shutdown" in self.finish:
            return ApiError(503, "the server is shutting down", kind="server_shutdown")
        return None


@dataclass(frozen=True)
class Envelope:
    """What every answer about one completion carries, as OpenAI's API shapes it."""

    model: str
    id: str = field(default_factory=lambda: "cmpl-" + secrets.token_hex(12))
    created: int = field(default_factory=lambda: int(time.time()))

    def body(self, choices: list[dict], usage: dict | None) -> dict:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": usage,
        }


def _choice(i: int, text: str, finish: str | None) -> dict:
    return {"text": text, "index": i, "logprobs": None, "finish_reason": finish}


def _usage(prompts: list[str], texts: list[str]) -> dict[str, int]:
    """OpenAI's usage, counted in characters: each prompt as the model read it, and the
    characters of every choice returned."""
    prompt = sum(map(len, prompts))
    done = sum(map(len, texts))
    return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}


async def completions(request: Request) -> Response:
    service: Service = request.app.state.service
    limits = service.options.limits
    req = parse_completion(parse_json(await read_body(request, limits)), limits)
    served = service.served(req.model)
    prompts = [served.read(p, req.skip_unknown, "prompt") for p in req.prompts]
    if req.beam:
        return await _beam(service, served, req, prompts)
    n = req.settings.num_samples
    choices = Choices(n * len(prompts))
    jobs = [Job(p, req.settings, req.stops, choices.deliver(k * n)) for k, p in enumerate(prompts)]
    try:
        served.engine.submit(jobs)
    except (Busy, Closed) as e:
        raise ApiError(503, str(e), kind="overloaded", headers=RETRY_AFTER) from None
    envelope = Envelope(served.name)
    echo = [p if req.echo else "" for p in prompts for _ in range(n)]
    if req.stream:
        usage = (lambda: _usage(prompts, choices.texts)) if req.usage_in_stream else None
        events = _events(choices, jobs, envelope, echo, usage)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    await _wait(request, choices, jobs)
    failed = choices.failure()
    if failed:
        raise failed
    answers = zip(echo, choices.texts, choices.finish, strict=True)
    body = [_choice(i, e + t, f) for i, (e, t, f) in enumerate(answers)]
    return _Json(envelope.body(body, _usage(prompts, choices.texts)))


async def _wait(request: Request, choices: Choices, jobs: list[Job]) -> None:
    """Until every choice is done; a client that hangs up first frees its streams."""
    gone = asyncio.ensure_future(_until_disconnect(request))
    try:
        while not choices.done and not gone.done():
            waiter = asyncio.ensure_future(choices.event.wait())
            await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            choices.event.clear()
    finally:
        gone.cancel()
        if not choices.done:
            for job in jobs:
                job.cancelled = True


async def _events(
    choices: Choices,
    jobs: list[Job],
    envelope: Envelope,
    echo: list[str],
    usage: Callable[[], dict] | None,
) -> AsyncIterator[str]:
    """The Server-Sent Events of a streamed completion: what each choice made since the last
    event (at most one event per choice every FLUSH seconds), then `data: [DONE]`; with
    `usage`, a last chunk of no choices that says it (OpenAI's stream_options)."""
    try:
        for i, text in enumerate(echo):
            if text:
                yield _sse(envelope.body([_choice(i, text, None)], None))
        while True:
            await choices.event.wait()
            choices.event.clear()
            # taken together, with no await between: what is delivered while the events below
            # are sent waits for the next round
            last, fresh, ended = choices.done, choices.fresh, choices.ended
            choices.fresh, choices.ended = {}, set()
            for i in sorted(fresh.keys() | ended):
                finish = choices.finish[i] if i in ended else None
                finish = finish if finish in ("length", "stop") else None  # others: below
                if finish or fresh.get(i):
                    yield _sse(envelope.body([_choice(i, fresh.get(i, ""), finish)], None))
            if last:
                break
            await asyncio.sleep(FLUSH)
        failed = choices.failure()
        if failed:
            yield _sse(failed.body())
        elif usage is not None:
            yield _sse(envelope.body([], usage()))
        yield "data: [DONE]\n\n"
    finally:  # the client gone (the response cancelled) or all done: free what is left
        for job in jobs:
            job.cancelled = True


async def _beam(service: Service, served: Served, req: Completion, prompts: list[str]) -> Response:
    """A beam search (not batched, not streamed): the n best continuations of each prompt."""
    o = service.options
    settings = replace(req.settings, amp=o.amp, int8=o.int8)
    texts, finish = [], []
    for p in prompts:
        run = functools.partial(generate, served.model, served.vocab, p, settings=settings)
        for full in await service.aside(run):
            text = full[len(p) :]
            cut = min((i for i in (text.find(s) for s in req.stops) if i >= 0), default=None)
            texts.append(text if cut is None else text[:cut])
            finish.append("length" if cut is None else "stop")
    n = req.settings.num_samples
    echo = [p if req.echo else "" for p in prompts for _ in range(n)]
    answers = zip(echo, texts, finish, strict=True)
    body = [_choice(i, e + t, f) for i, (e, t, f) in enumerate(answers)]
    return _Json(Envelope(served.name).body(body, _usage(prompts, texts)))


async def score(request: Request) -> Response:
    service: Service = request.app.state.service
    limits = service.options.limits
    req = parse_score(parse_json(await read_body(request, limits)), limits)
    served = service.served(req.model)
    served.read(req.text, req.scoring.skip_unknown, "text")
    page = None if served.vocab.is_bytes else max(2, len(req.text))
    scoring = replace(req.scoring, html_max_chars=page)
    run = functools.partial(evaluate_text, served.model, served.vocab, req.text, scoring)
    report = await service.aside(run)
    body = {"object": "score", "model": served.name, **report.as_dict()}
    if report.per_char is not None:
        body["per_char"] = {**report.per_char.as_dict(), "known": report.per_char.known}
    return _Json(body)


async def models(request: Request) -> Response:
    service: Service = request.app.state.service
    service.check_ready()
    data = [
        {
            "id": s.name,
            "object": "model",
            "created": s.created,
            "owned_by": "charlm",
            "about": describe(s.model, s.vocab),
            "vocab_size": len(s.vocab),
        }
        for s in service.models.values()
    ]
    return _Json({"object": "list", "data": data})


async def health(request: Request) -> Response:
    service: Service = request.app.state.service
    if not service.ready.is_set():
        return _Json({"status": "loading"}, 503, headers=RETRY_AFTER)
    engines = [s.engine for s in service.models.values()]
    return _Json(
        {
            "status": "ok",
            "models": list(service.models),
            "streams": sum(e.live for e in engines),
            "waiting": sum(e.queued for e in engines),
            "widest_batch": max((e.widest for e in engines), default=0),
        }
    )


async def playground(request: Request) -> Response:
    return HTMLResponse(_playground())


@functools.cache
def _playground() -> str:
    """The playground: its own markup and script, with the surprisal page's style, colour
    scale and hover script (run on the scored text's spans)."""
    from importlib import resources

    page = resources.files("charlm").joinpath(PLAYGROUND).read_text("utf-8")
    return Template(page).substitute(
        style=style(),
        legend=legend(),
        surprisal_script=script(),
        edges=json.dumps(EDGES),
        bins=len(COLOURS),
        top_k=TOP_K,
    )


class Guard:
    """ASGI middleware: with an API key, every route but OPEN needs `Authorization: Bearer`."""

    def __init__(self, app: Any, key: str | None) -> None:
        self.app = app
        self.expected = None if key is None else b"Bearer " + key.encode("utf-8")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self.expected is not None and scope["type"] == "http" and scope["path"] not in OPEN:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                e = ApiError(
                    401,
                    'this server needs an API key: send "Authorization: Bearer KEY"',
                    kind="authentication_error",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await error_response(e)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _api_error(request: Request, e: Exception) -> Response:
    assert isinstance(e, ApiError)
    return error_response(e)


async def _http_error(request: Request, e: Exception) -> Response:
    assert isinstance(e, HTTPException)
    path = request.url.path
    what = f"{request.method} {path if len(path) <= 100 else path[:100] + '...'}"
    if e.status_code == 404:
        message = f"no route {what}: this server serves {ROUTES}"
    elif e.status_code == 405:
        message = f"{what} is not served (wrong method): this server serves {ROUTES}"
    else:
        message = str(e.detail)
    kind = "not_found_error" if e.status_code in (404, 405) else "invalid_request_error"
    return error_response(ApiError(e.status_code, message, kind=kind, headers=e.headers))


async def _bug(request: Request, e: Exception) -> Response:
    traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
    return error_response(
        ApiError(500, "internal error (see the server's log)", kind="server_error")
    )


def create_app(service: Service) -> Starlette:
    """The ASGI app: its lifespan loads the models on a thread, and closes them at the end."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        threading.Thread(target=service.load, args=(loop,), name="charlm-load", daemon=True).start()
        yield
        service.drain(0.0)
        await asyncio.to_thread(service.close)

    o = service.options
    middleware = [Middleware(Guard, key=o.api_key)]
    if o.cors:
        middleware.insert(
            0,
            Middleware(
                CORSMiddleware,
                allow_origins=list(o.cors),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
            ),
        )
    routes = [
        Route("/", playground),
        Route("/health", health),
        Route("/v1/models", models),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/score", score, methods=["POST"]),
    ]
    handlers = {ApiError: _api_error, HTTPException: _http_error, Exception: _bug}
    app = Starlette(
        routes=routes, middleware=middleware, exception_handlers=handlers, lifespan=lifespan
    )
    app.state.service = service
    return app


class GuardedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline on each request's head: a client that
    trickles its headers (slowloris) is cut off after `timeout` seconds, not held forever.
    (A slow body is cut by `read_body`; an idle keep-alive connection by uvicorn.)"""

    timeout = 10.0  # set per server by `guarded_http`
    head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
        self.head_timer = self.loop.call_later(self.timeout, self._too_slow)

    def _too_slow(self) -> None:
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()  # no whole request head in time


def guarded_http(timeout: float) -> type[GuardedH11]:
    return type("GuardedH11", (GuardedH11,), {"timeout": timeout})


class Server(uvicorn.Server):
    """uvicorn's server, that drains the engines at the first SIGTERM/SIGINT, and exits 0
    after one: a server stopped by a signal has done what was asked (uvicorn would raise the
    signal again once stopped, and the process would end by it)."""

    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self.service = service

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.service.drain(self.service.options.grace)  # only sets deadlines: signal-safe
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = (signal.SIGINT, signal.SIGTERM)
        before = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in before.items():
                signal.signal(sig, handler)


def run(service: Service, host: str, port: int, access_log: bool = False) -> int:
    """Serve until SIGTERM or SIGINT: then stop accepting, give the streams in flight
    `options.grace` seconds to finish (the rest are cut, saying so), and return 0; 1 when a
    model could not be loaded (said on stderr)."""
    o = service.options
    config = uvicorn.Config(
        create_app(service),
        host=host,
        port=port,
        http=guarded_http(o.limits.timeout),
        log_level="warning",
        access_log=access_log,
        timeout_graceful_shutdown=int(o.grace) + 2,
        limit_concurrency=MAX_CONNECTIONS,
        server_header=False,
    )
    server = Server(config, service)

    def ready(s: Service) -> None:
        if s.error is not None:
            print(f"error: {s.error}", file=sys.stderr, flush=True)
            server.should_exit = True
            return
        shown = f"[{host}]" if ":" in host else host
        names = ", ".join(f"{n} ({p})" for n, p in s.runs)
        print(
            f"serving {names} on http://{shown}:{port}/ (the playground; the API at /v1). "
            "Ctrl-C stops.",
            file=sys.stderr,
            flush=True,
        )

    service.on_ready = ready
    server.run()
    return 1 if service.error is not None else 0
