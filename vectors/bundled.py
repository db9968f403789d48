"""Ready-made vectors shipped with steer (vectors/data/vectors/*.gguf), for the default model.

Each was built by `/contrast` with calibration (bench/build_ready_vectors.py), so its file
carries the instructions, the model's sha256, the separation and the calibration that chose
its strength. They load by name like the user library's vectors; the library wins a clash.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def bundled_dir() -> Path:
    return Path(str(resources.files("vectors").joinpath("data/vectors")))


def bundled_names() -> list[str]:
    folder = bundled_dir()
    return sorted(p.stem for p in folder.glob("*.gguf")) if folder.is_dir() else []


def bundled_path(name: str) -> Path | None:
    path = bundled_dir() / f"{name}.gguf"
    return path if path.is_file() else None
