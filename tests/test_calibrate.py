"""/contrast's calibration on the real model: the recommended terse strength lands in the fluent
band on questions it never saw, its numbers ride in the provenance, and Esc stops it."""

from __future__ import annotations

import re
import subprocess
import threading

import numpy as np
import pytest

from engine import ChatContext, Model, Sampling
from engine.batch import BatchFull
from repl.calibrate import (
    CONTENT_TOKENS,
    MAX_TOKENS,
    START,
    answer_all,
    calibrate,
    score,
    summarise,
)
from repl.core import Core
from repl.steering import Active
from tests.conftest import LONG, ROOT, STEER, TERSE, UNSEEN, VERBOSE
from vectors import calibration_prompts, load_vector, neutral_prompts, save_vector
from vectors.calibration import FOCUS_MARGIN, is_fluent, nll_limit

LINE = f'/contrast terse "{TERSE}" "{VERBOSE}"'


@pytest.fixture(scope="module")
def calibrated(model: Model):
    ctx = ChatContext(model, n_ctx=2048)
    core = Core(model, ctx, Sampling(temperature=0.0, max_tokens=48))
    outcome = core.submit(LINE)
    progress: list[tuple[int, int]] = []
    result = core.run_job(outcome, lambda done, total: progress.append((done, total)))
    assert not result.errors, result.errors
    yield core, result, progress
    ctx.close()


def test_calibration_recommends_a_fluent_strength_below_the_old_default(calibrated) -> None:
    core, result, _ = calibrated
    vec = core.steering.vectors["terse"]
    cal = vec.meta["calibration"]
    assert cal["prompts"] == calibration_prompts()[:3] and not set(cal["prompts"]) & set(
        vec.meta["prompts"]
    )
    assert cal["chosen"] == vec.recommended_strength and cal["batched"] is True
    assert 0 < vec.recommended_strength < 1.0  # strength 1 broke the text (2.7x NLL)
    assert cal["layers"] == list(vec.recommended_range)
    assert "fluent = no empty reply" in cal["rule"]
    text = "\n".join(result.lines())
    assert "<- recommended" in text
    assert f"apply it: /steer terse {vec.recommended_strength:g} --layers" in text


def test_the_calibrated_strength_is_fluent_and_shorter_on_unseen_questions(
    calibrated, unseen_plain
) -> None:
    core, _, _ = calibrated
    vec = core.steering.vectors["terse"]
    assert not set(UNSEEN) & (set(neutral_prompts()) | set(calibration_prompts()))
    control = core.steering.buffer(
        {"terse": Active(vec.recommended_strength, vec.recommended_range)}
    )
    plain = summarise(0.0, score(core, UNSEEN, unseen_plain))
    steered = summarise(
        vec.recommended_strength,
        score(core, UNSEEN, answer_all(core, UNSEEN, control, LONG)),
    )
    print(f"unsteered {plain}, steered {steered}")
    assert steered.tokens <= 0.4 * plain.tokens, (plain, steered)  # at least 60% shorter
    assert steered.nll <= 1.5 * plain.nll, (plain, steered)  # the hard limit
    assert steered.repeat <= plain.repeat + 0.10 and steered.empty == 0


def test_progress_covers_capture_then_calibration(calibrated) -> None:
    _, _, progress = calibrated
    done = [d for d, _ in progress]
    assert done == sorted(done) and progress[-1][0] == progress[-1][1]
    assert progress[-1][0] > 48  # 48 prompts captured, then the calibration's replies


