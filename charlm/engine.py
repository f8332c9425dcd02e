"""The serving engine: the generation requests of many clients stepped together, one batch.

`charlm.generate` is the plain path: one call, one batch fixed from its first step to its last.
A server gets requests at any moment, of any length, and owes each client its characters as
they are made. The engine keeps one batch of streams on the fast stepper and steps it on a
worker thread of its own (torch releases the GIL, so the server's event loop never waits on a
step):

    submit(job) -> waiting -> joins at the next step: its prompt warmed in a batched prefill,
                              its streams loaded into free rows of the running stepper
                -> one character per step, handed to `job.deliver` as it is made
                -> leaves when done (length, a stop sequence, or its client gone): the last
                   row moves into its place, and the stepper shrinks when a quarter is used

Each job draws as `generate` does: the decoder `charlm.decode.sampler` makes for its settings,
its own seeded generator drawing its own Gumbel noise, NOISE_STEPS steps at a time. A batch of
one runs the stepper `generate` runs (the decoder's 1/T folded into the output weights), so a
seeded request alone gives `charlm generate --seed`'s text; in a batch of several, the logits
come at temperature 1 and each row is multiplied by its own 1/T, and the matmuls run on more
rows: the same draws, but a logit may round differently, and where two characters' scores
nearly tie, the other one may win. The precision (--amp, --int8) is the server's, fixed at
start; as in `generate`, a batch of one runs its matrix-vector product in full precision.
"""

from __future__ import annotations

import codecs
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch

from charlm.decode import NOISE_STEPS, Greedy, Gumbel, sampler
from charlm.errors import CharLMError
from charlm.generate import overflows
from charlm.model import CharLM
from charlm.sampling import Sampling
from charlm.stepper import Stepper
from charlm.vocab import Vocab

MAX_BATCH = 64  # streams stepped together, by default
MAX_WAITING = 256  # streams waiting to join, by default: past it, submit refuses (Busy)
SOLO_STEPPERS = 4  # one-stream steppers kept, one per temperature (their scale is folded in)


class Piece(NamedTuple):
    """What a stream made since the last piece: text, and why it ended (None: it goes on).

    finish: "length", "stop" (a stop sequence: cut before it), "cancelled" (the caller asked),
    "shutdown" (the engine closed) or "error" (a bug, reported on stderr)."""

    index: int  # the stream within its job, 0 .. n-1
    text: str
    finish: str | None


def _ignore(pieces: list[Piece]) -> None:
    """A job nobody listens to (the default `deliver`)."""


@dataclass(eq=False)
class Job:
    """One request: `settings.num_samples` streams continuing `prompt`, drawn as
    `generate(model, vocab, prompt, settings=settings)` draws them (not a beam).

    `deliver` hears the pieces of every step that made some (on the engine's dispatch: by
    default its worker thread); `cancelled = True` (a client gone) frees the streams at the
    next step."""

    prompt: str
    settings: Sampling
    stops: tuple[str, ...] = ()
    deliver: Callable[[list[Piece]], None] = _ignore
    cancelled: bool = False
    ids: list[int] = field(default_factory=list, repr=False)  # the prompt's, set by submit


class Busy(CharLMError):
    """The waiting line is full: try again shortly (the server's 503)."""


class Closed(CharLMError):
    """The engine is shutting down and takes no more work."""


class Stops:
    """Stop sequences over one stream's text: what may be sent now, and where the text stops.

    A character that could begin a stop sequence is held back until it cannot, so a stop
    sequence is never sent, and found wherever it lies (it is always inside the held text)."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops, self.held = stops, ""

    def push(self, text: str) -> tuple[str, bool]:
        """(what can be sent now, whether a stop sequence ended the stream)."""
        if not self.stops:
            return text, False
        held = self.held + text
        found = [i for i in (held.find(s) for s in self.stops) if i >= 0]
        if found:
            self.held = ""
            return held[: min(found)], True
        keep = max(
            (k for s in self.stops for k in range(1, len(s)) if held.endswith(s[:k])), default=0
        )
        self.held = held[len(held) - keep :]
        return held[: len(held) - keep], False

    def flush(self) -> str:
        """The text held back, at the end of the stream."""
        held, self.held = self.held, ""
        return held


class _Draw:
    """A job's decoder and the step it is at: one per job, shared by its streams."""

    def __init__(self, job: Job, model: CharLM, vocab: Vocab) -> None:
        s = job.settings
        if not s.greedy and overflows(model, s.temperature):
            s = replace(s, greedy=True)  # as generate: T -> 0 is the likeliest character
        self.decoder = sampler(s, len(vocab), model.W_hq.dtype, model.W_hq.device)
        kind = type(self.decoder)
        # plain draws run as one op over the batch; top-k and nucleus call their decoder
        self.plain = kind in (Greedy, Gumbel)
        self.job, self.t, self.scale = job, 0, self.decoder.scale


