"""Route llama.cpp's own logging away from the terminal.

llama.cpp prints hundreds of lines while loading; in a chat UI or a piped REPL they would
mix with the conversation. Errors are kept so a failure can be explained in one line.
"""

from __future__ import annotations

import collections

import llama_cpp

GGML_LOG_LEVEL_ERROR = 4

recent_errors: collections.deque[str] = collections.deque(maxlen=20)
# llama.cpp's "load_tensors: offloaded N/M layers to GPU" line of the last model load
offload_report: collections.deque[str] = collections.deque(maxlen=1)


@llama_cpp.llama_log_callback
def _on_log(level: int, text: bytes, _user_data: object) -> None:
    if level == GGML_LOG_LEVEL_ERROR and text:
        recent_errors.append(text.decode("utf-8", errors="replace").strip())
    elif text and b"offloaded " in text and b" layers to " in text:
        line = text.decode("utf-8", errors="replace").strip()
        offload_report.append(line.partition(": ")[2] or line)


_installed = False


def quiet_llama() -> None:
    """Install the silent logger once per process (the callback must outlive every call)."""
    global _installed
    if not _installed:
        llama_cpp.llama_log_set(_on_log, None)
        _installed = True
