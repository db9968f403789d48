"""Projection steering as a rank-1 LoRA adapter (ds4's directional mode), pure numpy + gguf.

Projecting a unit direction v out of a linear layer's output, y <- y - s v (v.y) with y = W x,
is itself a linear layer: (I - s v vT) W x = W x + s (-v)(vT W) x. That is a rank-1 LoRA on W
with lora_a = vT W (numpy (1, n_in), ggml ne [n_in, 1]), lora_b = -v (numpy (n_out, 1), ggml ne
[1, n_out]), alpha 1 and the runtime LoRA scale s. llama.cpp computes W x + s * B (A x) for it
(alpha / rank = 1), on every backend, with no Python per token; changing s rebuilds nothing.

Targets per steered block l: `blk.l.ffn_down.weight` (the FFN's output, as ds4) and optionally
`blk.l.attn_output.weight`; v is the steering vector's row l (what an additive vector adds to
block l's output, `l_out-l`) made unit length. The adapter file is the GGUF llama.cpp loads with
`--lora` / `--lora-scaled` (docs/vector-format.md).

Reading the model: `gguf.GGUFReader` parses every metadata value of the file (5 s on the default
model, whose vocabulary is 49k strings); only a few weight tensors are needed, so the tensor
index is read directly (`tensor_index`) and the weights are dequantized from a memory map.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import gguf
import numpy as np

from .atomic import write_atomic
from .vector import SteeringVector, check_range

TARGETS = ("ffn_down", "attn_output")
# Measured on the default model (docs/projection.md): projecting the terse direction out of
# ffn_down, as ds4 does, broke the text (NLL 4.5x at s = 1 on blocks 9-13); out of attn_output
# it cancelled a written terse instruction at 0.96x the unsteered NLL.
DEFAULT_TARGETS = ("attn_output",)
FORMAT_VERSION = 1  # of what steer writes; part of the cache key

# GGUF metadata value types whose size is fixed (gguf.GGUFValueType numbering)
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY, _UINT32 = 8, 9, 4


class AdapterError(ValueError):
    """The model file cannot give the weights an adapter needs; the message is one line."""


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor of a GGUF file lies: its ggml type, shape (ggml order) and byte offset."""

    type: int
    ne: tuple[int, ...]
    offset: int  # from the start of the file


def parse_targets(text: str) -> tuple[str, ...]:
    """'ffn_down' or 'ffn_down,attn_output' -> a tuple of known targets, or a ValueError."""
    names = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    bad = [t for t in names if t not in TARGETS]
    if bad or not names:
        raise ValueError(
            f"targets must be one or more of {', '.join(TARGETS)} (comma-separated), got '{text}'"
        )
    return tuple(t for t in TARGETS if t in names)


# -- reading the model's weights ------------------------------------------------------------------


