"""The llama.cpp steering buffer, layer ranges and `mix` expressions (no model needed)."""

from __future__ import annotations

import ast
import builtins

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import examples
from vectors import SteeringVector, compose, mix, parse_range

N_LAYER, N_EMBD = 30, 8


def vec(name: str, seed: int, **meta) -> SteeringVector:
    dirs = np.random.default_rng(seed).normal(size=(N_LAYER, N_EMBD)).astype(np.float32)
    dirs[0] = 0.0
    return SteeringVector(name, dirs, {"strength_unit": "mean-diff", **meta})


def block(buffer: np.ndarray, il: int) -> np.ndarray:
    """Block il's slice as llama.cpp reads it: offset n_embd * (il - 1)."""
    return buffer[N_EMBD * (il - 1) : N_EMBD * il]


# ---- compose -----------------------------------------------------------------------------------


def test_buffer_is_full_float32_contiguous_and_starts_at_block_one() -> None:
    dirs = np.zeros((N_LAYER, N_EMBD), dtype=np.float32)
    for il in range(N_LAYER):
        dirs[il] = il  # each block's rows hold its own index
    buf = compose([(SteeringVector("idx", dirs, {}), 1.0, (1, N_LAYER - 1))], N_LAYER, N_EMBD)
    assert buf.shape == ((N_LAYER - 1) * N_EMBD,)
    assert buf.dtype == np.float32 and buf.flags["C_CONTIGUOUS"]
    for il in range(1, N_LAYER):
        assert np.all(block(buf, il) == il)


def test_zeros_outside_the_range_and_exact_scaling_inside() -> None:
    v = vec("a", 1)
    buf = compose([(v, 0.5, (4, 9))], N_LAYER, N_EMBD)
    for il in range(1, N_LAYER):
        expected = v.directions[il] * np.float32(0.5) if 4 <= il <= 9 else np.zeros(N_EMBD)
        assert np.array_equal(block(buf, il), expected), il


def test_overlapping_vectors_add_and_negative_strength_subtracts() -> None:
    a, b = vec("a", 1), vec("b", 2)
    buf = compose([(a, 2.0, (3, 10)), (b, -1.0, (8, 12))], N_LAYER, N_EMBD)
    for il in range(1, N_LAYER):
        expected = np.zeros(N_EMBD)
        if 3 <= il <= 10:
            expected = expected + 2.0 * a.directions[il].astype(np.float64)
        if 8 <= il <= 12:
            expected = expected - b.directions[il].astype(np.float64)
        np.testing.assert_allclose(block(buf, il), expected, rtol=1e-6, atol=1e-7)


def test_same_vector_with_opposite_strengths_cancels() -> None:
    a = vec("a", 3)
    buf = compose([(a, 1.5, (2, 20)), (a, -1.5, (2, 20))], N_LAYER, N_EMBD)
    assert not buf.any()


def test_nothing_active_is_all_zeros() -> None:
    buf = compose([], N_LAYER, N_EMBD)
    assert buf.shape == ((N_LAYER - 1) * N_EMBD,) and not buf.any()


def test_compose_names_the_vector_with_the_wrong_shape() -> None:
    small = SteeringVector("tiny-model", np.zeros((12, N_EMBD)), {})
    with pytest.raises(ValueError, match="tiny-model"):
        compose([(vec("ok", 1), 1.0, (1, 3)), (small, 1.0, (1, 3))], N_LAYER, N_EMBD)


@pytest.mark.parametrize("rng", [(0, 3), (5, 4), (1, N_LAYER)])
def test_compose_rejects_unsteerable_ranges(rng: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="layers must look like"):
        compose([(vec("a", 1), 1.0, rng)], N_LAYER, N_EMBD)


@st.composite
def activations(draw):
    count = draw(st.integers(min_value=0, max_value=4))
    items = []
    for i in range(count):
        a = draw(st.integers(min_value=1, max_value=N_LAYER - 1))
        b = draw(st.integers(min_value=a, max_value=N_LAYER - 1))
        strength = draw(st.floats(min_value=-8, max_value=8, allow_nan=False))
        items.append((vec(f"v{i}", draw(st.integers(0, 50))), strength, (a, b)))
    return items


@settings(max_examples=examples(60), deadline=None)
@given(activations())
def test_compose_matches_a_per_block_sum(items) -> None:
    buf = compose(items, N_LAYER, N_EMBD).reshape(N_LAYER - 1, N_EMBD)
    for il in range(1, N_LAYER):
        expected = np.zeros(N_EMBD)
        for v, s, (a, b) in items:
            if a <= il <= b:
                expected += s * v.directions[il].astype(np.float64)
        np.testing.assert_allclose(buf[il - 1], expected, rtol=1e-5, atol=1e-5)


# ---- parse_range -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"), [("3-7", (3, 7)), ("5", (5, 5)), (" 2 - 4 ", (2, 4)), ("1-29", (1, 29))]
)
def test_parse_range_accepts(text: str, expected: tuple[int, int]) -> None:
    assert parse_range(text, 30) == expected


def test_parse_range_message_is_one_helpful_line() -> None:
    with pytest.raises(ValueError) as err:
        parse_range("0-3", 30)
    assert str(err.value) == "layers must look like A-B with 1 <= A <= B <= 29, got '0-3'"


@pytest.mark.parametrize("text", ["0", "5-3", "3-30", "a-b", "", "1-2-3", "-3", "3-", "²", "1.5"])
def test_parse_range_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="1 <= A <= B <= 29") as err:
        parse_range(text, 30)
    assert "\n" not in str(err.value)


# ---- mix ---------------------------------------------------------------------------------------


