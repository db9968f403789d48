"""Projection as a rank-1 LoRA (vectors/lora.py): the maths, the file, the tensor index.

Pure logic: no llama.cpp here (the model file is only read as a GGUF file where needed).
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from engine.model import default_model_path
from repl.steering import Active
from vectors import SteeringVector
from vectors.lora import (
    DEFAULT_TARGETS,
    AdapterError,
    adapter_key,
    build_adapter,
    load_adapter,
    parse_targets,
    project_recommendation,
    projection_pair,
    read_weights,
    save_adapter,
    tensor_index,
    unit_directions,
)


def test_lora_update_is_the_projection() -> None:
    """W + s * B A equals (I - s v vT) W, and at s = 1 the output has no component along v."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(24, 40)).astype(np.float32)
    v = rng.normal(size=24)
    v = (v / np.linalg.norm(v)).astype(np.float32)
    a, b = projection_pair(weight, v)
    assert a.shape == (1, 40) and b.shape == (24, 1)
    for s in (1.0, 0.5, -2.0):
        updated = weight.astype(np.float64) + s * (b.astype(np.float64) @ a.astype(np.float64))
        expected = (np.eye(24) - s * np.outer(v, v)) @ weight.astype(np.float64)
        np.testing.assert_allclose(updated, expected, rtol=0, atol=1e-5)
    x = rng.normal(size=40)
    y = (weight.astype(np.float64) + b.astype(np.float64) @ a.astype(np.float64)) @ x
    assert abs(float(v @ y)) < 1e-4 * np.linalg.norm(weight @ x)
    assert abs(float(v @ (weight @ x))) > 0.1  # there was something to remove


def test_unit_directions_and_zero_rows() -> None:
    dirs = np.zeros((6, 8), dtype=np.float32)
    dirs[2:5] = np.arange(1, 9, dtype=np.float32)
    vec = SteeringVector("v", dirs)
    units = unit_directions(vec, (2, 4))
    assert sorted(units) == [2, 3, 4]
    assert all(abs(np.linalg.norm(u) - 1) < 1e-6 for u in units.values())
    with pytest.raises(AdapterError, match="zero at block 5"):
        unit_directions(vec, (4, 5))


def test_parse_targets() -> None:
    assert parse_targets("ffn_down") == ("ffn_down",)
    assert parse_targets("attn_output, ffn_down") == ("ffn_down", "attn_output")
    for bad in ("", "ffn_up", "ffn_down,attn"):
        with pytest.raises(ValueError, match="targets must be"):
            parse_targets(bad)


def test_active_records_round_trip() -> None:
    """Add mode keeps the old three keys (old sessions read the same); project adds two."""
    add = Active(0.5, (9, 13))
    assert add.describe("t") == {"name": "t", "strength": 0.5, "layers": [9, 13]}
    assert Active.from_record(add.describe("t")) == add
    proj = Active(1.0, (9, 13), "project", ("attn_output",))
    record = proj.describe("t")
    assert record["mode"] == "project" and record["targets"] == ["attn_output"]
    assert Active.from_record(record) == proj


def test_recommendation_measured_or_rule() -> None:
    dirs = np.ones((30, 4), dtype=np.float32)
    vec = SteeringVector("v", dirs, {"recommended_range": [9, 13]})
    rule = project_recommendation(vec, 30)
    assert (rule.strength, rule.layers, rule.targets, rule.source) == (
        1.0,
        (9, 13),
        DEFAULT_TARGETS,
        "rule",
    )
    vec.meta["project"] = {"strength": 1.5, "layers": [8, 12], "targets": ["ffn_down"]}
    measured = project_recommendation(vec, 30)
    assert (measured.strength, measured.layers, measured.targets, measured.source) == (
        1.5,
        (8, 12),
        ("ffn_down",),
        "measured",
    )
    vec.meta["project"] = {"strength": "x", "layers": [0, 99]}
    assert project_recommendation(vec, 30).source == "rule"


def test_tensor_index_matches_gguf_reader() -> None:
    """The fast index reads the same tensors, types and data as gguf's full reader."""
    path = default_model_path()
    index = tensor_index(path)
    reader = gguf.GGUFReader(path)
    assert len(index) == len(reader.tensors)
    name = "blk.9.ffn_down.weight"
    tensor = next(t for t in reader.tensors if t.name == name)
    assert index[name].ne == tuple(int(n) for n in tensor.shape)
    assert index[name].offset == tensor.data_offset
    ours = read_weights(path, [name], index)[name]
    theirs = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    assert np.array_equal(ours, theirs)


def test_adapter_file_round_trip(tmp_path) -> None:
    """The file llama.cpp reads: LoRA keys, tensor shapes (ggml ne [n_in, 1] / [1, n_out])."""
    path = default_model_path()
    rng = np.random.default_rng(1)
    vec = SteeringVector("t", rng.normal(size=(30, 576)).astype(np.float32))
    adapter = build_adapter(vec, path, (9, 10), ("ffn_down", "attn_output"))
    out = tmp_path / "t.gguf"
    save_adapter(adapter, out, {"model_sha256": "ab" * 32})
    reader = gguf.GGUFReader(out)
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == 1.0
    assert reader.fields["general.architecture"].contents() == "llama"
    shapes = {t.name: [int(n) for n in t.shape] for t in reader.tensors}
    assert shapes["blk.9.ffn_down.weight.lora_a"] == [1536, 1]
    assert shapes["blk.9.ffn_down.weight.lora_b"] == [1, 576]
    assert shapes["blk.10.attn_output.weight.lora_a"] == [576, 1]
    back = load_adapter(out)
    assert back.meta["layers"] == [9, 10] and back.meta["model_sha256"] == "ab" * 32
    for name, (a, b) in adapter.pairs.items():
        np.testing.assert_array_equal(back.pairs[name][0], a)
        np.testing.assert_array_equal(back.pairs[name][1], b)


def test_adapter_key_tells_settings_apart() -> None:
    vec = SteeringVector("t", np.ones((30, 4), dtype=np.float32))
    doubled = SteeringVector("t", np.full((30, 4), 2, np.float32))
    base = adapter_key(vec, "m", (9, 13), ("ffn_down",))
    assert base == adapter_key(vec, "m", (9, 13), ("ffn_down",))
    others = {
        adapter_key(vec, "m2", (9, 13), ("ffn_down",)),
        adapter_key(vec, "m", (9, 12), ("ffn_down",)),
        adapter_key(vec, "m", (9, 13), ("attn_output",)),
        adapter_key(doubled, "m", (9, 13), ("ffn_down",)),
    }
    assert base not in others and len(others) == 4


def test_model_mismatch_is_one_clear_error() -> None:
    vec = SteeringVector("t", np.ones((12, 576), dtype=np.float32))
    with pytest.raises(AdapterError, match="12 blocks; the model has 30"):
        build_adapter(vec, default_model_path(), (1, 2))
