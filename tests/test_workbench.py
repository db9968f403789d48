"""/compare, /pick and /sweep through the command core, the plain REPL and the session file."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import threading
from dataclasses import replace

import numpy as np
import pytest

from engine import ChatContext, Reply
from repl.core import Core
from repl.plain import PlainRepl
from repl.session import attach, detach
from repl.session_file import load_session
from repl.test_hooks import SIGINT_ENV
from repl.workbench import Sweep, SweepRow, degeneration
from tests.conftest import GREEDY, STEER, user
from vectors import compose, save_vector

SHORT = replace(GREEDY, max_tokens=24)
QUESTION = "What is a volcano?"


@pytest.fixture
def bench_core(model, steering) -> Core:
    core = Core(model, ChatContext(model, n_ctx=1024), SHORT)
    core.steering = steering
    steering.active.clear()
    yield core
    steering.active.clear()


def run(core: Core, line: str, cancel: threading.Event | None = None):
    outcome = core.submit(line)
    assert not outcome.errors, outcome.errors
    assert outcome.job is not None
    return core.run_job(outcome, None, cancel)


def fresh_reply(model, messages, buffer, sampling=SHORT) -> Reply:
    """An independent context: what an ordinary reply under `buffer` would be."""
    ctx = ChatContext(model, n_ctx=1024)
    try:
        ctx.set_control(buffer)
        return ctx.generate(messages, sampling)
    finally:
        ctx.close()


def terse_buffer(model, terse, strength: float, layers=(9, 13)):
    return compose([(terse, strength, layers)], model.n_layer, model.n_embd)


# -- pure logic ------------------------------------------------------------------------------


def test_degeneration_is_the_share_of_repeated_trigrams() -> None:
    assert degeneration([]) == 0.0 and degeneration([1, 2]) == 0.0
    assert degeneration([1, 2, 3, 4, 5]) == 0.0
    assert degeneration([1, 2, 3, 1, 2, 3]) == pytest.approx(1 - 3 / 4)  # 123 231 312 123
    assert degeneration([7] * 10) == pytest.approx(1 - 1 / 8)


def _row(strength: float, tokens: int, deg: float, logprob: float) -> SweepRow:
    reply = Reply("x", tokens, "stop", 0.1, 1.0, 5, 5, None, list(range(tokens)))
    return SweepRow(strength, reply, deg, logprob)


def test_recommendation_rule_picks_the_strongest_fluent_setting() -> None:
    """/sweep judges each row by the calibration's rule (tests/test_calibration_rule.py)."""
    from repl.workbench import _fluent

    base = _row(0, 50, 0.05, -0.8)
    rows = [
        _row(0.3, 40, 0.05, -0.9),  # fluent: +0.1 nat/token
        _row(0.5, 30, 0.10, -1.1),  # fluent: +0.3, the allowance on this baseline
        _row(0.7, 20, 0.05, -1.2),  # 1.5x: clipped text, no longer fluent
        _row(1.0, 12, 0.00, -2.2),  # 2.75x: broken (the old 1.5-nat rule let this pass)
        _row(2.0, 0, 0.0, math.nan),  # empty
        _row(3.0, 90, 0.60, -0.3),  # loops
    ]
    for row in rows:
        row.fluent = _fluent(row, base)
    sweep = Sweep("terse", (9, 13), "q", base, rows)
    assert [r.fluent for r in rows] == [True, True, False, False, False, False]
    assert sweep.recommended == 0.5
    assert "recommended: /steer terse 0.5 --layers 9-13" in sweep.verdict()
    only_negative = Sweep("terse", (9, 13), "q", base, [_row(-1, 9, 0, -0.9), _row(-2, 9, 0, -1.1)])
    for row in only_negative.rows:
        row.fluent = _fluent(row, base)
    assert only_negative.recommended == -2
    nothing = Sweep("terse", (9, 13), "q", base, rows[2:])
    assert nothing.recommended is None and nothing.verdict().startswith("no strength stays")


