"""LoRA adapters loaded into llama.cpp: the runtime half of projection steering.

An adapter file (built by `vectors/lora.py`) is loaded once per model with
`llama_adapter_lora_init`; it lives as long as the model (llama.cpp frees it with the model) and
is applied per context, with a scale, by `ChatContext.set_adapters`.
"""

from __future__ import annotations

import threading
from pathlib import Path

import llama_cpp

from engine.llama_log import quiet_llama, recent_errors


class AdapterLoadError(Exception):
    """llama.cpp refused an adapter file; the message is one line."""


class LoraAdapter:
    """A loaded adapter: the llama.cpp handle and the file it came from."""

    def __init__(self, ptr, path: Path) -> None:
        self.ptr = ptr
        self.path = path

    def __repr__(self) -> str:
        return f"LoraAdapter({self.path.name})"


class AdapterCache:
    """Adapters loaded into one model, by file path: each file is loaded once."""

    def __init__(self, model) -> None:
        self.model = model
        self._loaded: dict[Path, LoraAdapter] = {}
        self._lock = threading.Lock()

    def load(self, path: str | Path) -> LoraAdapter:
        path = Path(path)
        with self._lock:
            adapter = self._loaded.get(path)
            if adapter is None:
                quiet_llama()
                ptr = llama_cpp.llama_adapter_lora_init(self.model.ptr, str(path).encode())
                if not ptr:
                    why = recent_errors[-1] if recent_errors else "wrong model or a damaged file?"
                    raise AdapterLoadError(
                        f"llama.cpp could not load the LoRA adapter {path.name} ({why})"
                    )
                adapter = self._loaded[path] = LoraAdapter(ptr, path)
            return adapter