@dataclass(eq=False)
class _Stream:
    """One row of the batch: stream `index` of its job."""

    draw: _Draw
    index: int
    last: int  # the id fed to the next step
    stops: Stops
    noise: list[torch.Tensor]  # plain draws: this stream's (1, V) noise, per step of a block
    utf8: codecs.IncrementalDecoder | None  # a byte-level model's characters
    steps: int = 0


def start_ids(vocab: Vocab, prompt: str) -> list[int]:
    """The prompt's ids; an empty prompt starts from a newline, as `generate` starts it."""
    if not prompt:
        prompt = "\n" if "\n" in vocab.chars else vocab.chars[0]
    return vocab.encode(prompt).tolist()


@torch.inference_mode()
def prefill(model: CharLM, prompts: list[list[int]]) -> list[tuple[torch.Tensor, ...]]:
    """Per prompt, the state (h, c) after all its ids but the last, each (L, 1, H): warmed
    together, in one forward pass per distinct length (the longest go on alone).

    One prompt alone is the forward pass `generate` warms it with, so its state is the same."""
    lengths = [len(p) - 1 for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])  # longest first
    X = torch.zeros(max(lengths, default=0), len(prompts), dtype=torch.long)
    for col, i in enumerate(order):
        X[: lengths[i], col] = torch.tensor(prompts[i][:-1])
    X = X.to(model.W_hq.device)
    zero = model.rnn.split_state(model.init_state(1, X.device))
    out: list[tuple[torch.Tensor, ...]] = [tuple(zero)] * len(prompts)
    state, start = None, 0
    for end in sorted(set(lengths) - {0}):
        k = sum(n >= end for n in lengths)  # the prompts still going: the first k columns
        if state is not None:
            state = _rows_of(state, slice(0, k))
        _, state = model(X[start:end, :k], state, dropout=False)
        for col in range(k):
            if lengths[order[col]] == end:
                out[order[col]] = tuple(_rows_of(model.rnn.split_state(state), slice(col, col + 1)))
        start = end
    return out


def _rows_of(state: torch.Tensor | tuple, rows: slice) -> torch.Tensor | tuple:
    """Batch rows of a state (a tensor (L, B, H), or a tuple of them; None stays None)."""
    if isinstance(state, tuple):
        return tuple(None if s is None else s[:, rows] for s in state)
    return state[:, rows]


def capacity(n: int, max_batch: int) -> int:
    """The rows of the stepper that runs n streams: 1, or a power of two up to max_batch."""
    return 1 if n <= 1 else min(1 << (n - 1).bit_length(), max_batch)


