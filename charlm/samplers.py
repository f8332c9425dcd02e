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

from charlm.errors import CharLMError

# The batch layout a checkpoint was trained with. 1: charlm 0.1's own layout (a random phase
# every epoch, random windows drawn from the start of the text); 2: the textbook's.
LAYOUT = 2


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
    ) -> None:
        if batch_size % world_size:
            raise CharLMError(
                f"--batch-size {batch_size} must be divisible by the number of processes "
                f"({world_size})"
            )
        self.data, self.T, self.B, self.seed = data, seq_len, batch_size, seed
        self.random_offset = random_offset
        self.rows = slice(rank * batch_size // world_size, (rank + 1) * batch_size // world_size)
        # the usable length: with a random phase, the text after the largest phase
        self.n = len(data) - (seq_len - 1 if random_offset else 0)
        if len(self) < 1:
            raise CharLMError(
                f"the training text has {len(data)} characters, too short for --seq-len "
                f"{seq_len} and --batch-size {batch_size} with the {self.name} sampler: it needs "
                f"at least {self.min_length(seq_len, batch_size, random_offset)} (use a longer "
                f"text, or lower --seq-len / --batch-size)"
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

    def _offset(self, rng: np.random.Generator) -> int:
        return int(rng.integers(0, self.T)) if self.random_offset else 0

    def starts(self, epoch: int) -> np.ndarray:
        """(num_batches, B) start positions of every window of the epoch."""
        raise NotImplementedError

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches `start`, `start`+1, ... of `epoch` as (X, Y) int64 tensors of shape (T, B)."""
        starts = self.starts(epoch)[:, self.rows]
        for k in range(start, len(starts)):
            windows = np.asarray(self.data[starts[k][:, None] + self._window], dtype=np.int64)
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

    def starts(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        offset = self._offset(rng)
        order = rng.permutation(self._num_windows())[: len(self) * self.B]
        return (offset + self.T * order).reshape(len(self), self.B)


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

    def starts(self, epoch: int) -> np.ndarray:
        offset = self._offset(np.random.default_rng([self.seed, epoch]))
        streams = offset + self._stream_len() * np.arange(self.B)  # (B,)
        return streams[None, :] + self.T * np.arange(len(self))[:, None]


SAMPLERS = {"random": RandomSampler, "consecutive": ConsecutiveSampler}
