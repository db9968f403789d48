"""Choosing a strength: the fluency rule that /contrast's calibration and /sweep share, and the
rule that picks one strength from measured points.

Each point summarises replies made at one strength (mean over prompts):

- ``nll``: mean negative log-likelihood per reply token under the *unsteered* model, for the
  same prompt. Text steering has broken is text the plain model finds unlikely.
- ``repeat``: share of the reply's token 3-grams that repeat an earlier one (loops).
- ``effect`` (optional, label-free): per reply token, how much more likely the reply is under
  the question with the positive instruction appended than under the plain question, both
  scored by the unsteered model. It grows as the replies come to read like the positive
  instruction's, whatever the concept is, so no marker words are needed. (It was first
  measured against the negatively instructed prompt. On six concepts' calibrations, 2026-11-30,
  the plain question chose the same strength for five, and it is one scoring per reply fewer:
  a third of the scoring time.)

Why these thresholds (issue 11, default model, 8 unseen questions, 150-token cap): a terse
vector at strength 0.3 cost 1.08x the unsteered NLL and read naturally, 0.5 cost 1.33x and read
clipped, 0.7 2.0x and 1.0 2.7x were broken. A reader called +0.25 nat/token natural and +1.4
broken, so the old /sweep allowance of 1.5 nat/token passed broken text. Fluent now means an
NLL of at most 1.25x the unsteered replies' or ``MIN_NLL_SLACK`` (+0.3 nat/token) above it,
whichever allows more, at most ``MAX_REPEAT_GAIN`` more repeated 3-grams than unsteered, and
no empty reply. The floor matters for short replies: the calibration's 40-token replies score
0.55 nat/token unsteered against 0.79 for 150-token ones, because a steered reply's departure
is concentrated in its first tokens; there the terse vector at 0.3 cost +0.08 (1.14x) and at
0.4 +0.27 (1.49x), while over 150 tokens 0.3 cost only 1.10x and cut 54%, short of the
60% the issue asks for.

The instruction written in the prompt is the bar a vector is held to, and for a topic or a
tone even the prompt costs fluency: "relate your answer to the sea" made the plain model find
its own replies 1.36x less likely per token (8 unseen questions, 150 tokens), because answering
about migrating birds with ships is unlikely text. So when the calibration also has replies to
the positively instructed prompt (``prompted``), a steered reply may cost as much as they do, up
to ``MAX_PROMPTED_RATIO`` x unsteered: steering is then held to "no less natural than asking".

Among fluent points the chosen strength is the one where the effect stops growing: the weakest
whose effect gain over unsteered reaches ``PLATEAU`` of the best fluent gain. Past that point
more strength costs fluency and buys little. Without an effect measure (pairs files), or when
no fluent point's gain reaches ``WEAK_EFFECT``, it is the strongest fluent point: an effect that
small cannot say where it stops growing. Excitement's gains were +0.03 to +0.06 nat/token at
0.3-0.7 and peaked at 0.5 by 0.01, within the noise of 3 questions; its marker over unseen
questions kept growing to 0.7, which passed where 0.5 did not (docs/efficacy.md). Terse's gain
was +0.32, and its plateau pick held on unseen questions.

For the same reason the calibration's walk up the ladder stops at the first strength whose
effect falls below the one before (`effect_fell`), once some gain has reached ``WEAK_EFFECT``:
the effect has stopped growing there, and the rungs above are measured mostly to be passed
over. Below that size a fall is noise, and the walk climbs on until the replies stop being
fluent (or ``MAX_STEPS`` rungs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

MAX_NLL_RATIO = 1.25
MIN_NLL_SLACK = 0.3  # nat/token
MAX_REPEAT_GAIN = 0.10
PLATEAU = 0.9
MAX_PROMPTED_RATIO = 1.5  # the most the prompt's own cost may raise the NLL limit to
# Effect gains (nat/token) below this are too small to say where the effect stops growing (see
# above). Measured gains at the pick, 3 questions of 40 tokens: terse +0.32, sea +0.12, space
# +0.08, formal +0.07, excited +0.06, sad +0.01 (2026-11-30).
WEAK_EFFECT = 0.1
# A focus vector (vectors/focus.py) steered in prompt mode is recommended at this share of its
# strongest fluent strength: on 40-token replies a topic costs less than over 150 (food at 1:
# 1.42x on 40, 1.65x on 150; sports at 1 loops only in longer replies), and its fluent window
# is narrow (docs/efficacy.md, "--method focus"). In messages mode, which it recommended next,
# the same picks held over 150 tokens (food and sports at 1: 1.21x and 1.16x), so none there,
# nor in content mode, which it recommends now (its calibration answers 80 tokens).
FOCUS_MARGIN = 0.85

RULE = (
    f"fluent = no empty reply, NLL/token under the unsteered model <= {MAX_NLL_RATIO:g}x "
    f"unsteered (or +{MIN_NLL_SLACK:g}, or the positively instructed replies' NLL up to "
    f"{MAX_PROMPTED_RATIO:g}x), repeated 3-grams <= unsteered + {MAX_REPEAT_GAIN:g}; "
    f"chosen = the weakest fluent strength whose effect reaches {PLATEAU:.0%} of the best "
    "fluent effect (the strongest fluent one when there is no effect measure or no fluent gain "
    f"reaches {WEAK_EFFECT:g}); effect = log-likelihood per token under the positively "
    "instructed question minus under the plain one; the walk up stops at the first strength "
    f"that is not fluent or, once a gain has reached {WEAK_EFFECT:g}, whose effect falls"
)
SHORT_RULE = (
    f"fluent: not empty, NLL ≤{MAX_NLL_RATIO:g}x (or +{MIN_NLL_SLACK:g}) unsteered, repeats ≤ "
    f"unsteered +{MAX_REPEAT_GAIN:g}"
)


@dataclass(frozen=True)
class Point:
    """Replies at one strength, summarised (see the module docstring for each measure)."""

    strength: float
    nll: float
    repeat: float
    tokens: float
    empty: int = 0
    effect: float | None = None

    def as_dict(self) -> dict:
        out = asdict(self)
        for key in ("nll", "repeat", "tokens", "effect"):
            if isinstance(out[key], float):
                out[key] = None if math.isnan(out[key]) else round(out[key], 4)
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> Point:
        nll = raw.get("nll")
        return cls(
            float(raw["strength"]),
            math.nan if nll is None else float(nll),
            float(raw.get("repeat", 0.0)),
            float(raw.get("tokens", 0.0)),
            int(raw.get("empty", 0)),
            None if raw.get("effect") is None else float(raw["effect"]),
        )


def recommendation_margin(meta: Mapping[str, Any], mode: str) -> float:
    """The share of the strongest fluent strength a vector is recommended at in `mode`, by
    its recipe: /contrast's calibration and /sweep apply the same one."""
    return FOCUS_MARGIN if meta.get("method") == "focus" and mode == "prompt" else 1.0