class Batch:
    """The streams being stepped: row i of the stepper is `streams[i]`. Worker thread only."""

    def __init__(self, model: CharLM, vocab: Vocab, amp: bool, int8: bool, max_batch: int) -> None:
        self.model, self.vocab, self.amp, self.int8 = model, vocab, amp, int8
        self.max_batch = max_batch
        self.streams: list[_Stream] = []
        self.stepper: Stepper | None = None
        self.capacity = 0
        self.steppers: dict[tuple[int, float], Stepper] = {}  # (capacity, scale) -> stepper
        self.zeros = torch.zeros(1, len(vocab), dtype=model.W_hq.dtype, device=model.W_hq.device)

    def _stepper(self, rows: int, scale: float) -> Stepper:
        key = (rows, scale)
        if key not in self.steppers:
            solo = [k for k in self.steppers if k[0] == 1]
            if rows == 1 and len(solo) >= SOLO_STEPPERS:
                del self.steppers[solo[0]]  # the oldest temperature
            self.steppers[key] = Stepper(self.model, rows, scale, self.amp, self.int8)
        return self.steppers[key]

    def _resize(self, n: int, live: int) -> None:
        """A stepper sized for n streams, the states of the first `live` rows moved into it."""
        if n == 0:
            self.stepper, self.capacity = None, 0
            return
        rows = capacity(n, self.max_batch)
        scale = self.streams[0].draw.scale if rows == 1 else 1.0
        new = self._stepper(rows, scale)
        if new is self.stepper:
            return
        if live:  # the matmuls are run again on the states moved
            new.load_rows(torch.arange(live), *self.stepper.rows_state(slice(0, live)))
        self.stepper, self.capacity = new, rows

    def join(self, jobs: list[Job]) -> None:
        """The jobs' streams enter the batch at the next step, their prompts warmed together."""
        states = prefill(self.model, [job.ids for job in jobs])
        n = len(self.streams)
        grown = n + sum(job.settings.num_samples for job in jobs)
        for job in jobs:
            draw = _Draw(job, self.model, self.vocab)
            gumbel = draw.plain and isinstance(draw.decoder, Gumbel)
            for j in range(job.settings.num_samples):
                noise = [row[j : j + 1] for row in draw.decoder.rows] if gumbel else []
                utf8 = _utf8() if self.vocab.is_bytes else None
                self.streams.append(_Stream(draw, j, job.ids[-1], Stops(job.stops), noise, utf8))
        if self.capacity < grown or self.capacity == 1:
            self._resize(grown, n)
        start = n
        for job, (h, c) in zip(jobs, states, strict=True):
            k = job.settings.num_samples
            rows = torch.arange(start, start + k)
            expand = (h.shape[0], k, h.shape[2])
            self.stepper.load_rows(rows, h.expand(expand), None if c is None else c.expand(expand))
            start += k

    def step(self) -> dict[Job, list[Piece]]:
        """One character for every stream; the pieces made, by job."""
        n = len(self.streams)
        x = torch.tensor([s.last for s in self.streams] + [0] * (self.capacity - n))
        logits = self.stepper.step(x.to(self.zeros.device))
        ids = self._choose(logits, n).tolist()
        for draw in {id(s.draw): s.draw for s in self.streams}.values():
            draw.t += 1
        return self._emit(ids)

    def _choose(self, logits: torch.Tensor, n: int) -> torch.Tensor:
        """The (n,) ids drawn by each stream's decoder from its row of the logits."""
        if self.capacity == 1:  # generate's stepper: the decoder's scale is folded in
            draw = self.streams[0].draw
            out = torch.empty(1, dtype=torch.long, device=logits.device)
            draw.decoder.choose(logits, draw.t, out)
            return out
        draws = {id(s.draw): s.draw for s in self.streams}.values()
        for d in draws:
            if d.plain and isinstance(d.decoder, Gumbel) and d.t % NOISE_STEPS == 0:
                d.decoder.refill()
        noise = [s.noise[s.draw.t % NOISE_STEPS] if s.noise else self.zeros for s in self.streams]
        scales = torch.tensor([[s.draw.scale] for s in self.streams], dtype=logits.dtype)
        scaled = logits[:n] * scales.to(logits.device)  # each row at its own temperature
        ids = torch.cat(noise).add_(scaled).argmax(dim=-1)
        for d in draws:
            if not d.plain:
                self._choose_rows(d, scaled, ids)
        return ids

    def _choose_rows(self, draw: _Draw, scaled: torch.Tensor, ids: torch.Tensor) -> None:
        """A top-k or nucleus job: its decoder draws for all its streams, the live ones kept."""
        rows = [i for i, s in enumerate(self.streams) if s.draw is draw]
        index = torch.tensor([self.streams[i].index for i in rows], device=scaled.device)
        rows_t = torch.tensor(rows, device=scaled.device)
        full = scaled.new_zeros(draw.job.settings.num_samples, scaled.shape[1])
        full[index] = scaled[rows_t]
        out = torch.empty(len(full), dtype=torch.long, device=scaled.device)
        draw.decoder.choose(full, draw.t, out)
        ids[rows_t] = out[index]

    def _emit(self, ids: list[int]) -> dict[Job, list[Piece]]:
        """Each stream's new character through its stop sequences; the finished ones leave."""
        chars, made, keep = self.vocab.chars, {}, []
        for i, (s, c) in enumerate(zip(self.streams, ids, strict=True)):
            s.last, s.steps = c, s.steps + 1
            job = s.draw.job
            last = s.steps == job.settings.length
            text = chars[c] if s.utf8 is None else s.utf8.decode(bytes([c]), final=last)
            text, stopped = s.stops.push(text)
            finish = "stop" if stopped else "length" if last else None
            if finish == "length":
                text += s.stops.flush()
            if text or finish:
                made.setdefault(job, []).append(Piece(s.index, text, finish))
            if finish is None:
                keep.append(i)
        self.keep(keep)
        return made

    def keep(self, rows: list[int]) -> None:
        """Only the streams of `rows` go on: moved to the first rows, the stepper shrunk."""
        if len(rows) == len(self.streams):
            return
        self.streams = [self.streams[i] for i in rows]
        if rows and self.capacity > 1:
            fill = [rows[0]] * (self.capacity - len(rows))
            self.stepper.reorder(torch.tensor(rows + fill, device=self.zeros.device))
        if len(rows) <= self.capacity // 4 or len(rows) == 1:
            self._resize(len(rows), len(rows))

    def end(self, which: Callable[[_Stream], str | None]) -> dict[Job, list[Piece]]:
        """End the streams `which` names a finish for (cancelled, shutdown, error)."""
        made, keep = {}, []
        for i, s in enumerate(self.streams):
            finish = which(s)
            if finish is None:
                keep.append(i)
            else:
                made.setdefault(s.draw.job, []).append(Piece(s.index, "", finish))
        self.keep(keep)
        return made


