"""The focus vector: a topic from the written tokens that the instruction made likely.

A reply written under "relate your answer to the sea" is mostly the same plain answer as the
one written without it: only 3-9% of a 48-token reply's tokens become more than a nat likelier
under a topic instruction, and those are the topic's own words (" sea" +12.5 nats, " ships"
+9.8; docs/efficacy.md). Averaging every written token (`--method replies`) drowns them, and
its vectors carried a register but not the topic. So here each positive reply token weighs its
*gain* (log-likelihood under the positive instruction minus under the negative one, measured
by the caller with the unsteered model) less `FLOOR` nats, floored at 0, and the direction is
the weighted mean of the positive tokens minus the mean of all the replies' tokens.

The caller reads every reply after the *bare* question, since the state the vector will act on
has no instruction in it. Strength 1 is `RATIO` of the block's mean token-activation norm at
every block (unit "token-norm"): activations grow ~25x over the default model's blocks, and a
topic pushes evenly only when each block's push is sized to that block. The recipe, the
ratio and the band were set on the sea topic and then run unchanged on food, music and sports
(docs/efficacy.md, "focus").
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from .extract import cross_validated_scores
from .vector import UNIT_TOKEN_NORM, SteeringVector

FLOOR = 1.0  # nats of gain a token needs before it weighs anything
RATIO = 0.09  # strength 1 as a share of the block's mean token-activation norm


def token_weights(gains: list[np.ndarray], floor: float = FLOOR) -> list[np.ndarray]:
    """Each positive reply's per-token weights: gain less `floor`, at least 0. An empty reply
    (read at its prompt's last token, one row) weighs nothing."""
    return [
        np.maximum(np.asarray(g, dtype=np.float64) - floor, 0.0) if len(g) else np.zeros(1)
        for g in gains
    ]


def focus_band(n_layer: int) -> tuple[int, int]:
    """The blocks a focus vector steers: a sixth of the model, starting a sixth of the way in
    (5-9 of the default model's 30, where the sea recipe was set; deeper bands broke the text
    before the topic showed)."""
    if n_layer < 2:
        raise ValueError(f"need a model with at least 2 blocks to steer, got n_layer={n_layer}")
    width = max(1, round(n_layer / 6))
    start = min(max(1, round(n_layer / 6)), n_layer - 1)
    return start, min(start + width - 1, n_layer - 1)


def focus_directions(
    pos_rows: list[np.ndarray],
    neg_rows: list[np.ndarray],
    weights: list[np.ndarray],
    ratio: float = RATIO,
) -> np.ndarray:
    """(n_layer, n_embd): the weighted mean of the positive replies' token rows minus the mean
    of every reply's rows, each block scaled to `ratio` x its mean row norm; block 0 is zero.

    `pos_rows`/`neg_rows` hold one (tokens, n_layer, n_embd) array per reply; `weights` one
    weight per positive row."""
    positive = np.concatenate(pos_rows).astype(np.float64)
    every = np.concatenate([positive, *(r.astype(np.float64) for r in neg_rows)])
    w = np.concatenate(weights)
    if w.shape[0] != positive.shape[0]:
        raise ValueError(f"{w.shape[0]} token weights for {positive.shape[0]} positive rows")
    if not w.sum() > 0:
        raise ValueError(
            "no written token became a nat likelier under the positive instruction than under "
            "the negative one: nothing to focus on; make the instructions differ in what the "
            "reply should contain, or use --method mean"
        )
    raw = np.tensordot(w, positive, axes=1) / w.sum() - every.mean(axis=0)
    scale = ratio * np.linalg.norm(every, axis=2).mean(axis=0)
    norms = np.linalg.norm(raw, axis=1)
    out = raw / np.where(norms > 0, norms, 1.0)[:, None] * scale[:, None]
    out[0] = 0.0
    return out.astype(np.float32)


def reply_means(rows: list[np.ndarray], weights: list[np.ndarray] | None = None) -> np.ndarray:
    """(n_replies, n_layer, n_embd): each reply's (weighted) mean row, for the held-out
    scores; a reply whose weights are all 0 falls back to its plain mean."""
    out = []
    for i, r in enumerate(rows):
        w = None if weights is None else weights[i]
        if w is not None and w.sum() > 0:
            out.append(np.tensordot(w, r.astype(np.float64), axes=1) / w.sum())
        else:
            out.append(r.astype(np.float64).mean(axis=0))
    return np.stack(out)


def build_focus_vector(
    name: str,
    pos_rows: list[np.ndarray],
    neg_rows: list[np.ndarray],
    gains: list[np.ndarray],
    meta: dict | None = None,
    ratio: float = RATIO,
    floor: float = FLOOR,
) -> SteeringVector:
    """The focus vector of paired replies (one row array per reply, positives and negatives in
    the same order) and the positive replies' per-token gains.

    Its held-out scores compare each positive reply's weighted mean with its negative
    reply's plain mean, cross-fitted as `build_vector` does; the recommended band is
    `focus_band`, and the strength comes from the caller's calibration."""
    if len(pos_rows) != len(neg_rows) or len(pos_rows) != len(gains):
        raise ValueError(
            f"{len(pos_rows)} positive replies, {len(neg_rows)} negative, {len(gains)} gains"
        )
    if len(pos_rows) < 2:
        raise ValueError(f"need at least 2 reply pairs, got {len(pos_rows)}")
    weights = token_weights(gains, floor)
    directions = focus_directions(pos_rows, neg_rows, weights, ratio)
    holdout, seed = 0.33, 0
    separation, effect_size = cross_validated_scores(
        reply_means(pos_rows, weights), reply_means(neg_rows), "mean", holdout, seed
    )
    every = np.concatenate([np.asarray(g, dtype=np.float64) for g in gains if len(g)] or [[0.0]])
    measured = {
        "method": "focus",
        "strength_unit": UNIT_TOKEN_NORM,
        "n_pairs": len(pos_rows),
        "holdout": holdout,
        "seed": seed,
        "separation": separation,
        "effect_size": effect_size,
        "norms": np.linalg.norm(directions.astype(np.float64), axis=1).tolist(),
        "focus": {
            "floor_nats": floor,
            "ratio": ratio,
            "weighted_tokens": int(sum(int(np.count_nonzero(w)) for w in weights)),
            "positive_tokens": int(sum(len(g) for g in gains)),
            "gain_over_floor_share": round(float(np.mean(every > floor)), 4),
        },
    }
    defaults = {
        "recommended_range": list(focus_band(directions.shape[0])),
        "recommended_strength": 1.0,
        "recommended_mode": "content",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return SteeringVector(name, directions, {**defaults, **(meta or {}), **measured})
