"""The scoreboard's verdict against the issue's targets (bench/efficacy_bench.py): pure
arithmetic on summarised replies, no model."""

from __future__ import annotations

from bench.efficacy_bench import CONCEPTS, Condition, Result

TOPIC = next(c for c in CONCEPTS if c.kind == "topic")
TERSE = next(c for c in CONCEPTS if c.kind == "verbosity")


def result(concept, unsteered, prompt, steered) -> Result:
    """Markers, NLL and repeats as (marker, nll, rep3) per condition; tokens = marker."""

    def cond(label: str, values: tuple[float, float, float]) -> Condition:
        marker, nll, rep3 = values
        return Condition(label, [], marker=marker, tokens=marker, nll=nll, rep3=rep3)

    return Result(
        concept,
        cond("unsteered", unsteered),
        cond("prompt", prompt),
        cond("steer", steered),
        1.0,
        (9, 13),
        0.0,
        True,
    )


def test_a_topic_passes_at_half_the_prompts_gain_fluently() -> None:
    verdict = result(TOPIC, (0.5, 1.0, 0.2), (4.5, 1.3, 0.2), (2.5, 1.5, 0.3)).verdict()
    assert verdict.startswith("PASS"), verdict
    assert "50% of the prompt's gain" in verdict


def test_a_topic_fails_under_half_the_gain_or_past_either_fluency_bound() -> None:
    short = result(TOPIC, (0.5, 1.0, 0.2), (4.5, 1.3, 0.2), (2.4, 1.0, 0.2)).verdict()
    broken = result(TOPIC, (0.5, 1.0, 0.2), (4.5, 1.3, 0.2), (4.0, 1.51, 0.2)).verdict()
    looping = result(TOPIC, (0.5, 1.0, 0.2), (4.5, 1.3, 0.2), (4.0, 1.0, 0.31)).verdict()
    for verdict in (short, broken, looping):
        assert verdict.startswith("FAIL"), verdict


def test_a_marker_the_prompt_does_not_raise_gives_no_bar_not_a_pass() -> None:
    # the prompt's gain is 0, so "at least half of it" holds for anything: that is no pass
    verdict = result(TOPIC, (0.0, 1.0, 0.2), (0.0, 0.9, 0.6), (0.3, 1.1, 0.2)).verdict()
    assert verdict.startswith("NO BAR"), verdict
    assert "0.00 -> 0.00" in verdict


def test_verbosity_needs_a_60_percent_cut() -> None:
    at_60 = result(TERSE, (100, 1.0, 0.2), (20, 1.2, 0.0), (40, 1.4, 0.1)).verdict()
    at_59 = result(TERSE, (100, 1.0, 0.2), (20, 1.2, 0.0), (41, 1.0, 0.1)).verdict()
    assert at_60.startswith("PASS"), at_60
    assert at_59.startswith("FAIL"), at_59