@pytest.fixture
def library() -> dict[str, SteeringVector]:
    return {
        "terse": vec("terse", 1, recommended_range=[3, 8]),
        "formal": vec("formal", 2, recommended_range=[6, 12]),
        "happy": vec("happy", 3),
    }


def f64(v: SteeringVector) -> np.ndarray:
    return v.directions.astype(np.float64)


@pytest.mark.parametrize(
    ("expr", "combine"),
    [
        ("terse*0.5 - formal", lambda t, f: 0.5 * t - f),
        ("0.5*terse + 2*formal", lambda t, f: 0.5 * t + 2 * f),
        ("-terse", lambda t, f: -t),
        ("+terse", lambda t, f: t),
        ("(terse + formal) / 2", lambda t, f: (t + f) / 2),
        ("terse - -formal", lambda t, f: t + f),
        ("2 * (terse - 3 * formal) / 4", lambda t, f: (t - 3 * f) / 2),
        ("terse + formal - terse", lambda t, f: f),
    ],
)
def test_mix_linear_combinations(library, expr, combine) -> None:
    out = mix(expr, library, "new")
    expected = combine(f64(library["terse"]), f64(library["formal"]))
    np.testing.assert_allclose(out.directions, expected, rtol=1e-6, atol=1e-6)
    assert out.name == "new" and out.directions.dtype == np.float32
    assert not out.directions[0].any()


def test_mix_meta_records_expression_sources_unit_and_covering_range(library) -> None:
    out = mix("terse*0.5 - formal", library, "new")
    assert out.meta["expression"] == "terse*0.5 - formal"
    assert out.meta["sources"] == {"terse": 0.5, "formal": -1.0}
    assert out.strength_unit == "mean-diff"
    assert out.recommended_range == (3, 12)  # smallest band covering 3-8 and 6-12
    assert out.recommended_strength == 1.0


def test_mix_range_ignores_inputs_without_one(library) -> None:
    assert mix("happy + terse", library, "x").recommended_range == (3, 8)
    assert mix("happy", library, "x").recommended_range is None


def test_unknown_name_is_named_and_known_ones_listed(library) -> None:
    with pytest.raises(ValueError) as err:
        mix("terse + snarky", library, "x")
    message = str(err.value)
    assert "snarky" in message and "formal" in message and "terse" in message


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('touch PWNED')",
        "terse.__class__",
        "().__class__.__bases__",
        "terse if 1 else formal",
        "[terse]",
        "terse ** 2",
        "'terse'",
        "lambda: terse",
        "terse @ formal",
        "terse % 2",
        "(x := terse)",
        "True * terse",
        "1j * terse",
        "terse; formal",
        "terse formal",
        "",
    ],
)
def test_mix_refuses_anything_but_linear_arithmetic(library, expr, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as err:
        mix(expr, library, "x")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "PWNED").exists()


def test_mix_never_evaluates_code(library, monkeypatch) -> None:
    real_compile = builtins.compile

    def forbidden(*args, **kwargs):
        raise AssertionError("mix must not call eval or exec")

    def ast_only_compile(source, filename, mode, flags=0, *args, **kwargs):
        # ast.parse is compile(..., PyCF_ONLY_AST): a parse tree, never code objects
        if not flags & ast.PyCF_ONLY_AST:
            raise AssertionError("mix must not compile code")
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    monkeypatch.setattr(builtins, "compile", ast_only_compile)
    out = mix("terse - formal", library, "x")
    monkeypatch.undo()
    np.testing.assert_allclose(out.directions, f64(library["terse"]) - f64(library["formal"]))


@pytest.mark.parametrize(
    ("expr", "match"),
    [
        ("terse * formal", "multiply two vectors"),
        ("1 / terse", "divide by a vector"),
        ("terse / 0", "division by zero"),
        ("terse + 2", "plain number"),
        ("2 * 3", "names no vector"),
        ("1e308 * terse * 1e308", "overflows"),
        ("1e300 * terse", "overflows"),
    ],
)
def test_mix_rejects_meaningless_combinations(library, expr, match) -> None:
    with pytest.raises(ValueError, match=match):
        mix(expr, library, "x")


def test_mix_refuses_different_shapes_and_units(library) -> None:
    other_model = SteeringVector("wide", np.zeros((N_LAYER, N_EMBD * 2)), {})
    with pytest.raises(ValueError, match="wide"):
        mix("terse + wide", {**library, "wide": other_model}, "x")
    raw = SteeringVector("raw", np.zeros((N_LAYER, N_EMBD)), {"strength_unit": "raw"})
    with pytest.raises(ValueError, match="unit"):
        mix("terse - raw", {**library, "raw": raw}, "x")


def test_mix_of_raw_vectors_stays_raw() -> None:
    a = SteeringVector("a", np.ones((4, 2)), {})
    out = mix("a * 3", {"a": a}, "b")
    assert out.strength_unit == "raw"
    assert np.all(out.directions[1:] == 3.0) and not out.directions[0].any()


coefficient = st.floats(min_value=-100, max_value=100, allow_nan=False).filter(
    lambda x: x == 0 or abs(x) > 1e-6
)


@settings(max_examples=examples(60), deadline=None)
@given(coefficient, coefficient)
def test_mix_equals_the_written_combination(a: float, b: float) -> None:
    lib = {"x": vec("x", 5), "y": vec("y", 6)}
    out = mix(f"({a!r}) * x + y * ({b!r})", lib, "z")
    expected = a * f64(lib["x"]) + b * f64(lib["y"])
    expected[0] = 0.0
    np.testing.assert_allclose(out.directions, expected, rtol=1e-5, atol=1e-4)
