"""The chat context: one llama.cpp context that turns a message list into a streamed reply.

The context keeps the tokens its KV cache holds, so a new turn only evaluates what the
conversation added since the last one. Everything here runs on the caller's thread; the
front ends decide which thread that is.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import llama_cpp
import numpy as np

from engine.hugepages import huge_pages
from engine.llama_batch import filled
from engine.lora import LoraAdapter
from engine.model import Model, TemplateError

BATCH_SEQS = 32  # sequences a context holds: the chat's (0) and engine/batch.py's
FIRST_CELLS = 512  # KV cells a context starts with; it doubles when full, up to n_ctx


class EngineError(Exception):
    """llama.cpp failed while evaluating; the context has been reset and stays usable."""


class ContextFullError(Exception):
    """The prompt alone does not fit in the context window."""


# llama.cpp's DRY defaults (common/common.h): a repeat is penalised once it is longer than
# the allowed length (DRY_ALLOWED unless Sampling.dry_allowed says otherwise), by
# dry x DRY_BASE^(length - allowed); these break a repeat's chain.
DRY_BASE = 1.75
DRY_ALLOWED = 2
DRY_BREAKERS = (b"\n", b":", b'"', b"*")


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen. temperature 0 means greedy (exact, reproducible)."""

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    max_tokens: int = 512
    seed: int | None = None
    dry: float = 0.0  # DRY repetition penalty's multiplier; 0 = off
    dry_allowed: int = DRY_ALLOWED  # tokens a repeat may run before DRY penalises it


@dataclass
class Reply:
    """A finished (or stopped) reply and the numbers the user sees for it.

    finish_reason is one of: "stop" (the model ended its turn), "length" (max_tokens),
    "interrupted" (cancelled), "context_full" (the context window ran out mid-reply).
    """

    text: str
    tokens: int
    finish_reason: str
    ttft_s: float
    tokens_per_s: float
    prompt_tokens: int
    prompt_tokens_evaluated: int
    seed: int | None
    token_ids: list[int] = field(default_factory=list, repr=False)

    @property
    def interrupted(self) -> bool:
        return self.finish_reason == "interrupted"


TokenCallback = Callable[[str], None]


def _sampler(
    sampling: Sampling, seed: int | None, vocab: llama_cpp.llama_vocab_p, window: int
) -> llama_cpp.llama_sampler_p:
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    if sampling.dry > 0:
        # first, as in llama.cpp's own chain; it sees the tokens of the reply being written
        # (llama_sampler_sample accepts each), over the whole context window
        breakers = (ctypes.c_char_p * len(DRY_BREAKERS))(*DRY_BREAKERS)
        dry = llama_cpp.llama_sampler_init_dry(
            vocab, sampling.dry, DRY_BASE, sampling.dry_allowed, window, breakers, len(DRY_BREAKERS)
        )
        llama_cpp.llama_sampler_chain_add(chain, dry)
    if sampling.temperature <= 0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    if sampling.top_k > 0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(sampling.top_k))
    if sampling.top_p < 1.0:
        llama_cpp.llama_sampler_chain_add(
            chain, llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1)
        )
    llama_cpp.llama_sampler_chain_add(
        chain, llama_cpp.llama_sampler_init_temp(sampling.temperature)
    )
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed or 0))
    return chain