def test_a_focus_vector_is_recommended_below_its_strongest_fluent_row() -> None:
    """/sweep recommends by the rule /contrast's calibration does, the focus margin included:
    the table marks the strongest fluent row, the verdict's /steer line has the margin's share."""
    from repl.workbench import _fluent
    from vectors.calibration import FOCUS_MARGIN, recommendation_margin

    assert recommendation_margin({"method": "focus"}, "prompt") == FOCUS_MARGIN < 1
    assert recommendation_margin({"method": "focus"}, "messages") == 1.0
    assert recommendation_margin({"method": "replies (mean of the differences)"}, "prompt") == 1
    assert recommendation_margin({}, "add") == 1.0
    base = _row(0, 50, 0.05, -0.8)
    rows = [_row(0.5, 40, 0.05, -0.9), _row(1.0, 40, 0.05, -0.95), _row(2.0, 40, 0.5, -0.9)]
    for row in rows:
        row.fluent = _fluent(row, base)
    sweep = Sweep("sea", (5, 9), "q", base, rows, mode="prompt", margin=FOCUS_MARGIN)
    assert sweep.best == 1.0 and sweep.recommended == FOCUS_MARGIN
    assert "recommended: /steer sea 0.85 --mode prompt --layers 5-9 (0.85 x the strongest " in (
        sweep.verdict()
    )
    marked = [line for line in sweep.table() if "<-" in line]
    assert len(marked) == 1 and marked[0].split()[0] == "+1"
    assert marked[0].endswith("<- strongest fluent")
    assert sweep.event()["recommended"] == 0.85 and sweep.event()["margin"] == 0.85


# -- the engine's scoring ---------------------------------------------------------------------


