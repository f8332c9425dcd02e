"""The HTTP API's requests and answers, as OpenAI's completions API shapes them; torch-free.

A request body is checked here, field by field, before any work is queued: a wrong JSON type
is a 422, anything else a client can get wrong (malformed JSON, a value out of range, a limit
passed, a combination that makes no sense) a 400, each with OpenAI's error body
`{"error": {"message", "type", "param", "code"}}` naming the field. OpenAI's fields that charlm
has no use for are accepted at their neutral value (what clients send by default) and refused
with any other, so a client never gets silently less than it asked for; names that are nobody's
field are refused, so that a typo (`max_token`) is not silently ignored.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from charlm.errors import CharLMError, flag
from charlm.sampling import Sampling
from charlm.scoring import Scoring

MAX_TOKENS = 16  # OpenAI's default for max_tokens (characters here)
SEED_RANGE = (-(2**63), 2**64)  # what a torch.Generator takes, as `Sampling` checks


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how much waiting the server takes on."""

    max_tokens: int = 4096  # characters one completion may ask for
    max_prompt: int = 16_384  # characters of a prompt (each) or of a text to score
    max_n: int = 16  # choices in one request: n x the number of prompts
    max_beam: int = 16  # beam_width
    max_stops: int = 4  # stop sequences (OpenAI's limit)
    max_stop_chars: int = 256  # characters of one stop sequence
    max_body: int = 1 << 20  # bytes of a request body
    max_batch: int = 64  # streams stepped together
    queue: int = 256  # streams waiting to join the batch; past it, 503
    timeout: float = 10.0  # seconds a client may take to send a request's head or body

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not value > 0 or not math.isfinite(value):
                raise CharLMError(f"{flag(name)} must be > 0, got {value}")
        if self.max_n > min(self.max_batch, self.queue):
            raise CharLMError(
                f"--max-n {self.max_n} must be <= --max-batch {self.max_batch} and --queue "
                f"{self.queue}: a request's choices wait and run together"
            )


class ApiError(Exception):
    """A request the server will not serve, as an HTTP status and OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}
        }


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_json(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object: NaN and Infinity are refused, as JSON refuses them."""
    try:
        value = json.loads(body, parse_constant=_no_constants)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        detail = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise ApiError(400, f"the request body is not valid JSON: {detail}") from None
    if not isinstance(value, dict):
        raise ApiError(400, f"the request body must be a JSON object, not {_kind(value)}")
    return value


