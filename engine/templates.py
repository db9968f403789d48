"""Chat templates: how a conversation becomes a prompt.

A model's own template is Jinja text in its GGUF (`tokenizer.chat_template`). A model without
one (a base model) or with a wrong one takes another with `--chat-template NAME|FILE`:

- NAME is one of llama.cpp's built-in formats (`chatml`, `gemma`, `llama3`, ...), rendered by
  llama.cpp's own `llama_chat_apply_template`, so the prompt is exactly the one llama.cpp's
  tools (`llama-server --chat-template gemma`) build for that name. Those renderers are fixed
  C++ code: nothing from outside runs.
- FILE is a Jinja template, rendered like a model's own template in llama-cpp-python's
  sandboxed Jinja (attribute tricks that would reach Python internals are a SecurityError).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

MAX_TEMPLATE_BYTES = 1024 * 1024  # far beyond any real template; a mistaken file is refused
Render = Callable[[list[dict[str, str]]], str]


class TemplateChoiceError(ValueError):
    """A --chat-template value that names no built-in format and no readable file (one line)."""


@dataclass(frozen=True)
class ChatTemplate:
    """A template chosen instead of the model's own, as a session records it: a built-in
    `name`, or the Jinja text itself (`jinja`, with the `file` name it came from, for
    display), so a session replays with the same template on any machine."""

    name: str | None = None
    jinja: str | None = None
    file: str | None = None

    def describe(self) -> str:
        return self.name or f"Jinja file {self.file or '(inline)'}"


@cache
def builtin_names() -> tuple[str, ...]:
    """The names llama.cpp's llama_chat_apply_template knows, from the library itself."""
    n = llama_cpp.llama_chat_builtin_templates(None, 0)
    names = (ctypes.c_char_p * max(n, 0))()
    llama_cpp.llama_chat_builtin_templates(names, n)
    return tuple(sorted(raw.decode() for raw in names if raw))


def template_from_arg(raw: str) -> ChatTemplate:
    """The template a --chat-template value means: a built-in name first, else a file."""
    if raw in builtin_names():
        return ChatTemplate(name=raw)
    try:
        path = Path(raw).expanduser()
    except RuntimeError:  # '~nosuchuser/x'
        path = Path(raw)
    if not path.is_file():
        shown = ", ".join(n for n in builtin_names() if "-" not in n)
        raise TemplateChoiceError(
            f"--chat-template {raw!r} is neither a built-in template nor a file: give a Jinja "
            f"file, or one of llama.cpp's names ({shown}, ...)"
        )
    try:
        data = path.read_bytes()[: MAX_TEMPLATE_BYTES + 1]
        if len(data) > MAX_TEMPLATE_BYTES:
            raise TemplateChoiceError(f"--chat-template {raw}: file over 1 MiB, not a template")
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateChoiceError(
            f"--chat-template {raw}: cannot read it as UTF-8 text ({exc.__class__.__name__})"
        ) from None
    return ChatTemplate(jinja=text, file=path.name)


def builtin_renderer(name: str) -> Render:
    """Render with llama.cpp's built-in format `name` (ending with the assistant's turn)."""
    tmpl = name.encode()

    def render(messages: list[dict[str, str]]) -> str:
        chat = (llama_cpp.llama_chat_message * len(messages))()
        keep = []  # the bytes objects must outlive the call
        for i, message in enumerate(messages):
            role = message["role"].encode()
            content = (message.get("content") or "").encode()
            keep += [role, content]
            chat[i].role, chat[i].content = role, content
        size = 256 + 2 * sum(len(b) for b in keep)
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_chat_apply_template(tmpl, chat, len(messages), True, buf, size)
            if n < 0:
                raise ValueError(f"llama.cpp's {name!r} template refused the conversation")
            if n <= size:
                return buf.raw[:n].decode("utf-8", errors="replace")
            size = n + 1

    return render


def jinja_renderer(text: str, bos: str, eos: str) -> Render:
    """Render with a Jinja template in llama-cpp-python's sandboxed environment."""
    formatter = Jinja2ChatFormatter(template=text, eos_token=eos, bos_token=bos)
    return lambda messages: formatter(messages=messages).prompt