def tensor_index(path: str | os.PathLike[str]) -> dict[str, TensorInfo]:
    """The tensors of a GGUF file (v2 or v3, little-endian), without reading the metadata values."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        return _index(buf, str(path))


def _index(buf: mmap.mmap, where: str) -> dict[str, TensorInfo]:
    if buf[:4] != b"GGUF":
        raise AdapterError(f"not a GGUF file: {where}")
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
    if version not in (2, 3):
        raise AdapterError(f"unsupported GGUF version {version} (steer reads 2 and 3): {where}")
    pos, alignment = 24, 32
    try:
        for _ in range(n_kv):
            key, pos = _string(buf, pos)
            (kind,) = struct.unpack_from("<I", buf, pos)
            pos += 4
            if key == "general.alignment" and kind == _UINT32:
                (alignment,) = struct.unpack_from("<I", buf, pos)
            pos = _skip_value(buf, pos, kind)
        infos: dict[str, TensorInfo] = {}
        for _ in range(n_tensors):
            name, pos = _string(buf, pos)
            (n_dims,) = struct.unpack_from("<I", buf, pos)
            ne = struct.unpack_from(f"<{n_dims}Q", buf, pos + 4)
            kind, offset = struct.unpack_from("<IQ", buf, pos + 4 + 8 * n_dims)
            pos += 4 + 8 * n_dims + 12
            infos[name] = TensorInfo(kind, tuple(int(n) for n in ne), offset)
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        raise AdapterError(f"cannot read the GGUF tensor index ({exc}): {where}") from None
    start = -(-pos // alignment) * alignment
    return {n: TensorInfo(t.type, t.ne, start + t.offset) for n, t in infos.items()}


def _string(buf: mmap.mmap, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<Q", buf, pos)
    end = pos + 8 + n
    if end > len(buf):
        raise ValueError("string runs past the end of the file")
    return buf[pos + 8 : end].decode("utf-8"), end


def _skip_value(buf: mmap.mmap, pos: int, kind: int) -> int:
    if kind in _FIXED:
        return pos + _FIXED[kind]
    if kind == _STRING:
        (n,) = struct.unpack_from("<Q", buf, pos)
        return pos + 8 + n
    if kind == _ARRAY:
        elem, count = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        if elem in _FIXED:
            return pos + _FIXED[elem] * count
        for _ in range(count):
            pos = _skip_value(buf, pos, elem)
        return pos
    raise ValueError(f"unknown metadata value type {kind}")


def read_weights(
    path: str | os.PathLike[str], names: list[str], index: dict[str, TensorInfo] | None = None
) -> dict[str, np.ndarray]:
    """Each named 2-D weight dequantized to float32, numpy shape (n_out, n_in)."""
    index = index if index is not None else tensor_index(path)
    out: dict[str, np.ndarray] = {}
    data = np.memmap(path, dtype=np.uint8, mode="r")
    for name in names:
        info = index.get(name)
        if info is None:
            raise AdapterError(f"the model has no tensor {name!r}; projection needs it")
        if len(info.ne) != 2:
            raise AdapterError(f"tensor {name!r} is not a matrix (shape {info.ne})")
        qtype = gguf.GGMLQuantizationType(info.type)
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        n_in, n_out = info.ne
        row = n_in // block * size
        raw = np.asarray(data[info.offset : info.offset + row * n_out]).reshape(n_out, row)
        out[name] = np.asarray(gguf.quants.dequantize(raw, qtype), dtype=np.float32)
    return out


# -- the maths ------------------------------------------------------------------------------------


def unit_directions(vec: SteeringVector, layers: tuple[int, int]) -> dict[int, np.ndarray]:
    """The vector's unit direction at each block of `layers` (float32); a zero row is refused."""
    a, b = check_range(layers, vec.n_layer)
    out = {}
    for il in range(a, b + 1):
        row = vec.directions[il].astype(np.float64)
        norm = float(np.linalg.norm(row))
        if not np.isfinite(norm) or norm == 0.0:
            raise AdapterError(
                f"vector {vec.name!r} is zero at block {il}: it has no direction to project "
                "there; choose other --layers"
            )
        out[il] = (row / norm).astype(np.float32)
    return out


