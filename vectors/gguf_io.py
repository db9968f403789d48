"""GGUF control-vector files: the llama.cpp format, plus steer's provenance under `steer.*`.

Layer numbering (checked against the sources; details in docs/vector-format.md):

- llama.cpp's loader (common/common.cpp, `common_control_vector_load_one`) copies tensor
  `direction.N` to buffer offset ``n_embd * (N - 1)`` ("layer 1 at [0]"), i.e. adds it to the
  output of block N; `direction.0` is rejected.
- llama.cpp's cvector-generator keeps the `l_out` tensors whose row count equals the prompt
  length, which is `l_out-0` .. `l_out-(n_layer-2)` (the last block keeps only output rows), and
  names the result for `l_out-i` ``direction.(i+1)`` (mean.hpp / pca.hpp:
  ``ggml_format_name(ctrl_out, "direction.%zu", il+1)``). So its `direction.N` is *measured* at
  the output of block N-1 but *applied* by llama.cpp to block N: an off-by-one inside that tool.
- repeng's `export_gguf` writes ``direction.{layer}`` for HF decoder layer `layer`; its
  directions are read from ``hidden_states[layer + 1]`` (output of decoder layer `layer`) and
  applied to that layer's output, so N means block N, as in llama.cpp.

steer loads `direction.N` into row N for every file, with no shift, so that a foreign file
steers exactly as it does under llama.cpp (for cvector-generator that includes its one-block
lag, which steer reproduces rather than silently "fixes"). Both tools store unit-norm
directions, hence unit "raw": strength multiplies the tensors as llama.cpp's --control-vector
scale does.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import gguf
import numpy as np

from .atomic import write_atomic
from .vector import UNIT_RAW, SteeringVector

ARCH = "controlvector"
_DIRECTION = re.compile(r"direction\.(\d+)", re.ASCII)
_META_KEY = re.compile(r"[a-z][a-z0-9_]*", re.ASCII)
_READABLE_TYPES = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
_MODEL_TENSOR_PREFIXES = ("blk.", "token_embd", "output")
# meta keys that say where a file lies on this machine (set by whoever loads or saves it)
MACHINE_LOCAL_KEYS = ("saved_to", "source")


class VectorFileError(Exception):
    """A control-vector file that cannot be used; the message is one line, fit for the user."""


def save_vector(vec: SteeringVector, path: str | os.PathLike[str], model_hint: str) -> None:
    """Write `vec` atomically: a crash or error leaves either the old file or the new one.

    Every block 1..n_layer-1 gets a tensor, zero or not, so the file is complete on its own and
    reads back to exactly the same (n_layer, n_embd) array.
    """
    write_atomic(path, lambda tmp: _write_gguf(vec, tmp, model_hint))


def load_vector(
    path: str | os.PathLike[str],
    n_layer: int | None = None,
    n_embd: int | None = None,
    name: str | None = None,
) -> SteeringVector:
    """Read and validate a control vector made by steer, llama.cpp or repeng.

    `n_layer` / `n_embd` are the model's; when given, the file must fit that model. Raises
    VectorFileError for anything steer or llama.cpp could not use.
    """
    where = str(path)
    reader = _open_reader(where)
    _check_architecture(where, reader)
    blocks = _read_directions(where, reader.tensors, n_embd)
    steer_meta = _steer_meta(where, _field(reader, "steer.meta"))
    n_layer = _resolve_n_layer(where, blocks, n_layer, _field(reader, "steer.n_layer"))
    width = next(iter(blocks.values())).size
    directions = np.zeros((n_layer, width), dtype=np.float32)
    for block, data in blocks.items():
        directions[block] = data
    meta = steer_meta if steer_meta is not None else _foreign_meta(blocks)
    meta["model_hint"] = str(_field(reader, f"{ARCH}.model_hint") or "")
    vec_name = name or str(_field(reader, "steer.name") or "") or Path(where).stem
    return SteeringVector(vec_name, directions, meta)


# ---- writing ---------------------------------------------------------------------------------


def _write_gguf(vec: SteeringVector, tmp: Path, model_hint: str) -> None:
    writer = gguf.GGUFWriter(tmp, ARCH)
    try:
        writer.add_key_value(f"{ARCH}.model_hint", model_hint, gguf.GGUFValueType.STRING)
        writer.add_int32(f"{ARCH}.layer_count", vec.n_layer - 1)
        _add_steer_keys(writer, vec)
        for il in range(1, vec.n_layer):
            writer.add_tensor(f"direction.{il}", np.ascontiguousarray(vec.directions[il]))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def _add_steer_keys(writer: gguf.GGUFWriter, vec: SteeringVector) -> None:
    """`steer.meta` (JSON, read back as the truth) plus one readable key per simple meta item.
    Where this machine keeps the file is no fact of the vector: those keys are never written."""
    meta = _jsonable({k: v for k, v in vec.meta.items() if k not in MACHINE_LOCAL_KEYS})
    keys = {f"steer.{k}": v for k, v in meta.items() if _META_KEY.fullmatch(k)}
    keys.update(
        {
            "steer.meta": json.dumps(meta, ensure_ascii=False, sort_keys=True),
            "steer.name": vec.name,
            "steer.n_layer": vec.n_layer,
            "steer.n_embd": vec.n_embd,
            "steer.strength_unit": vec.strength_unit,
            "steer.created": str(
                meta.get("created") or datetime.now(UTC).isoformat(timespec="seconds")
            ),
        }
    )
    for key, value in keys.items():
        _add_value(writer, key, value)


def _add_value(writer: gguf.GGUFWriter, key: str, value: object) -> None:
    """Typed GGUF value where the type is obvious; anything else as a JSON string."""
    kinds = gguf.GGUFValueType
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int) and -(2**63) <= value < 2**63:
        writer.add_int64(key, value)
    elif isinstance(value, float):
        writer.add_float64(key, value)
    elif isinstance(value, str):
        writer.add_key_value(key, value, kinds.STRING)
    elif _is_number_list(value) and all(type(v) is int and abs(v) < 2**31 for v in value):
        writer.add_key_value(key, list(value), kinds.ARRAY, sub_type=kinds.INT32)
    elif _is_number_list(value):
        writer.add_key_value(key, [float(v) for v in value], kinds.ARRAY, sub_type=kinds.FLOAT32)
    else:
        writer.add_key_value(key, json.dumps(value, ensure_ascii=False), kinds.STRING)


def _is_number_list(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )


def _jsonable(meta: dict) -> dict:
    """The JSON-able part of meta (numpy values converted, anything else dropped)."""
    out = {}
    for key, value in meta.items():
        converted = _to_json(value)
        try:
            json.dumps(converted)
        except (TypeError, ValueError):
            continue
        out[str(key)] = converted
    return out


def _to_json(value: object) -> object:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    return value


# ---- reading ---------------------------------------------------------------------------------


def _open_reader(where: str) -> gguf.GGUFReader:
    if not os.path.exists(where):
        raise VectorFileError(f"vector file {where} does not exist")
    if os.path.isdir(where):
        raise VectorFileError(f"{where} is a directory, not a control-vector file")
    try:
        with open(where, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise VectorFileError(f"cannot read {where}: {exc.strerror}") from None
    if not magic:
        raise VectorFileError(f"{where} is empty, not a control-vector file")
    if magic != b"GGUF":
        raise VectorFileError(f"{where} is not a GGUF file, so not a control vector")
    try:
        return gguf.GGUFReader(where)
    except Exception:  # GGUFReader raises ValueError, IndexError, KeyError... on damaged data
        raise VectorFileError(
            f"{where} is a damaged or truncated GGUF file; save or export the vector again"
        ) from None


def _field(reader: gguf.GGUFReader, key: str) -> object:
    field = reader.get_field(key)
    if field is None:
        return None
    try:
        return field.contents()
    except (UnicodeDecodeError, ValueError, IndexError):
        return None


def _check_architecture(where: str, reader: gguf.GGUFReader) -> None:
    arch = _field(reader, "general.architecture")
    if arch == ARCH:
        return
    if arch is None:
        raise VectorFileError(
            f"{where} has no general.architecture key, so it is not a control vector"
        )
    looks_like_model = reader.get_field(f"{arch}.block_count") is not None or any(
        t.name.startswith(_MODEL_TENSOR_PREFIXES) for t in reader.tensors
    )
    if looks_like_model:
        raise VectorFileError(
            f"{where} is a model ({arch}), not a control vector; load it as the model instead"
        )
    raise VectorFileError(
        f"{where} is a GGUF of architecture '{arch}', not a control vector ('{ARCH}')"
    )


def _read_directions(
    where: str, tensors: list[gguf.ReaderTensor], n_embd: int | None
) -> dict[int, np.ndarray]:
    if not tensors:
        raise VectorFileError(f"{where} has no direction tensors; it steers nothing")
    blocks: dict[int, np.ndarray] = {}
    for tensor in tensors:
        block, data = _read_direction(where, tensor)
        width = n_embd if n_embd is not None else next(iter(blocks.values()), data).size
        if data.size != width:
            whose = "the model's n_embd" if n_embd is not None else "the file's other tensors"
            raise VectorFileError(
                f"{where}: {tensor.name} is {data.size} wide but {whose} is {width}; "
                "the vector was made for a different model"
            )
        # llama.cpp adds up repeated blocks ("multiple directions for same layer"); so does steer.
        blocks[block] = blocks[block] + data if block in blocks else data
    return blocks


def _read_direction(where: str, tensor: gguf.ReaderTensor) -> tuple[int, np.ndarray]:
    match = _DIRECTION.fullmatch(tensor.name)
    if match is None:
        raise VectorFileError(
            f"{where}: tensor '{tensor.name}' is not named direction.N (N = block number)"
        )
    block = int(match.group(1))
    if block == 0:
        raise VectorFileError(
            f"{where}: direction.0 would steer block 0, which llama.cpp cannot steer"
        )
    if tensor.tensor_type not in _READABLE_TYPES:
        raise VectorFileError(
            f"{where}: {tensor.name} is {tensor.tensor_type.name}; only F32 or F16 directions "
            "can be read (llama.cpp itself reads only F32)"
        )
    if len(tensor.shape) != 1:
        raise VectorFileError(f"{where}: {tensor.name} is not a 1-D tensor")
    data = np.array(tensor.data, dtype=np.float32).reshape(-1)
    if not np.isfinite(data).all():
        raise VectorFileError(f"{where}: {tensor.name} contains NaN or Inf values")
    return block, data


def _resolve_n_layer(
    where: str, blocks: dict[int, np.ndarray], n_layer: int | None, hinted: object
) -> int:
    """The model's block count if known, else the file's own (steer.n_layer), else the deepest."""
    deepest = max(blocks)
    if n_layer is None:
        n_layer = max(int(hinted), deepest + 1) if isinstance(hinted, int) else deepest + 1
    if deepest > n_layer - 1:
        raise VectorFileError(
            f"{where}: direction.{deepest} is past the model's last steerable block "
            f"{n_layer - 1}; the vector was made for a deeper model"
        )
    return n_layer


def _steer_meta(where: str, raw: object) -> dict | None:
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
    except (TypeError, ValueError):
        meta = None
    if not isinstance(meta, dict):
        raise VectorFileError(f"{where}: steer.meta is not a JSON object; the file is damaged")
    return meta


def _foreign_meta(blocks: dict[int, np.ndarray]) -> dict:
    """Files from other tools: raw unit, and the blocks they chose to steer as the range."""
    present = sorted(blocks)
    return {
        "strength_unit": UNIT_RAW,
        "recommended_range": [present[0], present[-1]],
        "recommended_strength": 1.0,
        "blocks": present,
        "method": "unknown",
    }
