"""Batch samplers: which windows of the training text form each batch.

Both yield (X, Y) pairs of shape (T, B) -- time-major, like nn.LSTM -- where Y is X shifted by
one character. An epoch is one pass over the text; its order depends only on (seed, epoch), so
a run resumed at batch k of epoch e sees exactly the batches it would have seen.

random: non-overlapping windows in shuffled order; the hidden state starts fresh every batch.

    text:   |off|  w0  |  w1  |  w2  |  w3  |  w4  |  w5  | ...
    batch0: w4 w0 w5 ...   (B windows drawn from the shuffled list)

consecutive: the text is cut into B parallel streams; batch k holds positions [kT, (k+1)T) of
every stream, so row i of batch k+1 continues row i of batch k and the hidden state is carried
(truncated BPTT).

    stream 0: | batch0 | batch1 | batch2 | ...
    stream 1: | batch0 | batch1 | batch2 | ...
    ...
    stream B-1

With several processes (DDP), each rank takes its own rows of every global batch: rank r of W
gets rows [r*B/W, (r+1)*B/W), so for consecutive sampling every rank owns its own streams.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from charlm.errors import CharLMError


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
    ) -> None:
        if batch_size % world_size:
            raise CharLMError(
                f"--batch-size {batch_size} must be divisible by the number of processes "
                f"({world_size})"
            )
        self.data, self.T, self.B, self.seed = data, seq_len, batch_size, seed
        self.rows = slice(rank * batch_size // world_size, (rank + 1) * batch_size // world_size)
        need = self.min_length(seq_len, batch_size)
        if len(data) < need:
            raise CharLMError(
                f"the training text has {len(data)} characters, too short for --seq-len "
                f"{seq_len} and --batch-size {batch_size} with the {self.name} sampler: it needs "
                f"at least {need} (use a longer text, or lower --seq-len / --batch-size)"
            )
        self._window = np.arange(seq_len + 1)

    @staticmethod
    def min_length(seq_len: int, batch_size: int) -> int:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

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
    def min_length(seq_len: int, batch_size: int) -> int:
        return seq_len * batch_size + seq_len

    def __len__(self) -> int:
        return (len(self.data) - self.T) // self.T // self.B

    def starts(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        offset = int(rng.integers(0, self.T))  # a random phase, so windows differ per epoch
        starts = offset + self.T * np.arange(len(self) * self.B)
        rng.shuffle(starts)
        return starts.reshape(len(self), self.B)


class ConsecutiveSampler(Sampler):
    name = "consecutive"
    carries_state = True

    @staticmethod
    def min_length(seq_len: int, batch_size: int) -> int:
        return seq_len * batch_size + seq_len + 1

    def _stream_len(self) -> int:
        return (len(self.data) - self.T - 1) // self.B

    def __len__(self) -> int:
        return self._stream_len() // self.T

    def starts(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        offset = int(rng.integers(0, self.T + 1))
        streams = offset + self._stream_len() * np.arange(self.B)  # (B,)
        return streams[None, :] + self.T * np.arange(len(self))[:, None]


SAMPLERS = {"random": RandomSampler, "consecutive": ConsecutiveSampler}