def test_score_matches_llama_cpp_python_logits(model, monkeypatch) -> None:
    """Log-probabilities from the batched scorer equal a reference computed by
    llama-cpp-python's own Llama class over the same tokens."""
    import ctypes

    import llama_cpp
    import llama_cpp.llama_cpp as low

    # The reference model runs on the CPU alone, like steer's own Model: without a device list
    # llama.cpp would also use every RPC server registered in this process (tests/test_rpc.py
    # registers some and stops them; connecting to a stopped server aborts the process).
    defaults, no_devices = low.llama_model_default_params, (ctypes.c_void_p * 1)(None)

    def cpu_only():
        params = defaults()
        params.devices = ctypes.addressof(no_devices)
        return params

    monkeypatch.setattr(low, "llama_model_default_params", cpu_only)
    ctx = ChatContext(model, n_ctx=512)
    messages = user("Name a colour.")
    reply = ctx.generate(messages, replace(GREEDY, max_tokens=12))
    scores = ctx.score(messages, reply.token_ids)
    assert len(scores) == reply.tokens > 3
    ref = llama_cpp.Llama(
        str(model.path), n_ctx=512, logits_all=True, verbose=False, flash_attn=False
    )
    prompt = model.chat_tokens(messages)
    ref.eval(prompt + reply.token_ids)
    logits = np.array(ref.scores[len(prompt) - 1 : len(prompt) - 1 + reply.tokens], np.float64)
    top = logits.max(axis=1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
    expected = logp[np.arange(reply.tokens), reply.token_ids]
    np.testing.assert_allclose(scores, expected, atol=1e-4)  # measured: within 4e-8
    # greedy picked the most likely token each time, up to the numerics of one-token decoding
    # against a batch (llama.cpp's kernels differ; measured up to 0.055 nat on the AVX2 build)
    gaps = [row.max() - s for s, row in zip(scores, logp, strict=True)]
    assert max(gaps) < 0.1 and sum(gap < 1e-3 for gap in gaps) >= len(gaps) - 2, gaps
    ctx.close()


# -- /sweep -------------------------------------------------------------------------------------


def test_sweep_rows_match_single_replies_at_each_strength(bench_core: Core, model, terse) -> None:
    result = run(bench_core, f'/sweep terse 0.5,1 --prompt "{QUESTION}"').view
    assert isinstance(result, Sweep) and result.layers == (9, 13)
    assert [r.strength for r in result.rows] == [0.5, 1.0]
    baseline = fresh_reply(model, user(QUESTION), None)
    assert result.baseline.reply.text == baseline.text
    for row in result.rows:
        single = fresh_reply(model, user(QUESTION), terse_buffer(model, terse, row.strength))
        assert row.reply.text == single.text, row.strength
        assert row.reply.tokens == single.tokens
        assert row.degeneration == degeneration(single.token_ids)
        scorer = ChatContext(model, n_ctx=1024)
        assert row.logprob == pytest.approx(np.mean(scorer.score(user(QUESTION), single.token_ids)))
        scorer.close()
    assert bench_core.turns == [] and bench_core.steering.active == {}  # nothing changed


def test_sweep_defaults_to_the_last_message_and_keeps_other_steering(bench_core: Core) -> None:
    bench_core.submit("/vector mix half terse*0.5")
    try:
        bench_core.submit("/steer half 0.5")
        bench_core.submit(QUESTION)
        bench_core.generate()
        before = [(t.role, t.text) for t in bench_core.turns]
        result = run(bench_core, "/sweep terse 1 --layers 9-12").view
        assert result.prompt == QUESTION and result.layers == (9, 12)
        assert result.others == [{"name": "half", "strength": 0.5, "layers": [9, 13]}]
        assert "half held at +0.5" in result.header()
        # a read mode's header says what is read as /steer does
        assert "sweep terse while reading the messages' text (not the system prompt or the " in (
            replace(result, mode="content").header()
        )
        assert [(t.role, t.text) for t in bench_core.turns] == before
        assert set(bench_core.steering.active) == {"half"}
    finally:
        bench_core.steering.vectors.pop("half", None)


@pytest.mark.parametrize(
    "line, message",
    [
        ("/sweep terse", "missing strengths"),
        ("/sweep terse 1,x", "strength must be a number, not 'x'"),
        ("/sweep terse 1,nan", "finite"),
        ("/sweep terse " + ",".join(["1"] * 13), "at most 12 strengths"),
        ("/sweep nope 1", "no vector named 'nope'"),
        ("/sweep terse 1", "send a message first"),
        ("/sweep terse 1 --layers 9-99", "9-99"),
        ("/compare", "nothing is steered"),
        ("/pick steered", "no comparison is waiting"),
        ("/pick both", "which must be one of unsteered, steered, neither"),
    ],
)
def test_workbench_errors_are_one_line(bench_core: Core, line: str, message: str) -> None:
    outcome = bench_core.submit(line)
    assert len(outcome.errors) == 1 and "\n" not in outcome.errors[0]
    assert message in outcome.errors[0]


# -- /compare and /pick ----------------------------------------------------------------------------


def test_compare_answers_unsteered_and_steered_and_pick_continues(
    bench_core: Core, model, terse
) -> None:
    bench_core.submit("/steer terse")
    result = run(bench_core, f"/compare {QUESTION}").view
    assert result.unsteered.text == fresh_reply(model, user(QUESTION), None).text
    steered = fresh_reply(model, user(QUESTION), terse_buffer(model, terse, 1.0))
    assert result.steered.text == steered.text
    assert result.unsteered.text != result.steered.text  # the vector does something here
    assert bench_core.turns == []  # nothing joins until /pick
    out = bench_core.submit("/pick unsteered")
    assert out.transcript_changed and not out.errors
    assert [(t.role, t.text) for t in bench_core.turns] == [
        ("user", QUESTION),
        ("assistant", result.unsteered.text),
    ]
    assert bench_core.turns[-1].steering == []
    # the next reply is what a chat that had this history all along would say
    bench_core.submit("Is it dangerous?")
    # evaluate from scratch like the fresh context: llama.cpp's numerics depend on how a
    # prompt is split into batches, which could flip a near-tie in either chat
    bench_core.ctx.reset()
    reply = bench_core.generate().reply
    history = [*user(QUESTION), {"role": "assistant", "content": result.unsteered.text}]
    expected = fresh_reply(
        model, [*history, *user("Is it dangerous?")], terse_buffer(model, terse, 1)
    )
    assert reply.text == expected.text
    assert bench_core.submit("/pick steered").errors  # a comparison is picked only once


@pytest.mark.parametrize("change", ["Something else", "/system Be brief.", "/undo"])
def test_pick_refuses_when_the_conversation_moved_on(bench_core: Core, change: str) -> None:
    bench_core.submit(QUESTION)
    bench_core.generate()
    bench_core.submit("/steer terse")
    run(bench_core, "/compare")
    if bench_core.submit(change).generate:
        bench_core.generate()
    before = [(t.role, t.text) for t in bench_core.turns]
    outcome = bench_core.submit("/pick steered")
    assert outcome.errors == [
        "the conversation or system prompt changed since /compare: /compare again"
    ]
    assert [(t.role, t.text) for t in bench_core.turns] == before


def test_pick_is_recorded_so_the_session_replays(model, terse, tmp_path) -> None:
    """A kept reply is recorded like an ordinary one (with /regen when it replaces one), so
    the session resumes to the same transcript and replays identically."""
    from repl.replay import Replayer
    from repl.session import turns_from_events
    from vectors import save_vector

    save_vector(terse, tmp_path / "terse.gguf", "llama")
    bench_core = Core(model, ChatContext(model, n_ctx=1024), SHORT)
    path = tmp_path / "cmp.toml"
    attach(bench_core, path)
    try:
        bench_core.submit(f"/vector load {tmp_path / 'terse.gguf'}")
        bench_core.submit(QUESTION)
        bench_core.generate()
        bench_core.submit("/steer terse")
        comparison = run(bench_core, "/compare").view  # the last message again
        assert comparison.prompt == QUESTION and not comparison.new_message
        bench_core.submit("/pick steered")
        run(bench_core, "/compare Why is the sky blue?")
        bench_core.submit("/pick neither")
        run(bench_core, "/compare Why is the sky blue?")
        bench_core.submit("/pick unsteered")
    finally:
        detach(bench_core)
    session = load_session(path)
    kinds = [(e.kind, e.text if e.kind != "assistant" else None) for e in session.events]
    assert kinds == [
        ("command", f"/vector load {tmp_path / 'terse.gguf'}"),
        ("user", QUESTION),
        ("assistant", None),
        ("command", "/steer terse"),
        ("command", "/regen"),
        ("assistant", None),
        ("user", "Why is the sky blue?"),
        ("assistant", None),
    ]
    steered, unsteered = session.events[5], session.events[7]
    assert steered.steering == [{"name": "terse", "strength": 1.0, "layers": [9, 13]}]
    assert unsteered.steering == []
    resumed = turns_from_events(session.events)
    assert [t.text for t in resumed] == [t.text for t in bench_core.turns]
    report = Replayer(bench_core.model, session, path).run()
    assert report.different == 0 and report.identical == 3


# -- headless output and cancelling --------------------------------------------------------------


def test_plain_repl_prints_labelled_compare_and_jsonl_events(bench_core: Core) -> None:
    bench_core.submit("/steer terse")
    out = io.StringIO()
    PlainRepl(bench_core, out=out, err=io.StringIO()).handle(f"/compare {QUESTION}")
    text = out.getvalue()
    assert "--- unsteered · " in text and "--- steered: terse +1 @9-13 · " in text
    assert "/pick unsteered | /pick steered | /pick neither" in text
    out = io.StringIO()
    repl = PlainRepl(bench_core, jsonl=True, out=out, err=io.StringIO())
    repl.handle(f"/compare {QUESTION}")
    repl.handle(f'/sweep terse 1,2 --prompt "{QUESTION}"')
    compare_event, sweep_event = (json.loads(line) for line in out.getvalue().splitlines())
    assert compare_event["type"] == "compare"
    assert (
        compare_event["unsteered"]["type"] == "reply"
        and compare_event["unsteered"]["steering"] == []
    )
    assert compare_event["steered"]["steering"][0]["name"] == "terse"
    assert sweep_event["type"] == "sweep" and sweep_event["vector"] == "terse"
    assert [r["strength"] for r in sweep_event["rows"]] == [1.0, 2.0]
    assert set(sweep_event["rows"][0]) >= {"strength", "tokens", "degeneration", "logprob", "text"}
    assert "recommended" in sweep_event


@pytest.mark.parametrize("line", ["/sweep terse 0.5,1,1.5,2,3", "/compare Tell me a long story."])
def test_ctrl_c_stops_a_sweep_or_compare_and_changes_nothing(terse, tmp_path, line: str) -> None:
    """The real SIGINT path of the plain REPL, in a steer of its own: Ctrl+C arrives at the
    job's first progress report (before its first reply), so it provably lands mid-job however
    fast the machine; the job must stop and leave the chat and its session file as they were."""
    vector = tmp_path / "terse.gguf"
    save_vector(terse, vector, "llama")
    session = tmp_path / "chat.toml"
    lines = [f"/vector load {vector} terse", "/steer terse", QUESTION, line, "Thanks!"]
    proc = subprocess.run(
        [*STEER, "chat", "--plain", "--temperature", "0", "--max-tokens", "24"]
        + ["--session", str(session)],
        input="".join(f"{text}\n" for text in lines),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "STEER_DATA_DIR": str(tmp_path / "data"), SIGINT_ENV: "1"},
        timeout=300,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    job = "/sweep terse" if line.startswith("/sweep") else "/compare"
    assert proc.stderr == f"error: {job} cancelled; nothing changed\n"
    events = [(e.kind, e.text) for e in load_session(session).events]
    kinds = ["command", "command", "user", "assistant", "user", "assistant"]
    assert [kind for kind, _ in events] == kinds, events
    assert events[2] == ("user", QUESTION) and events[4] == ("user", "Thanks!")