def degeneration(tokens: Sequence[int], n: int = 3) -> float:
    """Share of the reply's token n-grams that already occurred earlier in it.

    Steering pushed too far makes a model loop; this rises towards 1 as it does.
    """
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def nll_limit(base_nll: float, prompted_nll: float | None = None) -> float:
    """The highest NLL/token a fluent reply may have, given the unsteered replies' NLL and,
    when known, that of the replies to the positively instructed prompt."""
    limit = max(base_nll * MAX_NLL_RATIO, base_nll + MIN_NLL_SLACK)
    if prompted_nll is not None and math.isfinite(prompted_nll):
        limit = max(limit, min(prompted_nll, base_nll * MAX_PROMPTED_RATIO))
    return limit


def is_fluent(point: Point, baseline: Point, prompted: Point | None = None) -> bool:
    """Whether replies at `point` still read like the model's own (see module docstring)."""
    if point.empty or point.tokens <= 0 or not math.isfinite(point.nll):
        return False
    if point.repeat > baseline.repeat + MAX_REPEAT_GAIN + 1e-9:
        return False
    if not math.isfinite(baseline.nll):
        return True
    return point.nll <= nll_limit(baseline.nll, prompted.nll if prompted else None) + 1e-9


def effect_fell(points: Sequence[Point], baseline: Point | None = None) -> bool:
    """Whether the last point's effect is below the one before it, and (given the baseline)
    some point's gain reached ``WEAK_EFFECT``, so the fall is worth stopping for."""
    if len(points) < 2:
        return False
    gains = None if baseline is None else _gains(points, baseline)
    if gains is not None and max(gains) < WEAK_EFFECT:
        return False
    before, last = points[-2].effect, points[-1].effect
    return before is not None and last is not None and last < before


def choose(points: Sequence[Point], baseline: Point, prompted: Point | None = None) -> Point | None:
    """The recommended point: where the effect stops growing among fluent ones, or None."""
    fluent = _fluent(points, baseline, prompted)
    if not fluent:
        return None
    gains = _gains(fluent, baseline)
    if gains is None or max(gains) < WEAK_EFFECT:  # no effect that can show a plateau
        return fluent[-1]
    best = max(gains)
    return next(p for p, gain in zip(fluent, gains, strict=True) if gain >= PLATEAU * best)


def weak_effect(
    points: Sequence[Point], baseline: Point, prompted: Point | None = None
) -> float | None:
    """The best effect gain over unsteered among the fluent points when it is under
    ``WEAK_EFFECT`` (too small to show where the effect stops growing, so `choose` goes by
    fluency alone), else None; None too without an effect measure."""
    gains = _gains(_fluent(points, baseline, prompted), baseline)
    if not gains or max(gains) >= WEAK_EFFECT:
        return None
    return max(gains)


def _fluent(points: Sequence[Point], baseline: Point, prompted: Point | None) -> list[Point]:
    """The fluent points, gentlest first."""
    fluent = (p for p in points if is_fluent(p, baseline, prompted))
    return sorted(fluent, key=lambda p: abs(p.strength))


def _gains(points: Sequence[Point], baseline: Point) -> list[float] | None:
    """Each point's effect gain over unsteered; None when any effect is missing."""
    if baseline.effect is None or any(p.effect is None for p in points):
        return None
    return [p.effect - baseline.effect for p in points]  # type: ignore[operator]
