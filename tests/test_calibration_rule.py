"""The strength rule /contrast's calibration and /sweep share: pure logic, no model."""

from __future__ import annotations

import math

import pytest

from vectors import calibration_prompts, neutral_prompts
from vectors.calibration import (
    MAX_NLL_RATIO,
    MIN_NLL_SLACK,
    Point,
    choose,
    effect_fell,
    is_fluent,
    nll_limit,
    weak_effect,
)

BASE = Point(0.0, 0.8, 0.05, 40.0, effect=-0.2)


def test_the_nll_limit_is_a_ratio_or_an_absolute_allowance() -> None:
    assert nll_limit(2.0) == pytest.approx(2.0 * MAX_NLL_RATIO)  # a high baseline: the ratio
    assert nll_limit(0.55) == pytest.approx(0.55 + MIN_NLL_SLACK)  # short replies: +0.3 nat


@pytest.mark.parametrize(
    ("point", "fluent"),
    [
        (Point(0.3, 0.86, 0.05, 30), True),  # 1.08x: natural
        (Point(0.4, 1.1, 0.15, 25), True),  # exactly +0.3 nat and exactly +0.10 repeats
        (Point(0.5, 1.2, 0.05, 20), False),  # 1.5x
        (Point(1.0, 2.16, 0.0, 12), False),  # 2.7x: broken, which the old 1.5-nat rule passed
        (Point(0.5, 0.9, 0.16, 30), False),  # loops more than unsteered + 0.10
        (Point(0.5, 0.9, 0.05, 30, empty=1), False),  # one calibration reply was empty
        (Point(0.5, math.nan, 0.0, 0), False),  # nothing written at all
    ],
)
def test_fluent(point: Point, fluent: bool) -> None:
    assert is_fluent(point, BASE) is fluent


def test_a_baseline_without_a_score_judges_repeats_only() -> None:
    empty_base = Point(0.0, math.nan, 0.0, 0.0)
    assert is_fluent(Point(1.0, 3.0, 0.05, 10), empty_base)
    assert not is_fluent(Point(1.0, 3.0, 0.5, 10), empty_base)


def test_choose_takes_the_strength_where_the_effect_stops_growing() -> None:
    points = [
        Point(0.2, 0.82, 0.05, 35, effect=0.4),
        Point(0.3, 0.86, 0.05, 30, effect=1.0),  # gain 1.2: >= 90% of the best fluent gain
        Point(0.4, 0.95, 0.05, 25, effect=1.1),  # gain 1.3, the best, but little more for it
        Point(0.5, 1.3, 0.05, 20, effect=2.0),  # not fluent: its effect does not count
    ]
    assert choose(points, BASE).strength == 0.3


def test_choose_takes_the_strongest_fluent_point_while_the_effect_still_grows() -> None:
    points = [
        Point(0.3, 0.86, 0.05, 30, effect=0.2),
        Point(0.4, 0.9, 0.05, 25, effect=0.6),
        Point(0.5, 1.05, 0.05, 20, effect=1.2),
        Point(0.7, 1.3, 0.05, 15, effect=2.0),
    ]
    assert choose(points, BASE).strength == 0.5


def test_without_an_effect_measure_or_any_gain_the_strongest_fluent_point_wins() -> None:
    plain = [Point(0.3, 0.86, 0.05, 30), Point(0.4, 0.9, 0.05, 25), Point(0.5, 1.3, 0.05, 20)]
    assert choose(plain, Point(0.0, 0.8, 0.05, 40)).strength == 0.4
    flat = [Point(s, 0.86, 0.05, 30, effect=-0.5) for s in (0.2, 0.3)]
    assert choose(flat, BASE).strength == 0.3


def test_nothing_fluent_chooses_nothing() -> None:
    assert choose([Point(0.3, 2.0, 0.05, 10)], BASE) is None
    assert choose([], BASE) is None


def test_points_round_trip_through_provenance() -> None:
    point = Point(0.35, 0.912345678, 0.0312, 28.3333, 1, 0.456789)
    back = Point.from_dict(point.as_dict())
    assert back.strength == 0.35 and back.empty == 1
    assert back.nll == pytest.approx(0.9123) and back.effect == pytest.approx(0.4568)
    empty = Point.from_dict(Point(0.5, math.nan, 0.0, 0.0).as_dict())
    assert math.isnan(empty.nll) and empty.effect is None


