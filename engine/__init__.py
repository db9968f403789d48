"""The llama.cpp runtime: models, chat contexts, streamed generation. No UI, no vector objects."""

from engine.chat import ChatContext, ContextFullError, EngineError, Reply, Sampling
from engine.model import Model, ModelLoadError, default_model_path
from engine.offload import Offload, OffloadError

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
