"""Many short greedy replies, and many scorings, evaluated together in the chat context.

/contrast's calibration answers a few questions at each of several strengths and scores every
reply three times with the unsteered model (the plain question, and the question with each
instruction). One reply at a time, a decode step writes one token in ~13 ms; three sequences
in one step write three in ~24 ms, so the calibration's questions are answered side by side.
Prompts share their beginnings (the template's system prompt; a question with and without an
instruction), so a prompt set is evaluated as a prefix tree (engine/prefix_tree.py), each
shared stretch once. The scorings' prompts never change during a calibration and are read with
no steering, so `Batch.keep` evaluates them once and every later scoring copies their KV cells
(`llama_memory_seq_cp`) and evaluates only the reply.

Sequence 0 is the chat's own; a Batch uses the others. While one is open a change of steering
empties only sequence 0 (the kept prompts were read unsteered and are only ever used so), and
closing it empties the whole cache, so the chat starts again from the same cells as after any
other change of steering. Batched numbers differ from one-at-a-time ones by float rounding
(the batch split changes the order of sums), so everything one measurement compares is made
the same way.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import llama_cpp
import numpy as np

from engine.chat import BATCH_SEQS, ChatContext, EngineError, Reply, _log_softmax_at
from engine.prefix_tree import Node, TooDeep, prefix_tree, schedule

SEQS = BATCH_SEQS  # sequences the chat context is made with


class BatchFull(EngineError):
    """More sequences, or more tokens, at once than the context has room for; the caller
    does the work one reply at a time instead."""


@dataclass
class _Kept:
    seq: int
    tokens: list[int]  # the prompt; its last token is evaluated with each reply
    under: tuple  # the steering it was read under (ChatContext._steering_key)


class Batch:
    """Sequences 1.. of a chat context, for one job (a calibration); use it in a
    `with` block so the cache is emptied at the end whatever happens."""

    def __init__(self, ctx: ChatContext) -> None:
        self.ctx = ctx
        self._free = list(range(SEQS - 1, 0, -1))
        self._kept: list[_Kept] = []

    def __enter__(self) -> Batch:
        with self.ctx._lock:
            self.ctx.reset()
            self.ctx._batch_open = True
        return self

    def __exit__(self, *exc: object) -> None:
        with self.ctx._lock:
            self.ctx._batch_open = False
            self.ctx.reset()

    # -- writing ------------------------------------------------------------------------------

    def write(
        self,
        prompts: list[list[int]],
        max_tokens: int,
        cancel: threading.Event | None = None,
        on_done=None,
    ) -> list[Reply] | None:
        """Greedy replies to `prompts` under the steering in force, written side by side;
        None if cancelled. The same prompt twice is written once (greedy: the same reply)."""
        if not prompts:
            return []
        ctx = self.ctx
        with ctx._lock:
            t0 = time.perf_counter()
            unique = list(dict.fromkeys(tuple(p) for p in prompts))
            seqs, firsts = self._read([list(p) for p in unique], cancel)
            if seqs is None:
                return None
            ctx._apply("write")
            out: list[list[int]] = [[] for _ in unique]
            reasons = ["length"] * len(unique)
            pos = [len(p) for p in unique]
            live = []
            for i, logits in enumerate(firsts):
                if self._take(i, logits, out, reasons, max_tokens):
                    live.append(i)
                elif on_done is not None:
                    on_done()
            t_first = time.perf_counter()
            steps = 0
            try:
                while live:
                    if cancel is not None and cancel.is_set():
                        return None
                    rows = self._step([(seqs[i], out[i][-1], pos[i]) for i in live])
                    steps += 1
                    still = []
                    for i, logits in zip(live, rows, strict=True):
                        pos[i] += 1
                        if self._take(i, logits, out, reasons, max_tokens):
                            still.append(i)
                        elif on_done is not None:
                            on_done()
                    live = still
            finally:
                for seq in seqs:
                    llama_cpp.llama_memory_seq_rm(ctx._mem, seq, -1, -1)
                self._free.extend(seqs)
            elapsed = time.perf_counter() - t_first
            written = sum(len(o) for o in out)
            replies = {}
            for i, key in enumerate(unique):
                replies[key] = Reply(
                    text=ctx.model.detokenize(out[i]),
                    tokens=len(out[i]),
                    finish_reason=reasons[i],
                    ttft_s=t_first - t0,
                    tokens_per_s=written / elapsed if elapsed > 0 and steps else 0.0,
                    prompt_tokens=len(key),
                    prompt_tokens_evaluated=len(key),
                    seed=None,
                    token_ids=out[i],
                )
            return [replies[tuple(p)] for p in prompts]

    def _take(self, i, logits, out, reasons, max_tokens) -> bool:
        """Pick sequence i's next token from its logits; True if it goes on writing."""
        token = int(np.argmax(logits))  # llama.cpp's greedy sampler: the first maximum
        if self.ctx.model.is_eog(token):
            reasons[i] = "stop"
            return False
        out[i].append(token)
        return len(out[i]) < max_tokens

    def _read(self, prompts: list[list[int]], cancel) -> tuple[list[int] | None, list]:
        """Evaluate prompts as a prefix tree under the prompt's steering; each keeps a
        sequence of its own. Returns the sequences and each prompt's last-token logits."""
        ctx = self.ctx
        root = prefix_tree(prompts, [1] * len(prompts))
        local = self._plan(root, len(prompts))
        seqs: list[int] = [0] * len(prompts)
        firsts: list[np.ndarray | None] = [None] * len(prompts)
        ctx._apply("read")
        taken: list[int] = []
        try:
            for step in local:
                if cancel is not None and cancel.is_set():
                    return None, []
                for src, dst in step.copies:
                    llama_cpp.llama_memory_seq_cp(ctx._mem, src, dst, -1, -1)
                rows = self._decode_nodes(step.nodes, lambda node: bool(node.prompts))
                for node, logits in rows:
                    for p in node.prompts:
                        seqs[p] = node.seq
                        firsts[p] = logits
            taken = sorted(set(seqs))
        finally:
            if not taken:  # cancelled or failed: give every sequence of the plan back
                for seq in self._planned:
                    llama_cpp.llama_memory_seq_rm(ctx._mem, seq, -1, -1)
                self._free.extend(self._planned)
            else:
                self._free.extend(s for s in self._planned if s not in taken)
        return seqs, firsts

    def _plan(self, root: Node, leaves: int):
        """Schedule `root` on free sequences, renumbering the plan's ids to real ones; the
        leaves keep theirs. Takes every free sequence (`_planned`) until _read returns them."""
        if leaves > len(self._free) - 1:
            raise BatchFull(f"{leaves} sequences at once; the context has {len(self._free)} free")
        try:
            steps = schedule(root, self.ctx.n_batch, len(self._free), keep_leaves=True)
        except TooDeep:
            raise BatchFull(f"{leaves} prompts nest too deeply for the free sequences") from None
        self._planned = [self._free.pop() for _ in range(len(self._free))]
        ids = self._planned
        for step in steps:  # every node is in one step, so each is renumbered once
            step.copies = [(ids[a], ids[b]) for a, b in step.copies]
            for node in step.nodes:
                node.seq = ids[node.seq]
        return steps

    def _decode_nodes(self, nodes: list[Node], wants) -> list[tuple[Node, np.ndarray]]:
        """One llama_decode of several nodes' stretches; logits of the last token of each node
        `wants` selects."""
        if len(nodes) == 1 and len(nodes[0].tokens) > self.ctx.n_batch:
            return self._decode_long(nodes[0], wants)
        n_total = sum(len(n.tokens) for n in nodes)
        batch = llama_cpp.llama_batch_init(n_total, 0, 1)
        picked: list[tuple[Node, int]] = []
        try:
            row = 0
            for node in nodes:
                for j, token in enumerate(node.tokens):
                    last = j == len(node.tokens) - 1 and wants(node)
                    _put(batch, row, token, node.start + j, node.seq, last)
                    if last:
                        picked.append((node, row))
                    row += 1
            batch.n_tokens = n_total
            self._decode(batch)
        finally:
            llama_cpp.llama_batch_free(batch)
        rows = self._all_logits(len(picked))
        return [(node, rows[k]) for k, (node, _) in enumerate(picked)]

    def _decode_long(self, node: Node, wants) -> list[tuple[Node, np.ndarray]]:
        """A stretch longer than a batch (a long conversation), in batch-sized pieces."""
        size = self.ctx.n_batch
        out: list[tuple[Node, np.ndarray]] = []
        for at in range(0, len(node.tokens), size):
            piece = Node(tokens=node.tokens[at : at + size], start=node.start + at, seq=node.seq)
            wanted = at + size >= len(node.tokens) and wants(node)
            out = self._decode_nodes([piece], lambda _, w=wanted: w)
        return [(node, logits) for _, logits in out]

    def _step(self, live: list[tuple[int, int, int]]) -> list[np.ndarray]:
        """One token for each (sequence, token, position): the next logits of each."""
        batch = llama_cpp.llama_batch_init(len(live), 0, 1)
        try:
            for row, (seq, token, pos) in enumerate(live):
                _put(batch, row, token, pos, seq, True)
            batch.n_tokens = len(live)
            self._decode(batch)
        finally:
            llama_cpp.llama_batch_free(batch)
        return list(self._all_logits(len(live)))

    # -- scoring ------------------------------------------------------------------------------

    def keep(self, prompts: list[list[int]]) -> list[int]:
        """Read prompts (all but their last token) under the steering in force and keep them,
        for `score` to answer many replies to them; returns a handle per prompt."""
        ctx = self.ctx
        with ctx._lock:
            heads = [list(p[:-1]) for p in prompts]
            if any(not h for h in heads):
                raise ValueError("a scored prompt needs at least two tokens")
            unique = list(dict.fromkeys(tuple(h) for h in heads))
            if unique:
                seqs, _ = self._read([list(h) for h in unique], None)
                assert seqs is not None
                by_head = dict(zip(unique, seqs, strict=True))
            under = ctx._steering_key()
            handles = []
            for p, h in zip(prompts, heads, strict=True):
                handles.append(len(self._kept))
                self._kept.append(_Kept(by_head[tuple(h)], list(p), under))
            return handles

    def score(self, items: list[tuple[int, list[int]]]) -> list[np.ndarray]:
        """Log-probability of each token of each reply after its kept prompt, under the
        steering the prompts were kept under (it must be in force again)."""
        ctx = self.ctx
        with ctx._lock:
            now = ctx._steering_key()
            if any(self._kept[handle].under != now for handle, _ in items):
                raise EngineError("scoring needs the steering its prompts were read under")
            ctx._apply("write")
            out = [np.zeros(0) for _ in items]
            # each item: its scratch sequence, the tokens to evaluate (the prompt's last, then
            # the reply but its last) at positions from len(prompt)-1, all with logits
            queue = []
            for k, (handle, reply) in enumerate(items):
                if reply:
                    kept = self._kept[handle]
                    queue.append([k, kept, [kept.tokens[-1], *reply[:-1]], 0, -1])
            scores: dict[int, list[np.ndarray]] = {k: [] for k, *_ in queue}
            while queue:
                chunks, used = [], 0
                for entry in queue:
                    k, kept, tokens, done, seq = entry
                    room = ctx.n_batch - used
                    if room <= 0:
                        break
                    if seq < 0:
                        if not self._free:
                            break
                        seq = entry[4] = self._free.pop()
                        llama_cpp.llama_memory_seq_cp(ctx._mem, kept.seq, seq, -1, -1)
                    n = min(room, len(tokens) - done)
                    chunks.append((entry, n))
                    used += n
                if not chunks:
                    raise BatchFull("no free sequence to score a reply in")
                rows = self._decode_chunks(chunks, used)
                at = 0
                for entry, n in chunks:
                    k, kept, tokens, done, seq = entry
                    reply = items[k][1]
                    targets = np.asarray(reply[done : done + n])
                    scores[k].append(_log_softmax_at(rows[at : at + n], targets))
                    at += n
                    entry[3] = done + n
                    if entry[3] == len(tokens):
                        llama_cpp.llama_memory_seq_rm(ctx._mem, seq, -1, -1)
                        self._free.append(seq)
                queue = [e for e in queue if e[3] < len(e[2])]
            for k, parts in scores.items():
                out[k] = np.concatenate(parts)
            return out

    def _decode_chunks(self, chunks, used: int) -> np.ndarray:
        batch = llama_cpp.llama_batch_init(used, 0, 1)
        try:
            row = 0
            for (_, kept, tokens, done, seq), n in chunks:
                base = len(kept.tokens) - 1
                for j in range(done, done + n):
                    _put(batch, row, tokens[j], base + j, seq, True)
                    row += 1
            batch.n_tokens = used
            self._decode(batch)
        finally:
            llama_cpp.llama_batch_free(batch)
        return self._all_logits(used)

    # -- llama.cpp ----------------------------------------------------------------------------

    def _decode(self, batch) -> None:
        rc = llama_cpp.llama_decode(self.ctx.ptr, batch)
        if rc == 1:  # llama.cpp found no room in the KV cache for the batch
            raise BatchFull(
                f"the context window ({self.ctx.n_ctx} tokens) has no room for this batch"
            )
        if rc != 0:
            raise EngineError(f"llama_decode failed with code {rc} in a batch")

    def _all_logits(self, n: int) -> np.ndarray:
        """The logits of the last decode's n outputs, in batch order (copied)."""
        rows = llama_cpp.llama_get_logits(self.ctx.ptr)
        return np.ctypeslib.as_array(rows, (n, self.ctx.model.n_vocab)).copy()


def _put(batch, row: int, token: int, pos: int, seq: int, logits: bool) -> None:
    batch.token[row] = token
    batch.pos[row] = pos
    batch.n_seq_id[row] = 1
    batch.seq_id[row][0] = seq
    batch.logits[row] = logits