def _utf8() -> codecs.IncrementalDecoder:
    """A byte-level stream's characters, as `generate.stream` decodes them."""
    return codecs.getincrementaldecoder("utf-8")("replace")


def _ended(jobs: Iterable[Job], finish: str) -> dict[Job, list[Piece]]:
    """Every stream of `jobs` ends, with nothing more to say."""
    return {job: [Piece(j, "", finish) for j in range(job.settings.num_samples)] for job in jobs}


def _merge(made: dict[Job, list[Piece]], more: dict[Job, list[Piece]]) -> dict[Job, list[Piece]]:
    for job, pieces in more.items():
        made.setdefault(job, []).extend(pieces)
    return made


def _deliver_all(made: dict[Job, list[Piece]]) -> None:
    """Hand every job its pieces (the default dispatch: on the worker thread)."""
    for job, pieces in made.items():
        job.deliver(pieces)


class Engine:
    """Jobs in, characters out: a waiting line and a worker thread that steps the batch.

    `dispatch` hears, once per step, every job's new pieces: a server passes a function that
    hands them to its event loop; by default each job's `deliver` is called on the worker."""

    def __init__(
        self,
        model: CharLM,
        vocab: Vocab,
        *,
        amp: bool = False,
        int8: bool = False,
        max_batch: int = MAX_BATCH,
        max_waiting: int = MAX_WAITING,
        dispatch: Callable[[dict[Job, list[Piece]]], None] = _deliver_all,
    ) -> None:
        Sampling(amp=amp, int8=int8)  # --amp with --int8 is refused as generate refuses it
        if int8 and model.W_hq.device.type != "cpu":
            raise CharLMError(f"--int8 runs on CPU, not {model.W_hq.device.type}: use --amp")
        self.batch = Batch(model, vocab, amp, int8, max_batch)
        self.max_batch, self.max_waiting, self.dispatch = max_batch, max_waiting, dispatch
        self.waiting: deque[Job] = deque()
        self.cond = threading.Condition()
        self.deadline: float | None = None  # set by drain: live streams end by then
        self.steps = self.widest = 0  # steps made, and the most streams stepped at once
        self.thread = threading.Thread(target=self._run, name="charlm-engine", daemon=True)
        self.thread.start()

    @property
    def live(self) -> int:
        return len(self.batch.streams)

    @property
    def queued(self) -> int:
        return sum(job.settings.num_samples for job in self.waiting)

    def submit(self, jobs: Iterable[Job]) -> None:
        """Queue jobs to join at the next step, all of them or (Busy, Closed) none."""
        jobs = list(jobs)
        for job in jobs:
            if job.settings.beam_width is not None or job.settings.num_samples > self.max_batch:
                raise ValueError("the engine samples (no beam), at most max_batch streams a job")
            job.ids = start_ids(self.batch.vocab, job.prompt)  # unknown characters: refused here
        with self.cond:
            if self.deadline is not None:
                raise Closed("the server is shutting down")
            asked = sum(job.settings.num_samples for job in jobs)
            if self.queued + asked > self.max_waiting:
                raise Busy(
                    f"{self.queued} streams are waiting already (the limit is "
                    f"{self.max_waiting}): try again shortly"
                )
            self.waiting.extend(job for job in jobs if job.settings.length)
            self.cond.notify()
        empty = [job for job in jobs if not job.settings.length]
        if empty:  # nothing to make: done at once
            self.dispatch(_ended(empty, "length"))

    def drain(self, grace: float) -> None:
        """Take no more jobs; the live streams end within `grace` seconds, the waiting now.
        Safe in a signal handler: it only sets a deadline (the worker sees it at its next step
        or at `close`)."""
        if self.deadline is None:
            self.deadline = time.monotonic() + grace

    def close(self, grace: float = 0.0) -> None:
        """Drain, then wait for the worker to end."""
        self.drain(grace)
        with self.cond:
            self.cond.notify()
        self.thread.join()

    def _next(self) -> list[Job] | None:
        """The jobs that join now (None: the worker ends); waits while there is nothing to do."""
        with self.cond:
            while not (self.waiting or self.batch.streams or self.deadline is not None):
                self.cond.wait()
            if self.deadline is not None:
                if self.waiting:
                    self.dispatch(_ended(self.waiting, "shutdown"))
                    self.waiting.clear()
                return None if not self.batch.streams else []
            joining, free = [], self.max_batch - len(self.batch.streams)
            while self.waiting and self.waiting[0].settings.num_samples <= free:
                job = self.waiting.popleft()
                if job.cancelled:
                    self.dispatch(_ended([job], "cancelled"))
                    continue
                free -= job.settings.num_samples
                joining.append(job)
            return joining

    def _run(self) -> None:
        with torch.inference_mode():
            while (joining := self._next()) is not None:
                try:
                    self._step(joining)
                except Exception:  # a bug: said on stderr, its streams end, the engine goes on
                    traceback.print_exc(file=sys.stderr)
                    failed = _merge(_ended(joining, "error"), self.batch.end(lambda s: "error"))
                    self.batch = Batch(
                        self.batch.model,
                        self.batch.vocab,
                        self.batch.amp,
                        self.batch.int8,
                        self.max_batch,
                    )
                    self.dispatch(failed)
            ended = self.batch.end(lambda s: "shutdown")
            if ended:
                self.dispatch(ended)

    def _step(self, joining: list[Job]) -> None:
        batch = self.batch
        made = batch.end(lambda s: "cancelled" if s.draw.job.cancelled else None)
        if self.deadline is not None and time.monotonic() >= self.deadline:
            _merge(made, batch.end(lambda s: "shutdown"))
        if joining:
            batch.join(joining)
        if batch.streams:
            self.widest = max(self.widest, len(batch.streams))
            _merge(made, batch.step())
            self.steps += 1
        if made:
            self.dispatch(made)

    def complete(self, prompt: str, settings: Sampling, stops: tuple[str, ...] = ()) -> list:
        """[(text, finish)] per stream of one job, waiting for it (a library call, the tests)."""
        texts = [""] * settings.num_samples
        finish: list[str | None] = [None] * settings.num_samples
        done = threading.Event()

        def deliver(pieces: list[Piece]) -> None:
            for p in pieces:
                texts[p.index] += p.text
                finish[p.index] = p.finish or finish[p.index]
            if all(finish):
                done.set()

        self.submit([Job(prompt, settings, stops, deliver)])
        done.wait()
        return list(zip(texts, finish, strict=True))