def test_calibration_prompts_are_held_out_from_the_build_prompts() -> None:
    held_out = calibration_prompts()
    assert len(held_out) >= 3
    assert not set(held_out) & set(neutral_prompts())


def _walked(nll: dict[float, float], mode: str = "add") -> tuple[list[float], object]:
    """Run the calibration's ladder walk against made-up NLLs (no model)."""
    from repl.calibrate import Calibration, _walk

    cal = Calibration((9, 13), [], 40, BASE, mode=mode)
    tried = []
    for strength in _walk(cal):
        tried.append(strength)
        cal.points.append(Point(strength, nll[strength], 0.05, 20))
    return tried, cal


def test_the_walk_climbs_while_fluent_and_stops_at_the_first_broken_rung() -> None:
    tried, cal = _walked({0.3: 0.85, 0.4: 0.95, 0.5: 1.3, 0.7: 2.0})
    assert tried == [0.3, 0.4, 0.5] and cal.strength == 0.4


def test_content_mode_walks_a_rung_at_1_1_and_the_other_read_modes_do_not() -> None:
    """Food's window in content mode is 1.1: fluent there, not at 1.25 (docs/efficacy.md)."""
    nll = {1.0: 0.85, 1.1: 0.95, 1.25: 1.3, 1.5: 2.0}
    tried, cal = _walked(nll, "content")
    assert tried == [1.0, 1.1, 1.25] and cal.strength == 1.1
    for mode in ("prompt", "messages"):
        tried, cal = _walked(nll, mode)
        assert tried == [1.0, 1.25] and cal.strength == 1.0, mode
    # a walk that goes past 1.25 goes on to 1.5, as before (sea's: 1.25)
    tried, cal = _walked({1.0: 0.85, 1.1: 0.9, 1.25: 0.95, 1.5: 2.0}, "content")
    assert tried == [1.0, 1.1, 1.25, 1.5] and cal.strength == 1.25


def test_the_walk_steps_down_until_fluent() -> None:
    tried, cal = _walked({0.3: 1.5, 0.2: 1.2, 0.15: 0.9, 0.1: 0.85})
    assert tried == [0.3, 0.2, 0.15] and cal.strength == 0.15


def test_when_nothing_is_fluent_the_gentlest_rung_is_recommended_and_said() -> None:
    tried, cal = _walked({s: 3.0 for s in (0.3, 0.2, 0.15, 0.1)})
    assert tried == [0.3, 0.2, 0.15, 0.1]
    assert cal.chosen is None and cal.strength == 0.1
    assert cal.meta()["calibration"]["chosen"] is None


def test_the_walk_stops_climbing_where_the_effect_falls() -> None:
    """Past the rung where the effect stops growing, stronger rungs are only measured to be passed
    over (the plateau choice takes a weaker one), so the walk stops there, fluent or not."""
    from repl.calibrate import Calibration, _walk

    effects = {0.3: 0.2, 0.4: 0.6, 0.5: 0.5, 0.7: 2.0}
    cal = Calibration((9, 13), [], 40, BASE)
    tried = []
    for strength in _walk(cal):
        tried.append(strength)
        cal.points.append(Point(strength, 0.85, 0.05, 20, effect=effects[strength]))
    assert tried == [0.3, 0.4, 0.5] and cal.strength == 0.4


def test_effect_fell_needs_two_measured_effects() -> None:
    assert not effect_fell([Point(0.3, 0.8, 0.05, 20, effect=0.5)])
    assert not effect_fell([Point(0.3, 0.8, 0.05, 20), Point(0.4, 0.8, 0.05, 20, effect=0.1)])
    assert not effect_fell([Point(0.3, 0.8, 0.05, 20, effect=0.5)] * 2)  # level is not a fall
    assert effect_fell(
        [Point(0.3, 0.8, 0.05, 20, effect=0.5), Point(0.4, 0.8, 0.05, 20, effect=0.4)]
    )


