"""Steering-vector maths and GGUF control-vector files: pure numpy + gguf (no llama_cpp, no UI).

Names are imported on first use, so a light module such as `vectors.atomic` (stdlib only, used
by the session files) can be imported without loading numpy and gguf.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOMES = {
    "compose": ".compose",
    "linear_form": ".compose",
    "mix": ".compose",
    "parse_range": ".compose",
    "build_vector": ".extract",
    "bundled_dir": ".bundled",
    "bundled_names": ".bundled",
    "bundled_path": ".bundled",
    "calibration_prompts": ".prompts",
    "recommend_range": ".extract",
    "VectorFileError": ".gguf_io",
    "load_vector": ".gguf_io",
    "save_vector": ".gguf_io",
    "load_pairs": ".pairs",
    "pairs_sha256": ".pairs",
    "neutral_prompts": ".prompts",
    "UNIT_MEAN_DIFF": ".vector",
    "UNIT_RAW": ".vector",
    "UNIT_TOKEN_NORM": ".vector",
    "build_focus_vector": ".focus",
    "focus_band": ".focus",
    "SteeringVector": ".vector",
    "check_range": ".vector",
}

__all__ = [
    "SteeringVector",
    "UNIT_MEAN_DIFF",
    "UNIT_RAW",
    "UNIT_TOKEN_NORM",
    "VectorFileError",
    "build_focus_vector",
    "build_vector",
    "bundled_dir",
    "bundled_names",
    "bundled_path",
    "calibration_prompts",
    "check_range",
    "compose",
    "focus_band",
    "linear_form",
    "load_pairs",
    "load_vector",
    "mix",
    "neutral_prompts",
    "pairs_sha256",
    "parse_range",
    "recommend_range",
    "save_vector",
]

if TYPE_CHECKING:
    from .bundled import bundled_dir, bundled_names, bundled_path
    from .compose import compose, linear_form, mix, parse_range
    from .extract import build_vector, recommend_range
    from .focus import build_focus_vector, focus_band
    from .gguf_io import VectorFileError, load_vector, save_vector
    from .pairs import load_pairs, pairs_sha256
    from .prompts import calibration_prompts, neutral_prompts
    from .vector import UNIT_MEAN_DIFF, UNIT_RAW, UNIT_TOKEN_NORM, SteeringVector, check_range


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value
