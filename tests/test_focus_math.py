"""The focus vector's maths (vectors/focus.py), without the model: which tokens weigh, the
band, the per-block scale and the held-out scores."""

from __future__ import annotations

import numpy as np
import pytest

from vectors.focus import (
    RATIO,
    build_focus_vector,
    focus_band,
    focus_directions,
    reply_means,
    token_weights,
)
from vectors.vector import UNIT_TOKEN_NORM

N_LAYER, N_EMBD = 4, 8


def test_weights_count_only_gains_past_the_floor() -> None:
    weights = token_weights([np.array([0.5, 1.0, 3.5, -2.0]), np.array([])])
    assert weights[0].tolist() == [0.0, 0.0, 2.5, 0.0]
    assert weights[1].tolist() == [0.0]  # an empty reply: one row, weighing nothing


@pytest.mark.parametrize("n_layer, band", [(30, (5, 9)), (2, (1, 1)), (3, (1, 1)), (12, (2, 3))])
def test_band_is_a_sixth_of_the_model_a_sixth_of_the_way_in(n_layer, band) -> None:
    assert focus_band(n_layer) == band


def test_band_always_fits_the_model() -> None:
    for n_layer in range(2, 200):
        a, b = focus_band(n_layer)
        assert 1 <= a <= b <= n_layer - 1
    with pytest.raises(ValueError, match="at least 2 blocks"):
        focus_band(1)


def planted(seed: int = 0):
    """Replies of 5 tokens per pair; the positive replies' tokens 1 and 3 carry `topic`."""
    rng = np.random.default_rng(seed)
    topic = np.zeros(N_EMBD)
    topic[2] = 1.0
    pos, neg, gains = [], [], []
    for _ in range(6):
        p = rng.normal(size=(5, N_LAYER, N_EMBD))
        p[[1, 3]] += 10 * topic
        pos.append(p)
        neg.append(rng.normal(size=(4, N_LAYER, N_EMBD)))
        gains.append(np.array([0.2, 6.0, 0.0, 4.0, 0.9]))
    return pos, neg, gains, topic


def test_direction_follows_the_tokens_the_instruction_raised() -> None:
    pos, neg, gains, topic = planted()
    directions = focus_directions(pos, neg, token_weights(gains))
    assert np.all(directions[0] == 0)
    for il in range(1, N_LAYER):
        unit = directions[il] / np.linalg.norm(directions[il])
        assert unit @ topic > 0.95


def test_each_block_is_scaled_to_its_own_activations() -> None:
    pos, neg, gains, _ = planted()
    for rows in (pos, neg):  # block 2's activations 100x larger than the others
        for r in rows:
            r[:, 2] *= 100
    directions = focus_directions(pos, neg, token_weights(gains), ratio=0.2)
    every = np.concatenate(pos + neg)
    expected = 0.2 * np.linalg.norm(every, axis=2).mean(axis=0)
    np.testing.assert_allclose(np.linalg.norm(directions[1:], axis=1), expected[1:], rtol=1e-5)


def test_no_raised_token_is_a_clear_error() -> None:
    pos, neg, _, _ = planted()
    flat = [np.full(5, 0.3) for _ in pos]
    with pytest.raises(ValueError, match="nothing to focus on"):
        focus_directions(pos, neg, token_weights(flat))
    with pytest.raises(ValueError, match="3 token weights for 30 positive rows"):
        focus_directions(pos, neg, [np.ones(3)])


def test_reply_means_fall_back_to_the_plain_mean() -> None:
    rows = [np.arange(6.0).reshape(3, 1, 2)]
    assert reply_means(rows, [np.array([0.0, 0.0, 1.0])])[0, 0].tolist() == [4.0, 5.0]
    assert reply_means(rows, [np.zeros(3)])[0, 0].tolist() == [2.0, 3.0]
    assert reply_means(rows)[0, 0].tolist() == [2.0, 3.0]


def test_built_vector_records_its_recipe_and_separates() -> None:
    pos, neg, gains, _ = planted()
    vec = build_focus_vector("sea", pos, neg, gains, meta={"positive": "p", "method": "x"})
    meta = vec.meta
    assert meta["method"] == "focus" and meta["strength_unit"] == UNIT_TOKEN_NORM
    assert meta["positive"] == "p" and meta["recommended_mode"] == "content"
    assert meta["recommended_range"] == [1, 1] and meta["n_pairs"] == 6
    assert meta["focus"]["weighted_tokens"] == 12 and meta["focus"]["positive_tokens"] == 30
    assert meta["focus"]["ratio"] == RATIO and meta["focus"]["gain_over_floor_share"] == 0.4
    assert min(meta["separation"][1:]) == 1.0  # every held-out pair on the right side
    with pytest.raises(ValueError, match="6 positive replies, 5 negative"):
        build_focus_vector("sea", pos, neg[:5], gains)
