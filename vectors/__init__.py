"""Steering-vector maths and GGUF control-vector files: pure numpy + gguf (no llama_cpp, no UI)."""

from .bundled import bundled_dir, bundled_names, bundled_path
from .compose import compose, linear_form, mix, parse_range
from .extract import build_vector, recommend_range
from .gguf_io import VectorFileError, load_vector, save_vector
from .pairs import load_pairs, pairs_sha256
from .prompts import calibration_prompts, neutral_prompts
from .vector import UNIT_MEAN_DIFF, UNIT_RAW, SteeringVector, check_range

__all__ = [
    "UNIT_MEAN_DIFF",
    "UNIT_RAW",
    "SteeringVector",
    "VectorFileError",
    "build_vector",
    "bundled_dir",
    "bundled_names",
    "bundled_path",
    "calibration_prompts",
    "check_range",
    "compose",
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
