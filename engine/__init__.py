"""The llama.cpp runtime: models, chat contexts, streamed generation. No UI, no vector objects."""

import os

# llama.cpp's CPU threads are OpenMP threads, and OpenMP's default wait policy keeps a waiting
# thread spinning on its core. Beside any other busy process that starves the decode: on a
# shared 2-core machine a 2-thread decode ran 6x slower than with "passive", and 100x slower
# beside one busy loop (bench/omp_bench.py). libgomp reads the variable when llama.cpp is loaded,
# i.e. on the import below; a value the user set (even an empty one) is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

from engine.chat import (  # noqa: E402
    ChatContext,
    ContextFullError,
    EngineError,
    Reply,
    Sampling,
)
from engine.model import Model, ModelLoadError, default_model_path  # noqa: E402
from engine.offload import Offload, OffloadError  # noqa: E402

__all__ = [
    "ChatContext",
    "ContextFullError",
    "EngineError",
    "Model",
    "ModelLoadError",
    "Offload",
    "OffloadError",
    "Reply",
    "Sampling",
    "default_model_path",
]
