"""GGUF control-vector files: round trips, interop with other tools, bad files, atomic saves."""

from __future__ import annotations

import json
import os
from pathlib import Path

import gguf
import numpy as np
import pytest

from vectors import SteeringVector, VectorFileError, load_vector, save_vector

N_LAYER, N_EMBD = 7, 12


def steer_vector(name: str = "terse") -> SteeringVector:
    rng = np.random.default_rng(0)
    dirs = (rng.normal(size=(N_LAYER, N_EMBD)) * np.logspace(-3, 3, N_LAYER)[:, None]).astype(
        np.float32
    )
    dirs[0] = 0.0
    dirs[3] = 0.0  # an all-zero block still gets its tensor
    meta = {
        "method": "mean",
        "strength_unit": "mean-diff",
        "separation": [0.5, 0.75, 1.0, 1.0, 0.9, 0.6, 0.5],
        "effect_size": [0.0, 0.1234567890123, 3.5, -1.25, 2.0, 0.0, 0.5],
        "norms": np.linalg.norm(dirs, axis=1).tolist(),
        "recommended_range": [2, 4],
        "recommended_strength": 0.8,
        "n_pairs": 12,
        "position": "last",
        "prompts": [["be short", "be long"], ["tersely", "at length"]],
        "pairs_sha256": "ab" * 32,
        "model_sha256": "cd" * 32,
        "created": "2025-01-02T03:04:05+00:00",
        "notes": {"why": "unicode ✓ survives"},
    }
    return SteeringVector(name, dirs, meta)


def write_gguf(path: Path, arch: str, tensors: dict[str, np.ndarray], **kv) -> Path:
    """A GGUF the way other tools write one (gguf-py, as repeng does)."""
    writer = gguf.GGUFWriter(path, arch)
    for key, value in kv.items():
        if isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_uint32(key, value)
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def field(reader: gguf.GGUFReader, key: str):
    f = reader.get_field(key)
    assert f is not None, f"missing key {key}"
    return f.contents()


# ---- round trip and file contents --------------------------------------------------------------


def test_round_trip_is_bit_exact_and_keeps_meta(tmp_path: Path) -> None:
    vec = steer_vector()
    path = tmp_path / "terse.gguf"
    save_vector(vec, path, "llama")
    back = load_vector(path)
    assert back.directions.dtype == np.float32
    assert np.array_equal(back.directions, vec.directions)
    assert back.directions.tobytes() == vec.directions.tobytes()
    assert back.name == "terse"
    assert back.meta == {**vec.meta, "model_hint": "llama"}
    assert back.strength_unit == "mean-diff" and back.recommended_range == (2, 4)


def test_round_trip_with_model_shape_given(tmp_path: Path) -> None:
    path = tmp_path / "v.gguf"
    save_vector(steer_vector(), path, "llama")
    back = load_vector(path, n_layer=N_LAYER, n_embd=N_EMBD, name="renamed")
    assert back.name == "renamed"
    assert back.directions.shape == (N_LAYER, N_EMBD)


def test_file_has_the_llama_cpp_keys_and_one_tensor_per_block(tmp_path: Path) -> None:
    vec = steer_vector()
    path = tmp_path / "v.gguf"
    save_vector(vec, path, "llama")
    reader = gguf.GGUFReader(path)
    assert field(reader, "general.architecture") == "controlvector"
    assert field(reader, "controlvector.model_hint") == "llama"
    assert field(reader, "controlvector.layer_count") == N_LAYER - 1
    names = [t.name for t in reader.tensors]
    assert names == [f"direction.{il}" for il in range(1, N_LAYER)]
    for t in reader.tensors:
        il = int(t.name.split(".")[1])
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(t.shape) == [N_EMBD]
        assert np.array_equal(np.asarray(t.data), vec.directions[il])


def test_file_carries_steer_provenance_keys(tmp_path: Path) -> None:
    vec = steer_vector()
    path = tmp_path / "v.gguf"
    save_vector(vec, path, "llama")
    reader = gguf.GGUFReader(path)
    assert field(reader, "steer.name") == "terse"
    assert field(reader, "steer.method") == "mean"
    assert field(reader, "steer.strength_unit") == "mean-diff"
    assert field(reader, "steer.recommended_range") == [2, 4]
    assert field(reader, "steer.recommended_strength") == 0.8
    assert field(reader, "steer.n_layer") == N_LAYER
    assert field(reader, "steer.n_embd") == N_EMBD
    assert field(reader, "steer.position") == "last"
    assert field(reader, "steer.pairs_sha256") == "ab" * 32
    assert field(reader, "steer.model_sha256") == "cd" * 32
    assert field(reader, "steer.created") == "2025-01-02T03:04:05+00:00"
    np.testing.assert_allclose(field(reader, "steer.separation"), vec.meta["separation"])
    np.testing.assert_allclose(
        field(reader, "steer.effect_size"), vec.meta["effect_size"], rtol=1e-6
    )
    assert json.loads(field(reader, "steer.prompts")) == vec.meta["prompts"]
    assert json.loads(field(reader, "steer.meta"))["notes"] == {"why": "unicode ✓ survives"}