def projection_pair(weight: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """lora_a = vT W (1, n_in) and lora_b = -v (n_out, 1), float32: W + s B A = (I - s v vT) W."""
    v = np.asarray(v, dtype=np.float32)
    a = (v.astype(np.float64) @ weight.astype(np.float64)).astype(np.float32)[None, :]
    b = -v[:, None]
    return np.ascontiguousarray(a), np.ascontiguousarray(b)


@dataclass
class Adapter:
    """A projection adapter in memory: lora pairs by target tensor, plus what it was made of."""

    arch: str
    pairs: dict[str, tuple[np.ndarray, np.ndarray]]  # "blk.l.ffn_down.weight" -> (a, b)
    meta: dict


def build_adapter(
    vec: SteeringVector,
    model_path: str | os.PathLike[str],
    layers: tuple[int, int],
    targets: tuple[str, ...] = DEFAULT_TARGETS,
) -> Adapter:
    """The rank-1 projection adapter of `vec` on `layers` x `targets` of the model file."""
    targets = parse_targets(",".join(targets))
    index = _cached_index(str(model_path), *_stamp(model_path))
    n_layer = 1 + max((int(n.split(".")[1]) for n in index if n.startswith("blk.")), default=0)
    if vec.n_layer != n_layer:
        raise AdapterError(f"vector {vec.name!r} has {vec.n_layer} blocks; the model has {n_layer}")
    units = unit_directions(vec, layers)
    names = [f"blk.{il}.{t}.weight" for il in units for t in targets]
    weights = read_weights(model_path, names, index)
    pairs = {}
    for name in names:
        il = int(name.split(".")[1])
        if weights[name].shape[0] != vec.n_embd:
            raise AdapterError(
                f"{name} writes {weights[name].shape[0]} values; vector {vec.name!r} is "
                f"{vec.n_embd} wide"
            )
        pairs[name] = projection_pair(weights[name], units[il])
    meta = {
        "vector": vec.name,
        "layers": [int(layers[0]), int(layers[1])],
        "targets": list(targets),
        "vector_sha256": vector_sha256(vec),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return Adapter(_architecture(model_path), pairs, meta)


def _stamp(path: str | os.PathLike[str]) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


@lru_cache(maxsize=4)
def _cached_index(path: str, size: int, mtime_ns: int) -> dict[str, TensorInfo]:
    """The index of a model file, kept while the file is unchanged (size and mtime)."""
    return tensor_index(path)


def _architecture(path: str | os.PathLike[str]) -> str:
    """general.architecture of a GGUF file (the first metadata keys; read without the rest)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        _, _, n_kv = struct.unpack_from("<IQQ", buf, 4)
        pos = 24
        for _ in range(n_kv):
            key, pos = _string(buf, pos)
            (kind,) = struct.unpack_from("<I", buf, pos)
            pos += 4
            if key == "general.architecture" and kind == _STRING:
                return _string(buf, pos)[0]
            pos = _skip_value(buf, pos, kind)
    raise AdapterError(f"the model file names no general.architecture: {path}")


def vector_sha256(vec: SteeringVector) -> str:
    return hashlib.sha256(np.ascontiguousarray(vec.directions, dtype="<f4").tobytes()).hexdigest()


def adapter_key(
    vec: SteeringVector, model_sha256: str, layers: tuple[int, int], targets: tuple[str, ...]
) -> str:
    """What an adapter is a function of: the vector's numbers, the model, the blocks, the targets
    (and this format's version). Two adapters with one key are the same file."""
    text = json.dumps(
        [FORMAT_VERSION, vector_sha256(vec), model_sha256, list(layers), list(targets)]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


# -- the file -------------------------------------------------------------------------------------


def save_adapter(adapter: Adapter, path: str | os.PathLike[str], extra: dict | None = None) -> None:
    """Write the llama.cpp LoRA adapter GGUF atomically (a crash leaves no half-written file)."""
    meta = {**adapter.meta, **(extra or {})}
    write_atomic(path, lambda tmp: _write(adapter, meta, tmp))


def _write(adapter: Adapter, meta: dict, tmp: Path) -> None:
    writer = gguf.GGUFWriter(tmp, adapter.arch)
    try:
        writer.add_string("general.type", "adapter")
        writer.add_string("adapter.type", "lora")
        writer.add_float32("adapter.lora.alpha", 1.0)
        writer.add_string("steer.mode", "project")
        writer.add_string("steer.meta", json.dumps(meta, sort_keys=True))
        for name, (a, b) in adapter.pairs.items():
            writer.add_tensor(f"{name}.lora_a", a)
            writer.add_tensor(f"{name}.lora_b", b)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def load_adapter(path: str | os.PathLike[str]) -> Adapter:
    """Read an adapter file back (tests, `gguf-dump`-free inspection); small files only."""
    reader = gguf.GGUFReader(path)
    pairs: dict[str, list] = {}
    for t in reader.tensors:
        base, _, part = t.name.rpartition(".")
        arr = np.asarray(t.data, dtype=np.float32).reshape(tuple(reversed(t.shape.tolist())))
        pairs.setdefault(base, [None, None])[1 if part == "lora_b" else 0] = arr
    field = reader.fields.get("steer.meta")
    meta = json.loads(field.contents()) if field is not None else {}
    arch = reader.fields["general.architecture"].contents()
    return Adapter(arch, {n: (a, b) for n, (a, b) in pairs.items()}, meta)


# -- the recommendation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectRecommendation:
    """What `/steer NAME --mode project` uses when nothing more is typed, and why."""

    strength: float
    layers: tuple[int, int]
    targets: tuple[str, ...]
    source: str  # "measured" (from the vector's file) or "rule"


PROJECT_STRENGTH = 1.0


def project_recommendation(vec: SteeringVector, n_layer: int) -> ProjectRecommendation:
    """The vector's own measured project-mode setting (meta "project") if it has one, else the
    rule: the additive recommendation's band, strength 1 (the direction removed), attn_output."""
    rec = vec.meta.get("project")
    if isinstance(rec, dict):
        try:
            layers = check_range(tuple(rec["layers"]), n_layer)
            targets = parse_targets(",".join(rec.get("targets") or DEFAULT_TARGETS))
            return ProjectRecommendation(float(rec["strength"]), layers, targets, "measured")
        except (KeyError, TypeError, ValueError):
            pass  # an unreadable entry falls back to the rule
    layers = vec.recommended_range or (1, n_layer - 1)
    return ProjectRecommendation(PROJECT_STRENGTH, layers, DEFAULT_TARGETS, "rule")