def test_calibration_survives_saving_and_loading(calibrated, tmp_path) -> None:
    core, _, _ = calibrated
    vec = core.steering.vectors["terse"]
    save_vector(vec, tmp_path / "terse.gguf", "llama")
    back = load_vector(tmp_path / "terse.gguf")
    assert back.meta["calibration"] == vec.meta["calibration"]
    assert back.recommended_strength == vec.recommended_strength
    show = subprocess.run(
        [*STEER, "vector", "show", str(tmp_path / "terse.gguf")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert show.returncode == 0 and "calibration: 3 held-out questions" in show.stdout
    assert "<- recommended" in show.stdout
    assert f"suggested: /steer terse {vec.recommended_strength:g} --layers" in show.stdout


def test_content_mode_calibrates_on_longer_replies(calibrated) -> None:
    """Content mode reads the assistant's header plain, so its replies depart late: its
    calibration answers `CONTENT_TOKENS`, the other modes `MAX_TOKENS` (one question here)."""
    core, _, _ = calibrated
    for mode, tokens in (("messages", MAX_TOKENS), ("content", CONTENT_TOKENS)):
        result = calibrate(core, "terse", None, layers=(9, 13), prompts=UNSEEN[:1], mode=mode)
        assert result is not None and result.meta()["calibration"]["max_tokens"] == tokens
        made = [result.baseline.tokens] + [p.tokens for p in result.points]
        assert max(made) == tokens, (mode, made)  # the unsteered reply runs to the cap
    assert CONTENT_TOKENS > MAX_TOKENS


def test_the_points_follow_the_rule(calibrated) -> None:
    core, _, _ = calibrated
    cal = core.steering.vectors["terse"].meta["calibration"]
    from vectors.calibration import Point

    base = Point.from_dict(cal["baseline"])
    points = [Point.from_dict(p) for p in cal["points"]]
    assert points[0].strength == START
    assert cal["fluent"] == [is_fluent(p, base) for p in points]
    chosen = next(p for p in points if p.strength == cal["chosen"])
    assert chosen.nll <= nll_limit(base.nll) + 1e-3
    assert chosen.effect > base.effect  # replies read more like the terse instruction's


def test_no_calibrate_keeps_the_uncalibrated_default(core: Core) -> None:
    result = core.run_job(
        core.submit(f'/contrast quick "{TERSE}" "{VERBOSE}" --n 3 --no-calibrate')
    )
    vec = core.steering.vectors["quick"]
    assert "calibration" not in vec.meta and vec.recommended_strength == 1.0
    assert not any("calibration:" in line for line in result.lines())
    # --mode names the mode a vector recommends (here with nothing measured in it)
    line = f'/contrast moded "{TERSE}" "{VERBOSE}" --n 2 --no-calibrate --mode content'
    lines = core.run_job(core.submit(line)).lines()
    assert any(x.startswith("apply it: /steer moded 1 ") and "--mode content" in x for x in lines)
    assert core.steering.activate("moded", None, None, None).mode == "content"


def test_esc_during_calibration_builds_nothing(core: Core) -> None:
    cancel = threading.Event()

    def progress(done: int, total: int) -> None:
        if done > 6:  # 6 prompts captured: now calibrating
            cancel.set()

    outcome = core.submit(f'/contrast gone "{TERSE}" "{VERBOSE}" --n 3')
    result = core.run_job(outcome, progress, cancel)
    assert result.errors == ["/contrast gone cancelled; nothing was built"]
    assert "gone" not in core.steering.vectors
    # the chat context is left usable and unsteered
    reply = core.answer([{"role": "user", "content": "Hi"}], None, Sampling(0.0, max_tokens=4))
    assert reply.tokens > 0 and np.isfinite(reply.ttft_s)


def test_method_replies_reads_what_the_model_wrote(core: Core) -> None:
    line = '/contrast sea "Relate your answer to the sea." "Answer the question." --n 3'
    result = core.run_job(core.submit(f"{line} --method replies --no-calibrate"))
    assert not result.errors, result.errors
    vec = core.steering.vectors["sea"]
    assert vec.meta["method"] == "replies (mean of the differences)"
    assert vec.meta["position"].startswith("mean over each reply the model wrote (up to ")
    assert vec.meta["reply_tokens"] == 48 and vec.meta["n_pairs"] == 3
    assert (
        "--method replies needs chat prompts"
        in core.submit("/contrast x --pairs p.tsv --raw --method replies").errors[0]
    )


SEA_WORDS = re.compile(r"\b(sea|seas|ocean|oceans|ship|ships|sail\w*|marine|waves?|tides?)\b", re.I)


def test_method_focus_builds_a_topic_vector_that_moves_the_topic(core: Core) -> None:
    """Three pairs are enough for the sea to show in a reply to a question it was not built
    from, while the unsteered reply has none of it (`/steer sea`: content mode, 1, 5-9)."""
    line = '/contrast sea "Relate your answer to the sea and ships." "Answer the question." --n 3'
    outcome = core.submit(f"{line} --method focus --no-calibrate")
    assert outcome.job_total == 15  # 6 replies written, 3 scored, 6 read
    progress: list[tuple[int, int]] = []
    result = core.run_job(outcome, lambda done, total: progress.append((done, total)))
    assert not result.errors, result.errors
    assert result.lines()[0] == "built vector 'sea' (focus, 3 pairs)"
    assert "apply it: /steer sea 1 --layers 5-9 --mode content" in result.lines()
    assert progress[-1] == (15, 15) and progress == sorted(progress)
    vec = core.steering.vectors["sea"]
    meta = vec.meta
    assert meta["method"] == "focus" and meta["strength_unit"] == "token-norm"
    assert meta["recommended_range"] == [5, 9] and meta["recommended_mode"] == "content"
    # only the few tokens the instruction put there weigh (" sea", " ships", ...)
    assert 0 < meta["focus"]["weighted_tokens"] < meta["focus"]["positive_tokens"] / 5
    assert vec.norms()[0] == 0 and vec.norms()[5:10].min() > 0
    question = [{"role": "user", "content": UNSEEN[0]}]
    sampling = Sampling(temperature=0.0, max_tokens=60)
    plain = core.answer(question, None, sampling).text
    active = core.steering.activate("sea", None, None, None)
    assert (active.strength, active.layers, active.mode) == (1.0, (5, 9), "content")
    steered = core.answer(question, core.steering.control(), sampling).text
    assert not SEA_WORDS.search(plain), plain
    assert SEA_WORDS.search(steered), steered
    # in prompt mode /sweep recommends it as a calibration there would: 0.85 x the strongest
    # fluent strength
    swept = core.run_job(core.submit(f'/sweep sea 0.5 --mode prompt --prompt "{UNSEEN[1]}"')).view
    assert swept.margin == FOCUS_MARGIN and swept.mode == "prompt"
    assert swept.recommended == (None if swept.best is None else round(0.5 * FOCUS_MARGIN, 4))


def test_method_focus_refuses_what_it_cannot_weigh(core: Core) -> None:
    same = '/contrast same "Answer the question." "Answer the question." --n 2 --method focus'
    result = core.run_job(core.submit(f"{same} --no-calibrate"))
    assert result.errors and "nothing to focus on" in result.errors[0], result.errors
    assert "same" not in core.steering.vectors
    for line, message in [
        ("/contrast x --pairs p.tsv --method focus", "give POSITIVE and NEGATIVE, not --pairs"),
        ('/contrast x "a" "b" --method focus --last 4', "leave out --last"),
        ('/contrast x "a" "b" --method focus --raw', "--method focus needs chat prompts"),
    ]:
        assert message in core.submit(line).errors[0]


def test_a_context_too_small_for_a_batch_calibrates_one_reply_at_a_time(
    model: Model, steering
) -> None:
    """`steer chat --ctx 256`: the calibration's batch finds no room in the KV cache, so the
    calibration falls back to one reply at a time instead of failing; the chat goes on."""
    ctx = ChatContext(model, n_ctx=256)
    core = Core(model, ctx, Sampling(temperature=0.0, max_tokens=16))
    core.steering = steering
    asked = [[{"role": "user", "content": q}] for q in neutral_prompts()[:8]]
    with core.batch() as batched, pytest.raises(BatchFull):  # the batch alone does not fit
        batched.answer(asked, None, 40)
    # 3 questions: their 6 kept scoring prompts and 6 first replies need more than 256 cells
    three = UNSEEN[:3]  # short replies: this runs one reply at a time
    result = calibrate(core, "terse", TERSE, layers=(9, 13), prompts=three, max_tokens=8)
    assert result is not None and not result.batched
    assert result.points and result.baseline.tokens > 0
    assert result.strength in [p.strength for p in result.points]
    assert ctx.generate([{"role": "user", "content": "Hi"}], Sampling(0.0, max_tokens=4)).tokens
    ctx.close()