def test_numpy_values_in_meta_are_saved_as_plain_json(tmp_path: Path) -> None:
    vec = SteeringVector(
        "np",
        np.ones((3, 2)),
        {"strength": np.float32(0.5), "range": np.array([1, 2]), "skip": object()},
    )
    path = tmp_path / "np.gguf"
    save_vector(vec, path, "m")
    meta = load_vector(path).meta
    assert meta["strength"] == 0.5 and meta["range"] == [1, 2]
    assert "skip" not in meta


def test_created_is_recorded_even_without_meta(tmp_path: Path) -> None:
    path = tmp_path / "bare.gguf"
    save_vector(SteeringVector("bare", np.zeros((3, 2)), {}), path, "")
    reader = gguf.GGUFReader(path)
    assert field(reader, "steer.created").startswith("20")
    assert field(reader, "controlvector.model_hint") == ""
    assert load_vector(path).strength_unit == "raw"


# ---- files from other tools --------------------------------------------------------------------


def test_cvector_generator_style_file_loads_raw_without_shift(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    tensors = {
        f"direction.{il}": rng.normal(size=N_EMBD).astype(np.float32) for il in range(1, N_LAYER)
    }
    writer = gguf.GGUFWriter(tmp_path / "cvec.gguf", "controlvector")
    writer.add_string("controlvector.model_hint", "llama")
    writer.add_int32("controlvector.layer_count", len(tensors))
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    vec = load_vector(tmp_path / "cvec.gguf", n_layer=N_LAYER, n_embd=N_EMBD)
    assert vec.name == "cvec"
    assert vec.strength_unit == "raw"
    assert vec.recommended_range == (1, N_LAYER - 1)
    assert vec.recommended_strength == 1.0
    assert vec.meta["model_hint"] == "llama"
    assert not vec.directions[0].any()
    for il in range(1, N_LAYER):
        assert np.array_equal(vec.directions[il], tensors[f"direction.{il}"])


def test_repeng_style_partial_file_maps_direction_n_to_block_n(tmp_path: Path) -> None:
    # repeng writes uint32 layer_count, layers in descending order, often only some layers
    rng = np.random.default_rng(2)
    layers = [5, 4, 3]
    tensors = {f"direction.{il}": rng.normal(size=N_EMBD).astype(np.float32) for il in layers}
    path = write_gguf(
        tmp_path / "repeng.gguf",
        "controlvector",
        tensors,
        **{"controlvector.model_hint": "mistral", "controlvector.layer_count": len(layers)},
    )
    vec = load_vector(path, n_layer=N_LAYER, n_embd=N_EMBD)
    assert vec.directions.shape == (N_LAYER, N_EMBD)
    assert vec.recommended_range == (3, 5)
    for il in range(N_LAYER):
        expected = tensors.get(f"direction.{il}", np.zeros(N_EMBD, dtype=np.float32))
        assert np.array_equal(vec.directions[il], expected), il
    assert load_vector(path).n_layer == 6, "without a model, the deepest block decides"


def test_f16_directions_are_converted(tmp_path: Path) -> None:
    data = np.array([0.5, -1.25, 3.0, 65504.0], dtype=np.float16)
    path = write_gguf(tmp_path / "h.gguf", "controlvector", {"direction.1": data})
    vec = load_vector(path)
    assert vec.directions.dtype == np.float32
    assert np.array_equal(vec.directions[1], data.astype(np.float32))


# ---- bad files ---------------------------------------------------------------------------------


def assert_one_line_error(path: Path, fragment: str, **kwargs) -> str:
    with pytest.raises(VectorFileError) as err:
        load_vector(path, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    assert fragment in message, message
    return message


def test_missing_file(tmp_path: Path) -> None:
    assert_one_line_error(tmp_path / "nope.gguf", "does not exist")


def test_directory(tmp_path: Path) -> None:
    assert_one_line_error(tmp_path, "is a directory")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    assert_one_line_error(path, "empty")


def test_not_a_gguf(tmp_path: Path) -> None:
    path = tmp_path / "notes.gguf"
    path.write_text("positive\tnegative\n")
    assert_one_line_error(path, "not a GGUF")


@pytest.mark.parametrize("keep", [5, 30, 100, 0.5, "inside the last tensor"])
def test_truncated_file(tmp_path: Path, keep: float | str) -> None:
    whole = tmp_path / "whole.gguf"
    save_vector(steer_vector(), whole, "llama")
    data = whole.read_bytes()
    if isinstance(keep, str):
        last = gguf.GGUFReader(whole).tensors[-1]
        cut = last.data_offset + last.n_bytes - 4  # (the file may end in alignment padding)
    else:
        cut = int(len(data) * keep) if isinstance(keep, float) else keep
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[:cut])
    assert_one_line_error(path, "truncated")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values(tmp_path: Path, bad: float) -> None:
    data = np.ones(N_EMBD, dtype=np.float32)
    data[3] = bad
    path = write_gguf(tmp_path / "nan.gguf", "controlvector", {"direction.2": data})
    assert_one_line_error(path, "NaN or Inf")


def test_width_must_match_the_model(tmp_path: Path) -> None:
    path = tmp_path / "wide.gguf"
    save_vector(steer_vector(), path, "llama")
    message = assert_one_line_error(path, "wide", n_embd=N_EMBD + 1)
    assert str(N_EMBD) in message and str(N_EMBD + 1) in message


def test_widths_must_agree_within_a_file(tmp_path: Path) -> None:
    tensors = {"direction.1": np.ones(4, np.float32), "direction.2": np.ones(5, np.float32)}
    path = write_gguf(tmp_path / "mixed.gguf", "controlvector", tensors)
    assert_one_line_error(path, "direction.2 is 5 wide")


def test_block_past_the_model(tmp_path: Path) -> None:
    path = tmp_path / "deep.gguf"
    save_vector(steer_vector(), path, "llama")
    assert_one_line_error(path, "past the model's last steerable block 3", n_layer=4)


def test_block_zero_is_refused(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "b0.gguf", "controlvector", {"direction.0": np.ones(3, "f4")})
    assert_one_line_error(path, "block 0")


@pytest.mark.parametrize("name", ["direction.x", "direction.-1", "blk.1.weight", "direction"])
def test_bad_tensor_names(tmp_path: Path, name: str) -> None:
    path = write_gguf(tmp_path / "names.gguf", "controlvector", {name: np.ones(3, np.float32)})
    assert_one_line_error(path, "not named direction.N")


def test_no_tensors(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "hollow.gguf", "controlvector", {})
    assert_one_line_error(path, "no direction tensors")


@pytest.mark.parametrize(
    "data", [np.ones(4, dtype=np.int32), np.ones(4, dtype=np.float64), np.ones((2, 4), "f4")]
)
def test_unsupported_tensor_types_and_shapes(tmp_path: Path, data: np.ndarray) -> None:
    path = write_gguf(tmp_path / "typed.gguf", "controlvector", {"direction.1": data})
    message = assert_one_line_error(path, "direction.1")
    assert "F32" in message or "1-D" in message


def test_a_model_gguf_is_recognised(tmp_path: Path) -> None:
    tensors = {"token_embd.weight": np.ones((4, 3), np.float32)}
    path = write_gguf(tmp_path / "model.gguf", "llama", tensors, **{"llama.block_count": 2})
    assert_one_line_error(path, "is a model (llama), not a control vector")


def test_other_architectures_are_refused(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "odd.gguf", "lora", {"direction.1": np.ones(3, np.float32)})
    assert_one_line_error(path, "not a control vector")


def test_damaged_steer_meta(tmp_path: Path) -> None:
    path = write_gguf(
        tmp_path / "meta.gguf",
        "controlvector",
        {"direction.1": np.ones(3, np.float32)},
        **{"steer.meta": "{not json"},
    )
    assert_one_line_error(path, "steer.meta")


# ---- atomic saves ------------------------------------------------------------------------------


def test_save_leaves_only_the_target(tmp_path: Path) -> None:
    save_vector(steer_vector(), tmp_path / "v.gguf", "llama")
    save_vector(steer_vector("again"), tmp_path / "v.gguf", "llama")  # overwrite
    assert sorted(os.listdir(tmp_path)) == ["v.gguf"]
    assert load_vector(tmp_path / "v.gguf").name == "again"


@pytest.mark.parametrize("stage", ["write_kv_data_to_file", "write_tensors_to_file"])
def test_failed_save_keeps_the_old_file_and_no_temp(tmp_path: Path, monkeypatch, stage) -> None:
    path = tmp_path / "v.gguf"
    save_vector(steer_vector("old"), path, "llama")
    before = path.read_bytes()

    def boom(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(gguf.GGUFWriter, stage, boom)
    with pytest.raises(OSError, match="disk full"):
        save_vector(steer_vector("new"), path, "llama")
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["v.gguf"]


def test_failed_rename_removes_the_temp_file(tmp_path: Path, monkeypatch) -> None:
    def boom(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="rename failed"):
        save_vector(steer_vector(), tmp_path / "v.gguf", "llama")
    assert os.listdir(tmp_path) == []


def test_save_is_fsynced_before_it_replaces(tmp_path: Path, monkeypatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(
        os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1]
    )
    save_vector(steer_vector(), tmp_path / "v.gguf", "llama")
    assert events[0] == "fsync" and "replace" in events
    assert events[-1] == "fsync", "the directory entry is synced after the rename"


def test_new_files_get_ordinary_permissions(tmp_path: Path) -> None:
    save_vector(steer_vector(), tmp_path / "v.gguf", "llama")
    assert (tmp_path / "v.gguf").stat().st_mode & 0o777 == 0o644