def _kind(value: object) -> str:
    names = {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


class Fields:
    """A request's JSON object, read field by field with its type checked (422 if wrong)."""

    def __init__(self, body: dict[str, Any], known: set[str]) -> None:
        unknown = sorted(set(body) - known)
        if unknown:
            raise ApiError(
                400,
                f"unknown field {unknown[0]!r} (this route takes: {', '.join(sorted(known))})",
                unknown[0],
            )
        self.body = body

    def _get(self, name: str, default: Any) -> Any:
        value = self.body.get(name)
        return default if value is None else value

    def _wrong(self, name: str, what: str) -> ApiError:
        return ApiError(422, f"{name} must be {what}, got {_kind(self.body[name])}", name)

    def whole(
        self, name: str, default: int | None, low: int, high: int | None = None, limit: str = ""
    ) -> Any:
        """A whole number in [low, high] (None: absent, when the default is None); `limit`
        names the server's flag that set `high`, if one did."""
        value = self._get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong(name, "a whole number")
        if value < low:
            raise ApiError(400, f"{name} must be >= {low}, got {value}", name)
        if high is not None and value > high:
            if limit:
                message = f"{name} {value} is over the server's limit of {high} ({limit})"
            else:
                message = f"{name} must be <= {high}, got {value}"
            raise ApiError(400, message, name)
        return value

    def number(self, name: str, default: float | None) -> Any:
        """A finite number (None: absent, when the default is None)."""
        value = self._get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._wrong(name, "a number")
        if not math.isfinite(value):
            raise ApiError(400, f"{name} must be a finite number, got {value}", name)
        return float(value)

    def flag(self, name: str) -> bool:
        value = self._get(name, False)
        if not isinstance(value, bool):
            raise self._wrong(name, "true or false")
        return value

    def text(self, name: str, default: str | None = None) -> Any:
        value = self._get(name, default)
        if value is not None and not isinstance(value, str):
            raise self._wrong(name, "a string")
        return value

    def strings(self, name: str) -> list[str] | None:
        """A string or an array of strings (None: absent)."""
        value = self.body.get(name)
        if value is None or isinstance(value, str):
            return None if value is None else [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._wrong(name, "a string or an array of strings")
        return value

    def neutral(self, name: str, *allowed: object, why: str = "") -> None:
        """An OpenAI field charlm has no use for: accepted only at a neutral value."""
        value = self.body.get(name)
        if value is not None and value not in allowed:
            raise ApiError(400, f"{name} is not supported by charlm{why}", name)


# OpenAI's completions fields that charlm takes at their neutral values only
NEUTRAL = {
    "logprobs": ((), " (POST /v1/score gives every character's surprisal and top predictions)"),
    "suffix": ((), ""),
    "best_of": ((1,), ""),
    "presence_penalty": ((0, 0.0), ""),
    "frequency_penalty": ((0, 0.0), ""),
    "logit_bias": (({},), ""),
}
COMPLETION_FIELDS = {
    "model",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stream",
    "stream_options",
    "stop",
    "seed",
    "echo",
    "user",
    "top_k",
    "beam_width",
    "skip_unknown",
    *NEUTRAL,
}
SCORE_FIELDS = {"model", "text", "dynamic", "dynamic_lr", "dynamic_decay", "skip_unknown"}


@dataclass(frozen=True)
class Completion:
    """A checked `POST /v1/completions` request."""

    model: str | None
    prompts: list[str]
    settings: Sampling  # num_samples is the request's n; greedy when temperature is 0
    stops: tuple[str, ...]
    stream: bool
    usage_in_stream: bool  # stream_options.include_usage
    echo: bool
    skip_unknown: bool

    @property
    def beam(self) -> bool:
        return self.settings.beam_width is not None


def parse_completion(body: dict[str, Any], limits: Limits) -> Completion:
    """Check a completions request against OpenAI's semantics and the server's limits."""
    f = Fields(body, COMPLETION_FIELDS)
    for name, (allowed, why) in NEUTRAL.items():
        f.neutral(name, *allowed, why=why)
    f.text("user")
    prompts = _prompts(f, limits)
    n = f.whole("n", 1, 1)
    if n * len(prompts) > limits.max_n:
        raise ApiError(
            400,
            f"n x prompts = {n * len(prompts)} choices is over the server's "
            f"limit of {limits.max_n} per request (--max-n)",
            "n",
        )
    stream = f.flag("stream")
    options = body.get("stream_options")
    if options is not None and (
        not stream or not isinstance(options, dict) or set(options) - {"include_usage"}
    ):
        raise ApiError(
            400,
            'stream_options takes {"include_usage": true|false}, with "stream": true',
            "stream_options",
        )
    usage = Fields(options or {}, {"include_usage"}).flag("include_usage")
    settings = _sampling(f, n, stream, limits)
    return Completion(
        f.text("model"),
        prompts,
        settings,
        _stops(f, limits),
        stream,
        usage,
        f.flag("echo"),
        f.flag("skip_unknown"),
    )


def _prompts(f: Fields, limits: Limits) -> list[str]:
    if isinstance(f.body.get("prompt"), list) and any(isinstance(p, int) for p in f.body["prompt"]):
        raise ApiError(
            400,
            "prompt as token ids is not supported: charlm's tokens are characters, send the text",
            "prompt",
        )
    prompts = f.strings("prompt")
    if prompts is None:
        prompts = [""]  # OpenAI's default: <|endoftext|>; here the model's neutral start
    if not prompts:
        raise ApiError(400, "prompt is an empty array: send at least one prompt", "prompt")
    for p in prompts:
        if len(p) > limits.max_prompt:
            raise ApiError(
                400,
                f"a prompt of {len(p)} characters is over the server's limit "
                f"of {limits.max_prompt} (--max-prompt)",
                "prompt",
            )
    return prompts


def _sampling(f: Fields, n: int, stream: bool, limits: Limits) -> Sampling:
    """The generation settings: sampling (temperature 0: greedy), or a beam search."""
    length = f.whole("max_tokens", MAX_TOKENS, 0, limits.max_tokens, "--max-tokens")
    beam = f.whole("beam_width", None, 1, limits.max_beam, "beam searches")
    temperature = f.number("temperature", None)
    top_k, top_p, seed = f.whole("top_k", None, 1), f.number("top_p", None), f.body.get("seed")
    if seed is not None:
        seed = f.whole("seed", None, SEED_RANGE[0], SEED_RANGE[1] - 1)
    if top_p is not None and not 0 < top_p <= 1:
        raise ApiError(400, f"top_p must be in (0, 1], got {top_p}", "top_p")
    if temperature is not None and temperature < 0:
        raise ApiError(
            400, f"temperature must be >= 0 (0: greedy), got {temperature}", "temperature"
        )
    if beam is not None:
        given = [
            name
            for name, v in (
                ("stream", stream or None),
                ("temperature", temperature),
                ("top_k", top_k),
                ("top_p", top_p),
                ("seed", seed),
            )
            if v is not None
        ]
        if given:
            raise ApiError(
                400,
                f"beam_width does not go with {given[0]}: a beam is "
                "deterministic and knows its best continuation only at the end",
                given[0],
            )
        if n > beam:
            raise ApiError(
                400,
                f"n {n} must be <= beam_width {beam}: a beam returns the best "
                "of the continuations it holds",
                "n",
            )
        return Sampling(length, num_samples=n, beam_width=beam)
    greedy = temperature == 0
    T = 1.0 if temperature is None or greedy else temperature
    return Sampling(length, T, top_k, top_p, greedy, n, seed)


def _stops(f: Fields, limits: Limits) -> tuple[str, ...]:
    stops = f.strings("stop") or []
    if len(stops) > limits.max_stops:
        raise ApiError(
            400, f"{len(stops)} stop sequences are over the limit of {limits.max_stops}", "stop"
        )
    for s in stops:
        if not s or len(s) > limits.max_stop_chars:
            raise ApiError(
                400,
                f"a stop sequence must have 1 to {limits.max_stop_chars} characters, got {len(s)}",
                "stop",
            )
    return tuple(stops)


@dataclass(frozen=True)
class ScoreRequest:
    """A checked `POST /v1/score` request."""

    model: str | None
    text: str
    scoring: Scoring


def parse_score(body: dict[str, Any], limits: Limits) -> ScoreRequest:
    f = Fields(body, SCORE_FIELDS)
    text = f.text("text")
    if text is None:
        raise ApiError(400, "text is required: the text to score", "text")
    if len(text) > limits.max_prompt:
        raise ApiError(
            400,
            f"a text of {len(text)} characters is over the server's limit of "
            f"{limits.max_prompt} (--max-prompt)",
            "text",
        )
    dynamic = f.flag("dynamic")
    lr, decay = f.number("dynamic_lr", None), f.number("dynamic_decay", None)
    try:
        scoring = Scoring(
            skip_unknown=f.flag("skip_unknown"), dynamic=dynamic, dynamic_lr=lr, dynamic_decay=decay
        )
    except CharLMError as e:  # Scoring names the CLI's flags: --dynamic-lr is dynamic_lr here
        raise ApiError(400, str(e).replace("--dynamic-", "dynamic_").replace("--", "")) from None
    return ScoreRequest(f.text("model"), text, scoring)
