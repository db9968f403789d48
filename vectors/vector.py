"""The steering vector value: one direction per block plus the provenance that explains it.

Row `il` of `directions` is what gets added to the output of block `il` (llama.cpp tensor
`l_out-{il}`). Row 0 is kept (always zero) so that row index == block index everywhere in
steer; llama.cpp cannot steer block 0, and only the compose step drops that row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

UNIT_RAW = "raw"
UNIT_MEAN_DIFF = "mean-diff"
# strength 1 = a fixed share of each block's mean token-activation norm (vectors/focus.py)
UNIT_TOKEN_NORM = "token-norm"


def check_range(rng: tuple[int, int], n_layer: int) -> tuple[int, int]:
    """Validate an inclusive block range, so every caller rejects the same bad ranges."""
    a, b = int(rng[0]), int(rng[1])
    if not 1 <= a <= b <= n_layer - 1:
        raise ValueError(
            f"layers must look like A-B with 1 <= A <= B <= {n_layer - 1}, got '{a}-{b}'"
        )
    return a, b


@dataclass
class SteeringVector:
    """A named set of per-block directions; `meta` carries units, ranges and provenance."""

    name: str
    directions: np.ndarray
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Everything downstream (llama.cpp buffer, GGUF tensors) is float32 and 2-D; a wrong
        # shape caught here names the vector instead of failing deep inside compose.
        arr = np.asarray(self.directions)
        if arr.ndim != 2 or arr.shape[0] < 2 or arr.shape[1] < 1:
            raise ValueError(
                f"vector '{self.name}': directions must be (n_layer >= 2, n_embd >= 1), "
                f"got shape {arr.shape}"
            )
        self.directions = np.ascontiguousarray(arr, dtype=np.float32)

    @property
    def n_layer(self) -> int:
        return int(self.directions.shape[0])

    @property
    def n_embd(self) -> int:
        return int(self.directions.shape[1])

    @property
    def recommended_range(self) -> tuple[int, int] | None:
        rng = self.meta.get("recommended_range")
        if rng is None or len(rng) != 2:
            return None
        return int(rng[0]), int(rng[1])

    @property
    def recommended_strength(self) -> float | None:
        value = self.meta.get("recommended_strength")
        return None if value is None else float(value)

    @property
    def strength_unit(self) -> str:
        """'mean-diff' or 'token-norm' for vectors steer extracted, 'raw' for anything else
        (see docs)."""
        return str(self.meta.get("strength_unit", UNIT_RAW))

    def norms(self) -> np.ndarray:
        """Per-block L2 norms: the size of what strength 1 adds at each block."""
        return np.linalg.norm(self.directions.astype(np.float64), axis=1)

    def scaled(self, strength: float, rng: tuple[int, int]) -> np.ndarray:
        """What this vector adds at each block when applied at `strength` over `rng` only."""
        a, b = check_range(rng, self.n_layer)
        out = np.zeros_like(self.directions)
        # float32 arithmetic, as llama.cpp scales files (`src[j] * strength`): a float64 product
        # rounds differently in ~1/3 of elements, enough to change greedy text on Q4 models
        out[a : b + 1] = self.directions[a : b + 1] * np.float32(strength)
        return out