def test_an_effect_too_small_to_show_a_plateau_leaves_the_pick_to_fluency() -> None:
    # excitement's calibration (docs/efficacy.md): gains of 0.03-0.06 nat/token, a "peak" at 0.5
    # by 0.01; its marker on unseen questions passed at 0.7 and not at 0.5
    base = Point(0.0, 0.53, 0.01, 40, effect=-0.279)
    tone = [
        Point(0.3, 0.54, 0.0, 40, effect=-0.249),
        Point(0.5, 0.57, 0.02, 40, effect=-0.221),
        Point(0.7, 0.70, 0.0, 40, effect=-0.232),
        Point(1.0, 1.20, 0.0, 40, effect=+0.059),  # the effect jumps, but not fluent
    ]
    pick = choose(tone, base)
    assert pick.strength == 0.7 and weak_effect(tone, base) == pytest.approx(0.058)
    # the same points with every gain ten times larger: the plateau decides again
    big = [
        Point(p.strength, p.nll, p.repeat, p.tokens, effect=-0.279 + 10 * (p.effect + 0.279))
        for p in tone
    ]
    assert choose(big, base).strength == 0.5 and weak_effect(big, base) is None
    # terse's: +0.32 at its pick
    terse = [Point(0.3, 0.7, 0.0, 35, effect=0.0), Point(0.4, 0.82, 0.0, 31, effect=+0.14)]
    assert weak_effect(terse, Point(0.0, 0.55, 0.0, 40, effect=-0.18)) is None
    # nothing fluent, or no effect measured: nothing to say
    assert weak_effect([Point(0.7, 3.0, 0.0, 40, effect=0.0)], base) is None
    assert weak_effect([Point(0.3, 0.54, 0.0, 40)], Point(0.0, 0.53, 0.01, 40)) is None


def test_a_weak_effect_that_falls_does_not_stop_the_walk() -> None:
    """A fall of 0.01 nat/token among gains under WEAK_EFFECT is noise: the walk climbs until
    the replies stop being fluent, and the strongest fluent rung is recommended."""
    from repl.calibrate import Calibration, _walk

    effects = {0.3: -0.17, 0.4: -0.16, 0.5: -0.15, 0.7: -0.16, 1.0: -0.1}
    nll = {0.3: 0.85, 0.4: 0.86, 0.5: 0.9, 0.7: 0.95, 1.0: 1.4}
    cal = Calibration((9, 13), [], 40, BASE)
    tried = []
    for strength in _walk(cal):
        tried.append(strength)
        cal.points.append(Point(strength, nll[strength], 0.05, 20, effect=effects[strength]))
    assert tried == [0.3, 0.4, 0.5, 0.7, 1.0] and cal.strength == 0.7
    assert not effect_fell(cal.points[:4], BASE) and effect_fell(cal.points[:4])


def test_report_says_when_a_focus_vector_recommends_less_than_its_pick() -> None:
    """`/contrast --method focus` recommends FOCUS_MARGIN x the calibration's pick; the
    report marks the pick and says why the recommendation is below it."""
    import numpy as np

    from repl.steer_commands import calibration_report
    from vectors import SteeringVector
    from vectors.calibration import FOCUS_MARGIN

    base, pick = Point(0.0, 0.53, 0.01, 40, effect=-0.1), Point(1.0, 0.62, 0.03, 31, effect=-0.1)
    cal = {
        "baseline": base.as_dict(),
        "points": [pick.as_dict()],
        "chosen": 1.0,
        "layers": [5, 9],
        "mode": "prompt",
        "max_tokens": 40,
        "prompts": ["q"] * 3,
    }
    meta = {"calibration": cal, "recommended_strength": FOCUS_MARGIN, "recommended_range": [5, 9]}
    vec = SteeringVector("sports", np.zeros((4, 2)), meta)
    assert not any(line.startswith("  recommending") for line in calibration_report(vec))
    cal["margin"] = FOCUS_MARGIN
    text = calibration_report(vec)
    assert any(line.endswith("fluent <- pick") for line in text)
    assert not any(line.endswith("<- recommended") for line in text)
    assert f"  recommending {FOCUS_MARGIN:g}: {FOCUS_MARGIN:g} x the pick" in "\n".join(text)


def test_a_margin_scales_the_recommendation_and_is_recorded() -> None:
    from repl.calibrate import Calibration

    base, pick = Point(0.0, 0.53, 0.01, 40, effect=-0.1), Point(1.0, 0.62, 0.03, 31, effect=-0.1)
    plain = Calibration((5, 9), ["q"], 40, base, [pick], mode="prompt")
    assert plain.meta()["recommended_strength"] == 1.0
    assert "margin" not in plain.meta()["calibration"]
    focus = Calibration((5, 9), ["q"], 40, base, [pick], mode="prompt", margin=0.85)
    assert focus.strength == 1.0  # the pick itself is unchanged
    assert focus.meta()["recommended_strength"] == 0.85
    assert focus.meta()["calibration"]["margin"] == 0.85
    assert focus.meta()["calibration"]["chosen"] == 1.0
