"""The llama.cpp runtime: models, chat contexts, streamed generation. No UI, no vector objects."""

import os

# llama.cpp's CPU threads are OpenMP threads, which meet at a barrier after every operation
# of the graph (hundreds per token). How long a waiting thread spins there before it sleeps
# decides the decode speed (bench/omp_bench.py, 2 threads, tokens/s):
#   libgomp's default (a long spin): quiet 76-82, beside one busy process 0.7-1.2
#   OMP_WAIT_POLICY=passive (no spin): quiet 22-23, beside a busy process 37-40
#   a spin of 1000:                    quiet 72-76, beside a busy process 28-30
# The long spin starves the decode whenever anything else runs; passive puts every thread to
# sleep at every barrier and costs 3.4x on a quiet machine. A short spin is within 7% of the
# best on a quiet machine and keeps 75% of passive's speed beside a busy process.
# GOMP_SPINCOUNT alone is not enough: libgomp cuts the spin to 100 once it counts more threads
# than cores, and a thread that ran llama.cpp and lives on (a main thread) keeps its OpenMP
# threads counted, so a reply made on another thread (the app's worker) decoded ~2.8x slower.
# With OMP_WAIT_POLICY=active the cut spin is GOMP_SPINCOUNT too. libgomp reads the variables
# when llama.cpp is loaded, i.e. on the import below; if the user set either (even to an empty
# value), steer sets neither.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "active"
    os.environ["GOMP_SPINCOUNT"] = "1000"

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
