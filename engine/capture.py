"""Read the residual stream (every block's output, `l_out-N`) for a batch of prompts.

Capture runs on a separate probe context made from the already loaded weights, and only the
probe has an eval callback: chat decoding never pays a Python call per graph node. Several
prompts go through one `llama_decode` as separate sequences.

Prompts that begin alike (the chat template's system prompt; a pair's question, shared by its
positive and negative prompt) share the work: the prompts form a prefix tree, each shared
stretch is evaluated once, and its KV cells are copied to the branches (`llama_memory_seq_cp`)
that then evaluate only their own suffixes (engine/prefix_tree.py). Prompt evaluation is compute
bound on a CPU, so doing fewer tokens is the only way to be faster.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable

import llama_cpp
import numpy as np

from engine.llama_batch import Row, filled
from engine.model import Model
from engine.offload import ggml_library
from engine.prefix_tree import Node, Step, TooDeep, prefix_tree, schedule

_ggml = ggml_library("libggml-base")
_ggml.ggml_get_name.argtypes = [ctypes.c_void_p]
_ggml.ggml_get_name.restype = ctypes.c_char_p
_ggml.ggml_backend_tensor_get.argtypes = [
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_size_t,
]
_ggml.ggml_backend_tensor_get.restype = None
GGML_TYPE_F32 = 0


class _TensorHead(ctypes.Structure):
    """The leading fields of `struct ggml_tensor` (see STEERING_NOTES.md)."""

    _fields_ = [
        ("type", ctypes.c_int32),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4),
    ]


class CaptureCancelled(Exception):
    """Capture was cancelled between two decodes; nothing partial is returned."""


Progress = Callable[[int, int], None]


class Probe:
    """A second context on the same weights, whose eval callback copies out `l_out-N`."""

    def __init__(
        self,
        model: Model,
        *,
        n_batch: int = 256,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        max_seqs: int = 16,
    ) -> None:
        self.model = model
        self.n_layer = model.n_layer
        self.n_embd = model.n_embd
        threads = n_threads or os.cpu_count() or 1
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = max(n_ctx, n_batch)
        # one ubatch per decode, so one callback pass sees every block once. Small batches:
        # with unified KV, sequences sharing a batch attend over each other's (masked) cells.
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = max_seqs
        params.kv_unified = True
        params.n_threads = params.n_threads_batch = threads
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self._callback = llama_cpp.ggml_backend_sched_eval_callback(self._on_eval)
        params.cb_eval = self._callback
        params.cb_eval_user_data = None
        self._ptr = llama_cpp.llama_init_from_model(model.ptr, params)
        if not self._ptr:
            raise RuntimeError("llama.cpp could not create the probe context")
        self.n_batch = llama_cpp.llama_n_batch(self._ptr)
        self.max_seqs = max_seqs
        self._mem = llama_cpp.llama_get_memory(self._ptr)
        self._layers: dict[int, np.ndarray] = {}
        self._n_total = 0  # tokens in the decode under way
        self._runs: list[tuple[int, int]] = []  # its wanted rows, as [start, end) runs
        self._lock = threading.Lock()

    def _on_eval(self, tensor: int, ask: bool, _user: object) -> bool:
        name = _ggml.ggml_get_name(tensor)
        if not name or not name.startswith(b"l_out-"):
            return False
        if ask:
            return True
        # The struct is host memory; its data may not be (a GPU, or an rpc-server on another
        # machine): it is only ever read through ggml_backend_tensor_get, which copies it
        # from whichever backend buffer holds it.
        head = _TensorHead.from_address(tensor)
        if head.type != GGML_TYPE_F32 or head.ne[0] != self.n_embd:
            return True
        rows = int(head.ne[1])
        if head.nb[1] != 4 * self.n_embd:  # rows not packed: one flat copy would mix them;
            return True  # not kept, so _collect says the block was not seen (never wrong data)
        out = np.empty((rows, self.n_embd), dtype=np.float32)
        if rows == self._n_total:  # every token's row: copy only the wanted ones (the rest
            # stay unread; over RPC that is most of the bytes, see docs/scaling.md)
            row_bytes = 4 * self.n_embd
            for start, end in self._runs:
                _ggml.ggml_backend_tensor_get(
                    tensor, out[start].ctypes.data, start * row_bytes, (end - start) * row_bytes
                )
        else:  # the last block keeps only the output rows
            _ggml.ggml_backend_tensor_get(tensor, out.ctypes.data, 0, out.nbytes)
        self._layers[int(name[6:])] = out
        return True

    def _check_length(self, tokens: list[int], i: int | None = None) -> None:
        if not tokens:
            raise ValueError("an empty prompt cannot be captured")
        if len(tokens) > self.n_batch:
            which = "a prompt" if i is None else f"prompt {i}"
            raise ValueError(f"{which} is {len(tokens)} tokens; the probe takes {self.n_batch}")

    def _groups(self, prompts: list[list[int]]) -> list[list[int]]:
        """Indices of prompts that fit together in one decode."""
        groups: list[list[int]] = [[]]
        used = 0
        for i, tokens in enumerate(prompts):
            self._check_length(tokens, i)
            if groups[-1] and (
                used + len(tokens) > self.n_batch or len(groups[-1]) >= self.max_seqs
            ):
                groups.append([])
                used = 0
            groups[-1].append(i)
            used += len(tokens)
        return groups

    def capture(
        self,
        prompts: list[list[int]],
        *,
        last_k: int | list[int] = 1,
        batch: bool = True,
        share: bool = True,
        on_progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> np.ndarray:
        """Activations (n_prompts, n_layer, n_embd): each block's output, averaged over each
        prompt's last `last_k` tokens (one number for all, or one per prompt: a reply written
        after a prompt is averaged over just the reply).

        share=True evaluates common prefixes once (see the module's docstring); the averaged
        tokens are always a prompt's own. share=False with batch=False decodes each whole
        prompt alone (the reference the others are compared with in the tests).
        """
        if not prompts:
            return np.zeros((0, self.n_layer, self.n_embd), dtype=np.float32)
        ks = [last_k] * len(prompts) if isinstance(last_k, int) else list(last_k)
        if len(ks) != len(prompts):
            raise ValueError(f"{len(ks)} last_k values for {len(prompts)} prompts")
        out = np.zeros((len(prompts), self.n_layer, self.n_embd), dtype=np.float32)
        if share and batch:
            for tokens in prompts:
                self._check_length(tokens)
            fitted = [max(1, min(k, len(p))) for k, p in zip(ks, prompts, strict=True)]
            try:
                steps = schedule(prefix_tree(prompts, fitted), self.n_batch, self.max_seqs)
            except TooDeep:  # prompts nested in each other more deeply than there are seqs
                steps = None
            if steps is not None:
                with self._lock:
                    self._capture_shared(steps, len(prompts), out, on_progress, cancel)
                return out
        groups = self._groups(prompts) if batch else [[i] for i in range(len(prompts))]
        done = 0
        with self._lock:
            for group in groups:
                if cancel is not None and cancel.is_set():
                    raise CaptureCancelled("capture cancelled")
                self._decode_group([prompts[i] for i in group], [ks[i] for i in group], group, out)
                done += len(group)
                if on_progress is not None:
                    on_progress(done, len(prompts))
        return out

    def _decode_group(self, group_prompts, last_k, group, out) -> None:
        rows: list[Row] = []
        wanted: list[tuple[int, int]] = []  # (batch row, index within group)
        for seq, tokens in enumerate(group_prompts):
            k = max(1, min(last_k[seq], len(tokens)))
            for pos, token in enumerate(tokens):
                is_out = pos >= len(tokens) - k
                if is_out:
                    wanted.append((len(rows), seq))
                rows.append((token, pos, seq, is_out))
        llama_cpp.llama_memory_clear(self._mem, True)
        with filled(rows) as batch:
            self._decode(batch, len(rows), wanted)
        self._collect(wanted, len(rows), group, out)

    def _capture_shared(self, steps: list[Step], total: int, out, on_progress, cancel) -> None:
        """Walk the prompts' prefix tree in batches (engine/prefix_tree.schedule): each node's
        stretch is decoded in its own sequence, after its parent's cells were copied into it."""
        llama_cpp.llama_memory_clear(self._mem, True)
        done = 0
        try:
            for step in steps:
                if cancel is not None and cancel.is_set():
                    raise CaptureCancelled("capture cancelled")
                for src, dst in step.copies:
                    llama_cpp.llama_memory_seq_cp(self._mem, src, dst, -1, -1)
                self._decode_nodes(step.nodes, out)
                for seq in step.frees:
                    llama_cpp.llama_memory_seq_rm(self._mem, seq, -1, -1)
                finished = sum(len(n.prompts) for n in step.nodes)
                if finished and on_progress is not None:
                    done += finished
                    on_progress(done, total)
        finally:
            llama_cpp.llama_memory_clear(self._mem, True)

    def _decode_nodes(self, nodes: list[Node], out: np.ndarray) -> None:
        """One llama_decode of several nodes' stretches; a leaf's last tokens are read out."""
        rows: list[Row] = []
        wanted: list[tuple[int, int]] = []  # (batch row, index within `leaves`)
        leaves: list[int] = []  # the prompt index each leaf of this batch stands for
        for node in nodes:
            first_out = len(node.tokens) - node.k if node.prompts else len(node.tokens)
            if node.prompts:
                leaves.append(node.prompts[0])
            for j, token in enumerate(node.tokens):
                if j >= first_out:
                    wanted.append((len(rows), len(leaves) - 1))
                rows.append((token, node.start + j, node.seq, j >= first_out))
        n_total = len(rows)
        with filled(rows) as batch:
            self._decode(batch, n_total, wanted)
        if not wanted:
            return
        part = np.zeros((len(leaves), self.n_layer, self.n_embd), dtype=np.float32)
        self._collect(wanted, n_total, list(range(len(leaves))), part)
        for node in nodes:
            if node.prompts:
                # identical prompts share a leaf; each gets its activations
                out[node.prompts] = part[leaves.index(node.prompts[0])]

    def _decode(self, batch, n_total: int, wanted: list[tuple[int, int]]) -> None:
        """Decode a filled batch of n_total tokens; the eval callback keeps the wanted rows."""
        self._layers = {}
        self._n_total = n_total
        self._runs = _runs([r for r, _ in wanted])
        rc = llama_cpp.llama_decode(self._ptr, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with code {rc} during capture")

    def capture_tokens(
        self,
        prompts: list[list[int]],
        *,
        last_k: int | list[int] = 1,
        on_progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> list[np.ndarray]:
        """Each prompt's last `last_k` tokens' block outputs, one row per token:
        (k, n_layer, n_embd) per prompt, not averaged.

        For vectors that weigh *which* written tokens carry a concept (`/contrast --method
        focus`, vectors/focus.py). Each prompt is decoded alone, as the reference
        `capture(batch=False, share=False)` is: the mean of a prompt's rows is that call's
        row, up to float32 summation order.
        """
        ks = [last_k] * len(prompts) if isinstance(last_k, int) else list(last_k)
        if len(ks) != len(prompts):
            raise ValueError(f"{len(ks)} last_k values for {len(prompts)} prompts")
        out = []
        with self._lock:
            for tokens, k in zip(prompts, ks, strict=True):
                if cancel is not None and cancel.is_set():
                    raise CaptureCancelled("capture cancelled")
                self._check_length(tokens)
                first = len(tokens) - max(1, min(k, len(tokens)))
                rows = [(t, pos, 0, pos >= first) for pos, t in enumerate(tokens)]
                wanted = [(r, 0) for r in range(first, len(tokens))]
                llama_cpp.llama_memory_clear(self._mem, True)
                with filled(rows) as batch:
                    self._decode(batch, len(rows), wanted)
                index = np.arange(first, len(tokens))
                per_block = [self._picked(il, index, len(rows)) for il in range(self.n_layer)]
                out.append(np.stack(per_block, axis=1))
                if on_progress is not None:
                    on_progress(len(out), len(prompts))
        return out

    def _picked(self, il: int, rows: np.ndarray, n_total: int) -> np.ndarray:
        """Block il's output at the batch rows `rows` (ascending, as the batch is built)."""
        acts = self._layers.get(il)
        if acts is None:
            raise RuntimeError(f"block {il} output (l_out-{il}) was not seen during capture")
        if acts.shape[0] != n_total:  # the last block is computed only for output rows
            return acts[: len(rows)]
        return acts[rows]

    def _collect(self, wanted, n_total, group, out) -> None:
        rows = np.array([r for r, _ in wanted])
        seqs = np.array([s for _, s in wanted])
        counts = np.bincount(seqs, minlength=len(group)).astype(np.float32)
        for il in range(self.n_layer):
            picked = self._picked(il, rows, n_total)
            sums = np.zeros((len(group), self.n_embd), dtype=np.float32)
            np.add.at(sums, seqs, picked)
            out[group, il] = sums / counts[:, None]

    def close(self) -> None:
        if self._ptr:
            llama_cpp.llama_free(self._ptr)
            self._ptr = None


def _runs(rows: list[int]) -> list[tuple[int, int]]:
    """Sorted row numbers as [start, end) runs of consecutive rows: one copy per run."""
    runs: list[tuple[int, int]] = []
    for row in sorted(rows):
        if runs and runs[-1][1] == row:
            runs[-1] = (runs[-1][0], row + 1)
        else:
            runs.append((row, row + 1))
    return runs