class ChatContext:
    """A llama.cpp context bound to one conversation's KV cache."""

    def __init__(
        self,
        model: Model,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        first_cells: int = FIRST_CELLS,
    ) -> None:
        self.model = model
        threads = n_threads or os.cpu_count() or 1
        params = llama_cpp.llama_context_default_params()
        window = min(n_ctx, model.n_ctx_train) if model.n_ctx_train > 0 else n_ctx
        self.n_ctx = window + -window % 256  # llama.cpp rounds a context up to 256 cells
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        # The chat is sequence 0; engine/batch.py writes and scores many short sequences in
        # the others, in the same cells (unified), so it costs no memory of its own.
        params.n_seq_max = BATCH_SEQS
        params.kv_unified = True
        params.n_threads = threads
        params.n_threads_batch = threads
        # llama.cpp's CPU flash-attention path made a 20-token turn at 1,100 tokens of context
        # ~2x slower than at 60 here; the classic path ~1.35x (bench/engine_bench.py).
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self._params = params
        self._ptr = None
        # never under a batch: llama.cpp lowers n_batch to the cells, and a smaller batch
        # split would change the numbers against a context made at full size
        self._first_cells = min(max(first_cells, n_batch), self.n_ctx)
        self._make(self._first_cells)
        self.n_batch = llama_cpp.llama_n_batch(self._ptr)  # llama.cpp may lower it
        self.n_threads = threads
        self._cached: list[int] = []  # tokens whose K/V sit in the cache, in order
        self._starts: list[int] = []  # where each llama_decode batch of them began, ascending
        self._lock = threading.Lock()
        self._one = (llama_cpp.llama_token * 1)()
        self._control: bytes | None = None  # the control-vector buffer in force
        # Prompt-scoped steering: a buffer added on top of `_control` only while the context
        # reads prompt tokens (`_reading`), never while it writes a reply (see set_control).
        self._reading: np.ndarray | None = None
        self._writing: np.ndarray | None = None
        # Message-scoped steering (`_split`): the tokens before the first message's text are
        # read under `_system` (None: no control vector) instead of `_reading` (set_control).
        self._system: np.ndarray | None = None
        self._split = False
        self._system_ends: dict[tuple, int] = {}
        # Content-scoped steering (`_closing`): the prompt's closing tokens (the end of the
        # last message and the assistant's header, `closing_tokens`) are read under `_tail`.
        self._tail: np.ndarray | None = None
        self._closing = False
        self._closing_n: int | None = None
        self._phase = "write"
        self._loras: tuple[tuple[object, float], ...] = ()  # (adapter handle, scale) in force
        self._batch_open = False  # an engine.batch.Batch holds sequences 1..

    def _make(self, cells: int) -> None:
        """Create the llama.cpp context with `cells` KV cells (the context window stays n_ctx).

        Why not n_ctx cells at once: with flash attention off llama.cpp stores V transposed,
        its rows `cells` apart, and every token writes one value into each of them; at 4,096
        cells the chat decoded ~5% slower than at 512, for the same logits to the bit."""
        self._params.n_ctx = cells
        with huge_pages() as collapsed:
            ptr = llama_cpp.llama_init_from_model(self.model.ptr, self._params)
        if not ptr:
            raise EngineError("llama.cpp could not create a context (out of memory?)")
        self._ptr = ptr
        self.huge_page_bytes = collapsed.bytes  # its KV cache on 2 MB pages (engine/hugepages.py)
        self.n_cells = llama_cpp.llama_n_ctx(ptr)
        self.n_ctx = max(self.n_ctx, self.n_cells)
        self._mem = llama_cpp.llama_get_memory(ptr)

    def _grow(self) -> bool:
        """Move every sequence's cells into a context twice the size (at most n_ctx); False if
        it is that size already, or no larger one could be made.

        The cells are copied to the bit and keep their order (llama.cpp packs out any empty
        cells between them), so a reply goes on as it would have in the larger context."""
        if self.n_cells >= self.n_ctx:
            return False
        old = self.n_cells
        size = llama_cpp.llama_state_seq_get_size(self._ptr, -1)
        saved = (ctypes.c_uint8 * size)()
        if llama_cpp.llama_state_seq_get_data(self._ptr, saved, size, -1) != size:
            raise EngineError("llama.cpp could not copy the KV cache to grow the context")
        self._remake(min(old * 2, self.n_ctx))
        if llama_cpp.llama_state_seq_set_data(self._ptr, saved, size, -1) != size:
            llama_cpp.llama_memory_clear(self._mem, True)
            self._cached, self._starts = [], []
            raise EngineError("llama.cpp could not restore the KV cache after growing the context")
        return self.n_cells > old

    def shrink(self) -> None:
        """Go back to the first size once the cache is empty (a batch grew it for sequences
        that are gone), so the chat's replies decode in the small cache again."""
        if self.n_cells > self._first_cells and not self._cached and not self._batch_open:
            self._remake(self._first_cells)

    def _remake(self, cells: int) -> None:
        """Replace the llama.cpp context with an empty one of `cells` cells, the same steering
        in force; if that size cannot be made, with one of the size it had. The old context is
        freed first, so memory never holds both."""
        old = self.n_cells
        llama_cpp.llama_free(self._ptr)
        self._ptr = None
        try:
            self._make(cells)
        except EngineError:
            self._make(old)
        self._restore_steering()

    def _restore_steering(self) -> None:
        """Put the control vector and LoRA adapters in force again in a new llama.cpp context."""
        phase, self._phase = self._phase, ""
        self._apply(phase or "write")
        if self._loras:
            self._set_loras(self._loras)

    def decode(self, batch: llama_cpp.llama_batch) -> int:
        """llama_decode, growing the cache while llama.cpp finds no room for the batch (1).

        llama.cpp looks for room before it changes anything, so a batch refused for room
        leaves the cache as it was and can be decoded again after the copy."""
        rc = llama_cpp.llama_decode(self._ptr, batch)
        while rc == 1 and self._grow():
            rc = llama_cpp.llama_decode(self._ptr, batch)
        return rc

    @property
    def steered(self) -> bool:
        return self._control is not None or bool(self._loras)

    def set_adapters(self, adapters: list[tuple[LoraAdapter, float]]) -> bool:
        """Apply LoRA adapters (projection steering) with their scales, replacing any in force;
        [] removes them. True if that changed anything.

        Like a control vector, a change empties the KV cache: a prefix evaluated under other
        adapters would make the next reply a mix. Scales of 0 are left out (llama.cpp skips
        them too), so an adapter at 0 is the same as none.
        """
        wanted = tuple((a.ptr, float(np.float32(s))) for a, s in adapters if s != 0.0)
        if wanted == self._loras:
            return False
        with self._lock:
            self._set_loras(wanted)
            self._loras = wanted
            self.reset()
        return True

    def _set_loras(self, wanted: tuple[tuple[object, float], ...]) -> None:
        n = len(wanted)
        handles = (llama_cpp.llama_adapter_lora_p_ctypes * n)(*(p for p, _ in wanted))
        scales = (ctypes.c_float * n)(*(s for _, s in wanted))
        rc = llama_cpp.llama_set_adapters_lora(
            self._ptr, handles if n else None, n, scales if n else None
        )
        if rc != 0:
            raise EngineError(f"llama.cpp refused the LoRA adapters (code {rc})")

    def set_control(
        self,
        buffer: np.ndarray | None,
        prompt: np.ndarray | None = None,
        messages: np.ndarray | None = None,
        content: np.ndarray | None = None,
    ) -> bool:
        """Apply a full control-vector buffer, or None for no steering; True if it changed.

        `buffer` holds n_embd floats per block from block 1 to the last ((n_layer-1)*n_embd in
        all, zeros where a block is not steered): llama.cpp keeps the old values of any layer
        a shorter buffer leaves out. A change empties the KV cache, because a prefix
        evaluated under other steering would make the next reply a mix of old and new.

        `prompt` (same shape) is added only while the conversation is read, not while a reply
        is written (ActAdd's injection into the prompt): a reply's tokens are evaluated
        without it, and are dropped from the cache afterwards, so that the next turn reads
        them back under it like every other token of the conversation. Every cached token has
        then been read the same way, whatever the history of resets.

        `messages` (same shape) is added like `prompt`, but not while the system prompt is
        read: the tokens before the first message's text (`system_end`) are read under
        `buffer` and `prompt` only. A topic vector added to the system prompt as well turned
        the assistant itself towards the topic and broke the text one step past where it did
        nothing (docs/efficacy.md, "Messages mode").

        `content` (same shape) is added like `messages`, but not while the prompt's closing
        tokens are read either (`closing_tokens`: the end of the last message and the
        assistant's header). Those tokens steered were what made a topic vector break off one
        step past its pick (docs/efficacy.md, "The assistant's header read plain"). A reply
        is then forgotten back to before them, so that the next turn reads them inside the
        conversation, under `content`, as a fresh read of it would.
        """
        write = self._flat(buffer)
        extra = self._flat(prompt)
        more = self._flat(messages)
        body = self._flat(content)
        system = _plus(write, extra)
        tail = _plus(system, more)
        read = None if extra is None and more is None and body is None else _plus(tail, body)
        split = more is not None or body is not None
        closing = body is not None
        key = None
        if write is not None or read is not None:
            key = (
                _key(write),
                _key(read),
                split,
                _key(system) if split else None,
                closing,
                _key(tail) if closing else None,
            )
        if key == self._control:
            return False
        with self._lock:
            self._writing, self._reading = write, read
            self._system, self._split = system, split
            self._tail, self._closing = tail, closing
            self._phase = ""
            self._apply("write")
            self._control = key
            self.reset()
        return True

    def _flat(self, buffer: np.ndarray | None) -> np.ndarray | None:
        if buffer is None:
            return None
        n_embd, n_layer = self.model.n_embd, self.model.n_layer
        data = np.ascontiguousarray(buffer, dtype=np.float32).ravel()
        if data.size != (n_layer - 1) * n_embd:
            raise ValueError(
                f"control buffer has {data.size} floats; this model needs "
                f"{(n_layer - 1) * n_embd} ({n_layer - 1} blocks x {n_embd})"
            )
        return data

    def _apply(self, phase: str) -> None:
        """Put the control vector of `phase` ("read", "system", "tail" or "write") in force
        in llama.cpp."""
        if phase == self._phase:
            return
        n_embd, n_layer = self.model.n_embd, self.model.n_layer
        data = self._writing
        if phase == "read" and self._reading is not None:
            data = self._reading
        elif phase == "system" and self._split:
            data = self._system
        elif phase == "tail" and self._closing:
            data = self._tail
        if data is None:
            rc = llama_cpp.llama_set_adapter_cvec(self._ptr, None, 0, n_embd, -1, -1)
        else:
            ptr = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            rc = llama_cpp.llama_set_adapter_cvec(self._ptr, ptr, data.size, n_embd, 1, n_layer - 1)
        if rc != 0:
            raise EngineError(f"llama.cpp refused the control vector (code {rc})")
        self._phase = phase

    @property
    def ptr(self) -> llama_cpp.llama_context_p:
        return self._ptr

    @property
    def n_cached(self) -> int:
        """Tokens in the KV cache: how much of the context window the conversation uses."""
        return len(self._cached)

    def reset(self) -> None:
        """Forget the KV cache; the next reply evaluates its whole prompt. While a Batch is
        open only the chat's own sequence goes: the batch's kept prompts stay valid."""
        if self._batch_open:
            llama_cpp.llama_memory_seq_rm(self._mem, 0, -1, -1)
        else:
            llama_cpp.llama_memory_clear(self._mem, True)
        self._cached = []
        self._starts = []

    def _steering_key(self) -> tuple:
        """What is in force, in a form that compares equal when nothing changed."""
        return (self._control, self._loras)

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        return len(self.model.chat_tokens(messages))

    # -- evaluation ---------------------------------------------------------------------------

    def _decode(self, chunk: list[int], phase: str = "read") -> None:
        """Evaluate at most n_batch tokens of the prompt after the cached ones."""
        self._apply(phase)
        arr = (llama_cpp.llama_token * len(chunk))(*chunk)
        rc = self.decode(llama_cpp.llama_batch_get_one(arr, len(chunk)))
        if rc != 0:
            self.reset()
            raise EngineError(f"llama_decode failed with code {rc}")
        self._starts.append(len(self._cached))
        self._cached.extend(chunk)

    def system_end(self, messages: list[dict[str, str]]) -> int:
        """How many tokens of the prompt come before the text of its first non-system
        message: the template's system prompt and the first message's header, which
        message-scoped steering leaves unsteered. Found as the tokens two stand-in first
        messages have in common (any template), once per system prompt."""
        head = []
        for message in messages:
            if message["role"] != "system":
                break
            head.append(message)
        key = tuple((m["role"], m["content"]) for m in head)
        if key not in self._system_ends:
            a, b = (self.prompt_tokens([*head, {"role": "user", "content": c}]) for c in "ab")
            same = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), 0)
            self._system_ends[key] = same
        return self._system_ends[key]

    def closing_tokens(self) -> int:
        """How many tokens end every prompt after the text of its last message: the end of
        that message and the assistant's header, which content-scoped steering leaves
        unsteered. Found as the tokens two stand-in messages have in common at the end."""
        if self._closing_n is None:
            a, b = (self.prompt_tokens([{"role": "user", "content": c}]) for c in "ab")
            same = 0
            while same < min(len(a), len(b)) - 1 and a[-1 - same] == b[-1 - same]:
                same += 1
            self._closing_n = same
        return self._closing_n

    def _plain(self, messages: list[dict[str, str]]) -> int:
        """Where message-scoped steering starts in this conversation's prompt (0: none)."""
        return self.system_end(messages) if self._split else 0

    def _closed(self, prompt: list[int]) -> int:
        """Where content-scoped steering stops in `prompt` (its length: it does not)."""
        return len(prompt) - self.closing_tokens() if self._closing else len(prompt)

    def _read(self, tokens: list[int], plain: int, closed: int, cancelled=None) -> bool:
        """Evaluate `tokens`, the prompt's next ones after the cached, in batches; with
        message-scoped steering those before position `plain` (`system_end`) go first, under
        their own phase, and with content-scoped steering those from position `closed` on go
        last, under theirs. False if cancelled between batches."""
        n = len(self._cached)
        cut = max(0, min(len(tokens), plain - n)) if self._split else 0
        stop = max(cut, min(len(tokens), closed - n))
        for piece, phase in (
            (tokens[:cut], "system"),
            (tokens[cut:stop], "read"),
            (tokens[stop:], "tail"),
        ):
            for start in range(0, len(piece), self.n_batch):
                if cancelled is not None and cancelled():
                    return False
                self._decode(piece[start : start + self.n_batch], phase)
        return True

    def _prepare(self, prompt: list[int]) -> int:
        """Reuse the longest cached prefix; returns how many prompt tokens need evaluating.

        When cached tokens must be evaluated again (a /regen needs the last prompt token's
        logits anew), evaluation restarts where the batch holding them began, so they go
        through llama.cpp in the same batch as before. Its numbers depend on the batch split
        (one token alone against the same token in a batch differs by ~0.3 in a logit on
        the default model), and a greedy /regen must give the reply it gave."""
        common = 0
        for a, b in zip(self._cached, prompt, strict=False):
            if a != b:
                break
            common += 1
        common = min(common, len(prompt) - 1)  # the last prompt token must produce logits
        if common < len(self._cached):
            common = max((s for s in self._starts if s <= common), default=0)
            if not llama_cpp.llama_memory_seq_rm(self._mem, 0, common, -1):
                # a cache that cannot drop a tail (a recurrent model's state, a sliding
                # window cache without its full size): evaluate everything again
                llama_cpp.llama_memory_clear(self._mem, True)
                common = 0
            del self._cached[common:]
            self._starts = [s for s in self._starts if s < common]
        return len(prompt) - common

    def _forget_after(self, n: int) -> None:
        """Drop the cached tokens after the first n (a reply written under prompt-scoped
        steering, to be read again under it next turn; with content-scoped steering the
        prompt's closing tokens too)."""
        if len(self._cached) > n:
            if not llama_cpp.llama_memory_seq_rm(self._mem, 0, n, -1):
                self.reset()  # a cache that cannot drop a tail: read everything again
                return
            del self._cached[n:]
            self._starts = [s for s in self._starts if s < n]

    def prompt_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        """The prompt's tokens; a template that cannot render them is an EngineError."""
        try:
            return self.model.chat_tokens(messages)
        except TemplateError as exc:
            raise EngineError(str(exc)) from None

    # -- scoring ------------------------------------------------------------------------------

    def score(self, messages: list[dict[str, str]], token_ids: list[int]) -> list[float]:
        """Log-probability of each of `token_ids` as the assistant's reply to `messages`,
        under the steering now in force (callers measure fluency with none).

        The prompt prefix is reused from the cache like a reply's; the reply's tokens are
        evaluated in batches that ask llama.cpp for logits at every position.
        """
        with self._lock:
            prompt = self.prompt_tokens(messages)
            tokens = prompt + list(token_ids)
            if len(tokens) > self.n_ctx:
                raise ContextFullError(
                    f"context full: scoring needs {len(tokens)} tokens, the context holds "
                    f"{self.n_ctx}"
                )
            if not token_ids:
                return []
            self._prepare(prompt)  # keeps at most len(prompt)-1 tokens: every logit is fresh
            head = prompt[len(self._cached) : len(prompt) - 1]
            self._read(head, self._plain(messages), self._closed(prompt))
            # each token from the prompt's last on predicts the next one
            tail = tokens[len(prompt) - 1 : -1]
            scores: list[float] = []
            for start in range(0, len(tail), self.n_batch):
                logits = self._decode_all_logits(tail[start : start + self.n_batch])
                targets = np.asarray(token_ids[start : start + len(logits)])
                scores += _log_softmax_at(logits, targets).tolist()
            return scores

    def _decode_all_logits(self, chunk: list[int]) -> np.ndarray:
        """Evaluate `chunk` after the cached tokens, keeping the logits of every position."""
        n_vocab = self.model.n_vocab
        base = len(self._cached)
        self._apply("write")  # a scored reply is read as the model wrote it
        with filled([(token, base + i, 0, True) for i, token in enumerate(chunk)]) as batch:
            rc = self.decode(batch)
        if rc != 0:
            self.reset()
            raise EngineError(f"llama_decode failed with code {rc}")
        self._starts.append(base)
        self._cached.extend(chunk)
        # every row was asked for, so llama.cpp keeps them in batch order, contiguous
        rows = llama_cpp.llama_get_logits(self._ptr)
        return np.ctypeslib.as_array(rows, (len(chunk), n_vocab)).copy()

    # -- generation ---------------------------------------------------------------------------

    def generate(
        self,
        messages: list[dict[str, str]],
        sampling: Sampling,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Reply:
        """Stream the assistant's next reply to `messages` through on_token.

        Cancelling (setting `cancel`) stops after the token being produced; the partial reply is
        returned with finish_reason "interrupted" and the context stays usable.
        """
        with self._lock:
            return self._generate(messages, sampling, on_token, cancel)

    def _generate(self, messages, sampling, on_token, cancel) -> Reply:
        t0 = time.perf_counter()
        prompt = self.prompt_tokens(messages)
        if len(prompt) >= self.n_ctx:
            raise ContextFullError(
                f"context full: the conversation is {len(prompt)} tokens and the context holds "
                f"{self.n_ctx}; use /undo or /clear, or restart with a larger --ctx"
            )
        seed = None  # greedy: no randomness to record
        if sampling.temperature > 0:
            seed = sampling.seed if sampling.seed is not None else random.getrandbits(31)
        n_eval = self._prepare(prompt)
        evaluated = n_eval
        cancelled = cancel.is_set if cancel is not None else (lambda: False)
        pending = prompt[len(prompt) - n_eval :]
        if not self._read(pending, self._plain(messages), self._closed(prompt), cancelled):
            return self._reply("", [], "interrupted", t0, None, 0.0, prompt, evaluated, seed)
        return self._stream(prompt, evaluated, sampling, seed, on_token, cancelled, t0)

    def _stream(self, prompt, evaluated, sampling, seed, on_token, cancelled, t0) -> Reply:
        model, one = self.model, self._one
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        sampler = _sampler(sampling, seed, model.vocab, self.n_ctx)
        out: list[int] = []
        parts: list[str] = []
        t_first = t_last = None
        sampled = 0
        reason = "length"
        self._apply("write")
        try:
            while len(out) < sampling.max_tokens:
                if cancelled():
                    reason = "interrupted"
                    break
                if len(self._cached) >= self.n_ctx:
                    reason = "context_full"
                    break
                token = llama_cpp.llama_sampler_sample(sampler, self._ptr, -1)
                t_last = time.perf_counter()
                sampled += 1
                if t_first is None:
                    t_first = t_last
                if model.is_eog(token):
                    reason = "stop"
                    break
                out.append(token)
                text = decoder.decode(model.piece(token))
                if text:
                    parts.append(text)
                    if on_token is not None:
                        on_token(text)
                if len(out) >= sampling.max_tokens:
                    break
                one[0] = token
                rc = self.decode(llama_cpp.llama_batch_get_one(one, 1))
                if rc != 0:
                    self.reset()
                    raise EngineError(f"llama_decode failed with code {rc}")
                self._starts.append(len(self._cached))
                self._cached.append(token)
        finally:
            llama_cpp.llama_sampler_free(sampler)
            if self._reading is not None:
                self._forget_after(self._closed(prompt))
        tail = decoder.decode(b"", final=True)
        if tail:
            parts.append(tail)
            if on_token is not None:
                on_token(tail)
        rate = (sampled - 1) / (t_last - t_first) if sampled > 1 and t_last > t_first else 0.0
        text = "".join(parts)
        return self._reply(text, out, reason, t0, t_first, rate, prompt, evaluated, seed)

    @staticmethod
    def _reply(text, out, reason, t0, t_first, rate, prompt, evaluated, seed) -> Reply:
        """tokens_per_s is the decode rate after the first token (prompt time is in ttft)."""
        ttft = (t_first - t0) if t_first is not None else time.perf_counter() - t0
        return Reply(
            text=text,
            tokens=len(out),
            finish_reason=reason,
            ttft_s=ttft,
            tokens_per_s=rate,
            prompt_tokens=len(prompt),
            prompt_tokens_evaluated=evaluated,
            seed=seed,
            token_ids=out,
        )

    def close(self) -> None:
        if self._ptr:
            llama_cpp.llama_free(self._ptr)
            self._ptr = None

    def __del__(self) -> None:  # pragma: no cover
        with contextlib.suppress(Exception):
            self.close()


def _key(data: np.ndarray | None) -> bytes | None:
    return None if data is None else data.tobytes()


def _plus(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """The sum of two buffers, either of which may be absent."""
    if a is None or b is None:
        return b if a is None else a
    return a + b


def _log_softmax_at(logits: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """log p(token) for each row of raw logits, computed stably.

    Row by row through one vocabulary-sized buffer: the whole-array form made two temporaries
    the size of the logits (47 MB for 240 rows of this vocabulary), and their first touch cost
    more than the arithmetic (0.2-0.3 s against 18 ms for 240 rows; the same numbers to the
    bit, since each row is reduced the same way)."""
    out = np.empty(len(tokens), dtype=np.float64)
    buf = np.empty(logits.shape[1], dtype=np.float32)
    for i, token in enumerate(tokens):
        row = logits[i]
        top = row.max()
        np.subtract(row, top, out=buf)
        np.exp(buf, out=buf)
        out[i] = float(row[token]) - float(top) - np.log(buf.sum(dtype=np.float64))
    return out
