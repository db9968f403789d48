"""The ready-made vectors shipped as package data: calibrated, for the default model, by name."""

from __future__ import annotations

import pytest

from repl.core import Core
from vectors import bundled_names, bundled_path, load_vector

READY = bundled_names()


def test_steer_ships_ready_made_vectors() -> None:
    # issue 11: verbosity, formality, two tones and two topics (sea: it passes on both sets of
    # questions with DRY on every condition; docs/efficacy.md, "DRY"; food: at plain greedy
    # too, at its pick on content mode's finer ladder)
    assert {"terse", "formal", "excited", "cheerful", "sea", "food"} <= set(READY)


def test_food_recommends_the_content_ladders_own_rung(core: Core) -> None:
    """1.1 is on content mode's ladder alone: the rung where food passes on every question set
    measured (docs/efficacy.md, "Stronger rungs with DRY, and a finer ladder")."""
    vec = load_vector(bundled_path("food"), core.model.n_layer, core.model.n_embd)
    assert (vec.recommended_strength, vec.meta["recommended_mode"]) == (1.1, "content")
    assert [p["strength"] for p in vec.meta["calibration"]["points"]] == [1.0, 1.1, 1.25]


@pytest.mark.parametrize("name", READY)
def test_each_is_calibrated_for_the_default_model(core: Core, name: str) -> None:
    vec = load_vector(bundled_path(name), core.model.n_layer, core.model.n_embd)
    assert vec.meta["model_sha256"] == core.steering.model_sha256()
    cal = vec.meta["calibration"]
    assert cal["chosen"] == vec.recommended_strength and cal["points"]
    assert vec.meta["built_by"].startswith(f"/contrast {name} ")
    assert vec.meta["positive"] and vec.meta["negative"]


def test_vector_list_shows_them_and_load_takes_a_name(core: Core) -> None:
    listing = core.submit("/vector list").info[0]
    assert "ready-made (for the default model" in listing and "terse" in listing
    out = core.submit("/vector load terse")
    assert not out.errors, out.errors
    vec = core.steering.vectors["terse"]
    assert out.info[0].startswith(
        f"loaded 'terse'; apply it: /steer terse {vec.recommended_strength:g}"
    )
    assert "terse" not in core.submit("/vector list").info[0].split("ready-made")[-1]


def test_vector_show_says_when_the_effect_was_too_small_to_show_a_plateau(core: Core) -> None:
    out = core.submit("/vector load excited")
    assert not out.errors, out.errors
    vec = core.steering.vectors["excited"]
    text = "\n".join(core.submit("/vector show excited").view.lines())
    picked = next(line for line in text.splitlines() if "<-" in line)
    assert picked.split()[0] == "0.7" and picked.endswith("<- recommended")
    assert vec.meta["calibration"]["chosen"] == vec.recommended_strength == 0.7
    # its gains were under 0.1 nat/token, so the pick went by fluency, and the report says so
    assert "note: the effect grew at most +0.06 nat/token (under 0.1), too little to show" in text
    assert "compare /sweep excited 0.5,0.7,1 on a question of yours" in text
    assert "may move further with /contrast ... --method focus" in text  # built with mean
    assert "content mode" not in text
    # a focus vector calibrated in messages mode points a topic to content mode
    assert not core.submit("/vector load cheerful").errors
    text = "\n".join(core.submit("/vector show cheerful").view.lines())
    assert "a topic may move further in content mode, where /contrast ... --method focus" in text


def test_a_clear_effect_gets_no_note(core: Core) -> None:
    # the shipped file by its path: a library vector named terse (another test's) would win
    assert not core.submit(f"/vector load {bundled_path('terse')} terse").errors
    text = "\n".join(core.submit("/vector show terse").view.lines())
    assert "<- recommended" in text and "note: the effect grew at most" not in text


def test_the_fresh_questions_are_in_no_other_set() -> None:
    """A strength chosen on the scoreboard's questions is confirmed on the fresh ones, so they
    must be in neither the scoreboard nor the build or calibration prompts."""
    from bench.efficacy_bench import QUESTION_SETS
    from vectors import calibration_prompts, neutral_prompts

    fresh = set(QUESTION_SETS["fresh"])
    assert len(fresh) == len(QUESTION_SETS["fresh"]) == 16
    assert not fresh & set(QUESTION_SETS["both"])
    assert not fresh & (set(neutral_prompts()) | set(calibration_prompts()))


def _as_shipped(core: Core, name: str, setting: tuple) -> tuple[list[float], list[float]]:
    """`/steer NAME` as shipped (its strength, blocks and mode must be `setting`), greedy, 40
    tokens, on the first 8 fresh questions, written side by side with plain replies: the
    concept's marker in each plain and each steered reply."""
    from bench.efficacy_bench import CONCEPTS, QUESTION_SETS

    marker = next(c for c in CONCEPTS if c.name == name).marker
    assert not core.submit(f"/vector load {bundled_path(name)} {name}").errors
    active = core.steering.activate(name, None, None, None)
    core.steering.active.clear()
    assert (active.strength, active.layers, active.mode) == setting
    asked = [[{"role": "user", "content": q}] for q in QUESTION_SETS["fresh"][:8]]
    with core.batch() as batched:
        plain = batched.answer(asked, None, 40)
        steered = batched.answer(asked, core.steering.control({name: active}), 40)
    return [marker(r.text, r.tokens) for r in plain], [marker(r.text, r.tokens) for r in steered]


def test_the_ready_excited_vector_moves_its_marker_on_unseen_questions(core: Core) -> None:
    """Its gushing words appear where plain replies have none (bench/efficacy_bench.py
    --ready measures it properly, over 150 tokens)."""
    before, after = _as_shipped(core, "excited", (0.7, (9, 13), "add"))
    assert sum(after) > sum(before) and sum(m > 0 for m in after) >= 2, (before, after)


def test_the_ready_sea_vector_brings_the_sea_into_unseen_answers(core: Core) -> None:
    """Sea words come into answers about other things (--ready measures it properly)."""
    before, after = _as_shipped(core, "sea", (1.25, (5, 9), "content"))
    # (one plain answer, on cheese, has a sea word in it; greedy, three steered ones write of
    # the sea, ships and sailors, one of them looping: DRY is what holds that off)
    assert sum(m > 0 for m in after) >= 3 and sum(after) >= 2 * sum(before), (before, after)
