"""Batch samplers: which windows of the training text form each batch.

Both follow the textbook char-LM (Dive into Deep Learning, `data_iter_random` and
`data_iter_consecutive`) and yield (X, Y) pairs of shape (T, B) -- time-major, like nn.LSTM --
where Y is X shifted by one character. An epoch's order depends only on (seed, epoch), so a run
resumed at batch k of epoch e sees exactly the batches it would have seen.

random: the text of n characters is cut at 0, T, 2T, ... into (n - 1) // T windows (window j is
text[jT : jT + T], its targets one further); every epoch shuffles *all* of them and takes
num_windows // B batches from the start of the shuffled list, so each epoch trains on a
different subset and, over epochs, on the whole text. The hidden state starts fresh every batch.

    text:   |  w0  |  w1  |  w2  |  w3  |  w4  |  w5  | ...
    batch0: w4 w0 w5 ...   (B windows from the front of the shuffled list)

The shuffled list is never written out: batch k's windows are entries [kB, (k+1)B) of a seeded
random permutation computed on demand (permutation.py), a few thousand windows at a time, so
an epoch of a 1 GB text starts as soon as one of 1 MB, and a resumed run goes straight to its
batch. Runs begun with the list written out (layout 2) keep that order when resumed.

consecutive: positions [0, B * L) with L = n // B are cut into B parallel streams of length L;
batch k holds positions [kT, (k+1)T) of every stream ((L - 1) // T batches), so row i of batch
k+1 continues row i of batch k and the hidden state is carried (truncated BPTT).

    stream 0: | batch0 | batch1 | batch2 | ...
    stream 1: | batch0 | batch1 | batch2 | ...
    ...
    stream B-1

`random_offset` (off by default, as in the textbook) shifts every window of an epoch by one
random phase in [0, T), so window boundaries differ from epoch to epoch; the batch count then
leaves room for the largest phase and is the same every epoch.

With several processes (DDP), each rank takes its own rows of every global batch: rank r of W
gets rows [r*B/W, (r+1)*B/W), so for consecutive sampling every rank owns its own streams.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from charlm.errors import CharLMError, flag
from charlm.permutation import Permutation

# The batch layout a checkpoint was trained with. 1: charlm 0.1's own layout (a random phase
# every epoch, random windows drawn from the start of the text); 2: the textbook's, its
# epoch's order drawn whole by rng.permutation; 3: the textbook's, drawn on demand.
LAYOUT = 3
LAYOUTS = (2, 3)  # the layouts this charlm can continue
CHUNK_WINDOWS = 1 << 14  # the random order is computed this many windows at a time


class Sampler:
    """Common part: the per-epoch window starts come from the subclass, gathering is shared."""

    name = ""
    carries_state = False

    def __init__(
        self,
        data: np.ndarray,
        seq_len: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        random_offset: bool = False,
        layout: int = LAYOUT,
    ) -> None:
        if batch_size % world_size:
            raise CharLMError(
                f"{flag('batch_size', batch_size)} must be divisible by the number of processes "
                f"({world_size})"
            )
        if layout not in LAYOUTS:
            raise ValueError(f"sampler layout {layout} is not one of {LAYOUTS}")
        self.data, self.T, self.B, self.seed = data, seq_len, batch_size, seed
        self.random_offset, self.layout = random_offset, layout
        self.rows = slice(rank * batch_size // world_size, (rank + 1) * batch_size // world_size)
        # the usable length: with a random phase, the text after the largest phase
        self.n = len(data) - (seq_len - 1 if random_offset else 0)
        if len(self) < 1:
            raise CharLMError(
                f"the training text has {len(data)} characters, too short for "
                f"{flag('seq_len', seq_len)} and {flag('batch_size', batch_size)} with the "
                f"{self.name} sampler: it needs at least "
                f"{self.min_length(seq_len, batch_size, random_offset)} (use a longer text, or "
                f"lower {flag('seq_len')} / {flag('batch_size')})"
            )
        self._window = np.arange(seq_len + 1)

    @classmethod
    def min_length(cls, seq_len: int, batch_size: int, random_offset: bool = False) -> int:
        """The shortest text that gives one batch."""
        return cls._min_usable(seq_len, batch_size) + (seq_len - 1 if random_offset else 0)

    @staticmethod
    def _min_usable(seq_len: int, batch_size: int) -> int:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def _batches_per_chunk(self) -> int:
        return max(1, CHUNK_WINDOWS // self.B)

    def _offset(self, rng: np.random.Generator) -> int:
        return int(rng.integers(0, self.T)) if self.random_offset else 0

    def starts(self, epoch: int, first: int = 0, stop: int | None = None) -> np.ndarray:
        """(stop - first, B) start positions of the windows of batches [first, stop) of the
        epoch (to its end when `stop` is None)."""
        raise NotImplementedError

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches `start`, `start`+1, ... of `epoch` as (X, Y) int64 tensors of shape (T, B)."""
        chunk = self._batches_per_chunk()
        for first in range(start, len(self), chunk):
            for row in self.starts(epoch, first, min(first + chunk, len(self)))[:, self.rows]:
                windows = np.asarray(self.data[row[:, None] + self._window], dtype=np.int64)
                windows = torch.from_numpy(windows.T.copy())  # (T+1, B)
                yield windows[:-1], windows[1:]


class RandomSampler(Sampler):
    name = "random"

    @staticmethod
    def _min_usable(seq_len: int, batch_size: int) -> int:
        return seq_len * batch_size + 1

    def _num_windows(self) -> int:
        return (self.n - 1) // self.T

    def __len__(self) -> int:
        return self._num_windows() // self.B

    def _batches_per_chunk(self) -> int:
        return len(self) if self.layout == 2 else super()._batches_per_chunk()  # one list

    def starts(self, epoch: int, first: int = 0, stop: int | None = None) -> np.ndarray:
        stop = len(self) if stop is None else stop
        rng = np.random.default_rng([self.seed, epoch])
        offset = self._offset(rng)
        positions = np.arange(first * self.B, stop * self.B)  # in the epoch's shuffled list
        if self.layout == 2:  # the list written out, as runs begun with it continue
            order = rng.permutation(self._num_windows())[positions]
        else:
            order = Permutation.drawn(self._num_windows(), rng)[positions]
        return (offset + self.T * order).reshape(stop - first, self.B)


class ConsecutiveSampler(Sampler):
    name = "consecutive"
    carries_state = True

    @staticmethod
    def _min_usable(seq_len: int, batch_size: int) -> int:
        return (seq_len + 1) * batch_size

    def _stream_len(self) -> int:
        return self.n // self.B

    def __len__(self) -> int:
        return (self._stream_len() - 1) // self.T

    def starts(self, epoch: int, first: int = 0, stop: int | None = None) -> np.ndarray:
        stop = len(self) if stop is None else stop
        offset = self._offset(np.random.default_rng([self.seed, epoch]))
        streams = offset + self._stream_len() * np.arange(self.B)  # (B,)
        return streams[None, :] + self.T * np.arange(first, stop)[:, None]


SAMPLERS = {"random": RandomSampler, "consecutive": ConsecutiveSampler}
