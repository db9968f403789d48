"""One llama_batch filled from rows, for every decode that places tokens itself (chat scoring,
capture, engine/batch.py): the same loop was written in each of them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import llama_cpp

Row = tuple[int, int, int, bool]  # token, position, sequence, logits wanted


@contextlib.contextmanager
def filled(rows: Sequence[Row]) -> Iterator[llama_cpp.llama_batch]:
    """A llama_batch holding `rows` (one sequence per token), freed when the block ends."""
    batch = llama_cpp.llama_batch_init(len(rows), 0, 1)
    try:
        for i, (token, pos, seq, logits) in enumerate(rows):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits
        batch.n_tokens = len(rows)
        yield batch
    finally:
        llama_cpp.llama_batch_free(batch)
