"""Many short greedy replies, and many scorings, evaluated together in the chat context.

/contrast's calibration answers a few questions at each of several strengths and scores every
reply twice with the unsteered model (the plain question, and the question with the positive
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
from dataclasses import dataclass, replace

import llama_cpp
import numpy as np

from engine.chat import BATCH_SEQS, ChatContext, EngineError, Reply, _log_softmax_at
from engine.llama_batch import Row, filled
from engine.prefix_tree import Node, TooDeep, prefix_tree, schedule


class BatchFull(EngineError):
    """More sequences, or more tokens, at once than the context has room for; the caller
    does the work one reply at a time instead."""


@dataclass
class _Kept:
    seq: int
    tokens: list[int]  # the prompt; its last token is evaluated with each reply
    under: tuple  # the steering it was read under (ChatContext._steering_key)


@dataclass
class _Scoring:
    """One reply being scored: its scratch sequence and how far its tokens have gone."""

    item: int
    kept: _Kept
    tokens: list[int]  # the prompt's last token, then the reply but its last
    targets: list[int]  # the reply: what each of `tokens` predicts
    done: int = 0
    seq: int = -1


class Batch:
    """Sequences 1.. of a chat context, for one job (a calibration); use it in a `with` block
    so the cache is emptied at the end whatever happens."""

    def __init__(self, ctx: ChatContext) -> None:
        self.ctx = ctx
        self._free = list(range(BATCH_SEQS - 1, 0, -1))
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
            self.ctx.shrink()

    # -- writing ------------------------------------------------------------------------------

    def write(
        self,
        prompts: list[list[int]],
        max_tokens: int,
        cancel: threading.Event | None = None,
        on_done=None,
        plains: list[int] | None = None,
    ) -> list[Reply] | None:
        """Greedy replies to `prompts` under the steering in force, written side by side;
        None if cancelled. The same prompt twice is written once (greedy: the same reply).
        `plains`: each prompt's `ChatContext.system_end`, for message-scoped steering; with
        content-scoped steering each prompt's closing tokens are read under their own."""
        if not prompts:
            return []
        ctx = self.ctx
        with ctx._lock:
            t0 = time.perf_counter()
            plain = 0
            if ctx._split:
                if plains is None or len(set(plains)) != 1:
                    raise BatchFull("message-scoped steering needs one system prompt per batch")
                plain = plains[0]
            unique = [list(p) for p in dict.fromkeys(tuple(p) for p in prompts)]
            closing = ctx.closing_tokens() if ctx._closing else 0
            seqs, rows = self._read(unique, cancel, plain, closing)
            if seqs is None:
                return None
            t_first = time.perf_counter()
            ctx._apply("write")
            out: list[list[int]] = [[] for _ in unique]
            reasons = ["length"] * len(unique)
            live = list(range(len(unique)))
            try:
                while True:
                    still = []
                    for i, logits in zip(live, rows, strict=True):
                        if self._take(i, logits, out, reasons, max_tokens):
                            still.append(i)
                        elif on_done is not None:
                            on_done()
                    live = still
                    if not live:
                        break
                    if cancel is not None and cancel.is_set():
                        return None
                    # each live sequence's newest token, at the position after its last
                    step = [
                        (out[i][-1], len(unique[i]) + len(out[i]) - 1, seqs[i], True) for i in live
                    ]
                    rows = list(self._run(step))
            finally:
                self._release(seqs)
            elapsed = time.perf_counter() - t_first
            rate = sum(len(o) for o in out) / elapsed if elapsed > 0 else 0.0
            replies = {
                tuple(prompt): Reply(
                    text=ctx.model.detokenize(out[i]),
                    tokens=len(out[i]),
                    finish_reason=reasons[i],
                    ttft_s=t_first - t0,
                    tokens_per_s=rate,
                    prompt_tokens=len(prompt),
                    prompt_tokens_evaluated=len(prompt),
                    seed=None,
                    token_ids=out[i],
                )
                for i, prompt in enumerate(unique)
            }
            return [replies[tuple(p)] for p in prompts]

    def _take(self, i, logits, out, reasons, max_tokens) -> bool:
        """Pick sequence i's next token from its logits; True if it goes on writing."""
        token = int(np.argmax(logits))  # llama.cpp's greedy sampler: the first maximum
        if self.ctx.model.is_eog(token):
            reasons[i] = "stop"
            return False
        out[i].append(token)
        return len(out[i]) < max_tokens

    def _read(
        self, prompts: list[list[int]], cancel, plain: int = 0, closing: int = 0
    ) -> tuple[list[int] | None, list]:
        """Evaluate prompts as a prefix tree under the prompt's steering (the tokens before
        `plain` under the system prompt's, with message-scoped steering, and each prompt's
        last `closing` under the closing tokens', with content-scoped steering); each keeps a
        sequence of its own. Returns the sequences and each prompt's last-token logits."""
        ctx = self.ctx
        ks = [max(1, closing)] * len(prompts)  # a leaf holds its prompt's closing tokens
        steps, planned = self._plan(prefix_tree(prompts, ks), len(prompts))
        seqs: list[int] = [0] * len(prompts)
        firsts: list[np.ndarray] = [np.zeros(0)] * len(prompts)
        ctx._apply("read")
        done = False
        try:
            for step in steps:
                if cancel is not None and cancel.is_set():
                    return None, []
                for src, dst in step.copies:
                    llama_cpp.llama_memory_seq_cp(ctx._mem, src, dst, -1, -1)
                nodes = self._read_system(step.nodes, plain) if plain else step.nodes
                if closing:
                    nodes = self._read_body(nodes, closing)
                for node, logits in self._decode_nodes(nodes) if nodes else []:
                    for p in node.prompts:
                        seqs[p], firsts[p] = node.seq, logits
                ctx._apply("read")
            done = True
        finally:  # the plan's sequences that hold no prompt go back (all, if it stopped)
            self._release([s for s in planned if not done or s not in seqs])
        return seqs, firsts

    def _plan(self, root: Node, leaves: int):
        """Schedule `root` on the free sequences (all taken, for _read to give back what it
        does not keep), with the plan's sequence numbers made real ones."""
        if leaves > len(self._free) - 1:
            raise BatchFull(f"{leaves} sequences at once; the context has {len(self._free)} free")
        try:
            steps = schedule(root, self.ctx.n_batch, len(self._free), keep_leaves=True)
        except TooDeep:
            raise BatchFull(f"{leaves} prompts nest too deeply for the free sequences") from None
        ids, self._free = self._free[::-1], []
        for step in steps:  # every node is in one step, so each is renumbered once
            step.copies = [(ids[a], ids[b]) for a, b in step.copies]
            for node in step.nodes:
                node.seq = ids[node.seq]
        return steps, ids

    def _release(self, seqs) -> None:
        """Empty these sequences and give them back."""
        for seq in seqs:
            llama_cpp.llama_memory_seq_rm(self.ctx._mem, seq, -1, -1)
        self._free.extend(seqs)

    def _read_system(self, nodes: list[Node], plain: int) -> list[Node]:
        """Decode the nodes' tokens before position `plain` under the system prompt's
        steering; the stretches left for the prompt's (each leaf keeps its last token)."""
        rows, rest = [], []
        for node in nodes:
            cut = max(0, min(len(node.tokens) - bool(node.prompts), plain - node.start))
            rows += [(t, node.start + j, node.seq, False) for j, t in enumerate(node.tokens[:cut])]
            if cut < len(node.tokens):
                rest.append(replace(node, tokens=node.tokens[cut:], start=node.start + cut))
        if rows:
            self.ctx._apply("system")
            self._run(rows)
            self.ctx._apply("read")
        return rest

    def _read_body(self, nodes: list[Node], closing: int) -> list[Node]:
        """Decode the nodes' tokens but each prompt's last `closing` under the prompt's
        steering; the leaves' closing tokens left, to be read under the closing steering."""
        body, rest = [], []
        for node in nodes:
            cut = len(node.tokens) - closing if node.prompts else len(node.tokens)
            if cut > 0:
                body.append(replace(node, tokens=node.tokens[:cut], prompts=[]))
            if cut < len(node.tokens):
                rest.append(replace(node, tokens=node.tokens[cut:], start=node.start + cut))
        if body:
            self._decode_nodes(body)
        if rest:
            self.ctx._apply("tail")
        return rest

    def _decode_nodes(self, nodes: list[Node]) -> list[tuple[Node, np.ndarray]]:
        """Decode several nodes' stretches; the logits of each prompt's (leaf's) last token.
        A stretch longer than a batch (a long conversation) goes in batch-sized pieces."""
        size = self.ctx.n_batch
        if len(nodes) == 1 and len(nodes[0].tokens) > size:
            node = nodes[0]
            for at in range(0, len(node.tokens), size):
                piece = node.tokens[at : at + size]
                last = at + size >= len(node.tokens) and bool(node.prompts)
                rows = [
                    (t, node.start + at + j, node.seq, last and j == len(piece) - 1)
                    for j, t in enumerate(piece)
                ]
                logits = self._run(rows)
            return [(node, logits[0])] if node.prompts else []
        rows = []
        leaves = []
        for node in nodes:
            for j, token in enumerate(node.tokens):
                last = bool(node.prompts) and j == len(node.tokens) - 1
                rows.append((token, node.start + j, node.seq, last))
            if node.prompts:
                leaves.append(node)
        return list(zip(leaves, self._run(rows), strict=True))

    # -- scoring ------------------------------------------------------------------------------

    def keep(self, prompts: list[list[int]]) -> list[int]:
        """Read prompts (all but their last token) under the steering in force and keep them,
        for `score` to answer many replies to them; returns a handle per prompt."""
        ctx = self.ctx
        with ctx._lock:
            heads = [tuple(p[:-1]) for p in prompts]
            if any(not h for h in heads):
                raise ValueError("a scored prompt needs at least two tokens")
            unique = list(dict.fromkeys(heads))
            seqs, _ = self._read([list(h) for h in unique], None) if unique else ([], [])
            by_head = dict(zip(unique, seqs or [], strict=True))
            under = ctx._steering_key()
            first = len(self._kept)
            self._kept += [
                _Kept(by_head[h], list(p), under) for p, h in zip(prompts, heads, strict=True)
            ]
            return list(range(first, len(self._kept)))

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
            parts: dict[int, list[np.ndarray]] = {}
            queue = []
            for k, (handle, reply) in enumerate(items):
                if reply:
                    kept = self._kept[handle]
                    queue.append(_Scoring(k, kept, [kept.tokens[-1], *reply[:-1]], list(reply)))
                    parts[k] = []
            while queue:
                chunks = self._pack(queue)
                logits = self._run(
                    [
                        (s.tokens[j], len(s.kept.tokens) - 1 + j, s.seq, True)
                        for s, n in chunks
                        for j in range(s.done, s.done + n)
                    ]
                )
                at = 0
                for s, n in chunks:
                    targets = np.asarray(s.targets[s.done : s.done + n])
                    parts[s.item].append(_log_softmax_at(logits[at : at + n], targets))
                    at += n
                    s.done += n
                    if s.done == len(s.tokens):
                        self._release([s.seq])
                queue = [s for s in queue if s.done < len(s.tokens)]
            for k, got in parts.items():
                out[k] = np.concatenate(got)
            return out

    def _pack(self, queue: list[_Scoring]) -> list[tuple[_Scoring, int]]:
        """As many scorings' next tokens as one batch holds, each in its scratch sequence (a
        copy of its kept prompt's cells, made when it first goes in)."""
        chunks, used = [], 0
        for s in queue:
            room = self.ctx.n_batch - used
            if room <= 0:
                break
            if s.seq < 0:
                if not self._free:
                    break
                s.seq = self._free.pop()
                llama_cpp.llama_memory_seq_cp(self.ctx._mem, s.kept.seq, s.seq, -1, -1)
            n = min(room, len(s.tokens) - s.done)
            chunks.append((s, n))
            used += n
        if not chunks:
            raise BatchFull("no free sequence to score a reply in")
        return chunks

    # -- llama.cpp ----------------------------------------------------------------------------

    def _run(self, rows: list[Row]) -> np.ndarray:
        """One llama_decode of these rows; the logits of the rows that asked for them, in
        order (copied)."""
        with filled(rows) as batch:
            rc = self.ctx.decode(batch)
        if rc == 1:  # no room in the KV cache for the batch, even grown to the full window
            raise BatchFull(
                f"the context window ({self.ctx.n_ctx} tokens) has no room for this batch"
            )
        if rc != 0:
            raise EngineError(f"llama_decode failed with code {rc} in a batch")
        wanted = sum(1 for *_, logits in rows if logits)
        if not wanted:
            return np.zeros((0, self.ctx.model.n_vocab), dtype=np.float32)
        out = llama_cpp.llama_get_logits(self.ctx.ptr)  # the outputs, in batch order
        return np.ctypeslib.as_array(out, (wanted, self.ctx.model.n_vocab)).copy()
