"""The Textual app driven by Pilot, on the real model."""

from __future__ import annotations

import asyncio
import functools
import gc
import threading
from dataclasses import replace

from textual import events
from textual.keys import _character_to_key
from textual.widgets import Markdown, OptionList, Static

from engine import ChatContext
from repl.app import ChatInput, SteerApp, Token
from repl.core import Core
from repl.streaming import StreamingReply
from repl.widgets import BlockChart, VectorView
from tests.conftest import GREEDY, Gate, steady_cursor, user

SIZE = (100, 30)


def sync(test):
    """Run an async Pilot test on its own event loop (no pytest-asyncio needed)."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return run


class RecordingApp(SteerApp):
    """Counts the streamed updates so a test can tell streaming from a single final write."""

    def __init__(self, core: Core) -> None:
        super().__init__(core)
        self.updates: list[str] = []

    def on_token(self, message: Token) -> None:
        # Textual also calls SteerApp.on_token for the same message (handlers run per class)
        self.updates.append(message.text)


async def type_text(pilot, text: str) -> None:
    """Type `text` as one Key event per character, in order, then wait once for the app to
    settle: as a terminal delivers a quick typist's keys. (Pilot.press waits for idle twice
    per key, about 75 ms, which made typing a third of some tests' time.)"""
    for char in text:
        key = char if char.isalnum() else _character_to_key(char)
        pilot.app.post_message(events.Key(key, char))
    await pilot.pause()


async def wait_for(pilot, condition, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():
        assert loop.time() < end, "timed out"
        await pilot.pause(0.02)


@sync
async def test_message_streams_a_reply(model, core) -> None:
    core.sampling = replace(GREEDY, max_tokens=120)
    expected = ChatContext(model, n_ctx=1024).generate(
        user("Tell me about the sea."), core.sampling
    )
    app = RecordingApp(core)
    async with app.run_test(size=SIZE) as pilot:
        await type_text(pilot, "Tell me about the sea.")
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(core.turns) == 2 and not app.busy)
        await pilot.pause()
        replies = app.query("Markdown.assistant")
        assert [md.source for md in replies] == [expected.text]
        assert "".join(app.updates) == expected.text
        assert len(app.updates) > 1, "the reply arrived in one piece instead of streaming"
        assert not app.query(StreamingReply), "the streamed text stayed beside its Markdown"
        user_text = [str(w.render()) for w in app.query("Static.user")]
        assert user_text == ["Tell me about the sea."]
        stats = str(app.query("Static.stats").last().render())
        assert stats.startswith(f"[{expected.tokens} tokens")
        status = str(app.query_one("#status", Static).render())
        assert "SmolLM2-135M-Instruct.Q4_1" in status and "tok/s" in status
        assert f"ctx {core.ctx.n_cached}/{core.ctx.n_ctx}" in status


def hold_the_story_at_token_20(core: Core, monkeypatch) -> tuple[Gate, threading.Event]:
    """Make the chat's replies wait at the gate after their 20th token (mid-reply, however
    fast the machine); the event is set once the reply has ended."""
    core.sampling = replace(GREEDY, max_tokens=1000)  # the greedy story runs past 1000 tokens
    gate = Gate()
    ended = threading.Event()
    generate = core.generate

    def held_at_token_20(on_token, cancel):
        count = 0

        def token(text: str) -> None:
            nonlocal count
            on_token(text)
            count += 1
            if count == 20:
                gate.hold()

        try:
            return generate(token, cancel)
        finally:
            ended.set()

    monkeypatch.setattr(core, "generate", held_at_token_20)
    return gate, ended


async def ask_for_the_held_story(pilot, gate: Gate) -> None:
    """Ask for the story and wait until its reply is held at the gate, mid-reply."""
    await type_text(pilot, "Write a long story about a dragon.")
    await pilot.press("enter")
    await wait_for(pilot, gate.reached.is_set)


@sync
async def test_escape_stops_the_reply_and_the_ui_stays_usable(core, monkeypatch) -> None:
    gate, _ = hold_the_story_at_token_20(core, monkeypatch)
    app = RecordingApp(core)
    async with app.run_test(size=SIZE) as pilot:
        await ask_for_the_held_story(pilot, gate)
        await pilot.pause()
        live = app.query_one(StreamingReply)
        assert live.text and live.text == "".join(app.updates)  # what has streamed, on screen
        # typing while the model writes (Pilot waits ~2 s per key for an idle queue; a real
        # terminal echoes at once, so one key is enough to prove the input is live)
        await pilot.press("n")
        assert app.query_one(ChatInput).text == "n" and app.busy
        await pilot.press("escape")
        gate.open()
        await wait_for(pilot, lambda: not app.busy)
        await pilot.pause()
        last = core.turns[-1]
        assert last.role == "assistant" and last.interrupted
        assert last.reply.tokens == 20
        assert "interrupted" in str(app.query("Static.stats").last().render())
        assert app.query("Markdown.assistant").last().source == last.text
        assert app.query_one(ChatInput).text == "n"


@sync
async def test_quit_mid_reply_stops_the_reply_and_keeps_it(core, monkeypatch) -> None:
    """The process waits for the worker thread before it ends: a reply left running kept the
    terminal blank until all of it was written."""
    gate, ended = hold_the_story_at_token_20(core, monkeypatch)
    app = SteerApp(core)
    async with app.run_test(size=SIZE) as pilot:
        await ask_for_the_held_story(pilot, gate)
        await pilot.press("ctrl+q")
    assert gc.get_freeze_count() == 0, "the app ended with the old objects still held"
    gate.open()
    assert ended.wait(60), "the reply never ended"
    last = core.turns[-1]
    assert last.role == "assistant" and last.interrupted and last.reply.tokens == 20


@sync
async def test_the_collector_skips_the_old_objects_only_while_the_model_writes(
    core, monkeypatch
) -> None:
    """repl.app.hold_old_objects: frozen mid-reply, given back once the reply is done."""
    gate, _ = hold_the_story_at_token_20(core, monkeypatch)
    app = SteerApp(core)
    async with app.run_test(size=SIZE) as pilot:
        assert gc.get_freeze_count() == 0
        await ask_for_the_held_story(pilot, gate)
        assert gc.get_freeze_count() > 1000  # the app's widgets, Textual's, the tokenizer's
        await pilot.press("escape")
        gate.open()
        await wait_for(pilot, lambda: not app.busy)
        assert gc.get_freeze_count() == 0


@sync
async def test_completion_offers_help(core) -> None:
    app = SteerApp(core)
    async with app.run_test(size=SIZE) as pilot:
        await type_text(pilot, "/he")
        await pilot.pause()
        menu = app.query_one("#completions", OptionList)
        assert menu.display
        assert [menu.get_option_at_index(i).id for i in range(menu.option_count)] == ["/help"]
        await pilot.press("tab")
        assert app.query_one(ChatInput).text == "/help "
        await pilot.pause()
        # the next argument of /help is a command name: those are offered now
        names = [*core.registry.names(), *core.registry.topics]
        assert menu.display and menu.option_count == len(names)
        await type_text(pilot, "se")
        await pilot.pause()
        assert [menu.get_option_at_index(i).id for i in range(menu.option_count)] == [
            "session",
            "set",
        ]


@sync
async def test_newline_key_and_enter_sends_commands(core) -> None:
    app = SteerApp(core)
    async with app.run_test(size=SIZE) as pilot:
        chat_input = app.query_one(ChatInput)
        await type_text(pilot, "a")
        await pilot.press("ctrl+j")
        await type_text(pilot, "b")
        assert chat_input.text == "a\nb"
        chat_input.clear()
        await type_text(pilot, "/set top_k 3")
        await pilot.press("enter")
        await pilot.pause()
        assert core.sampling.top_k == 3 and chat_input.text == ""
        notes = [str(w.render()) for w in app.query("Static.note")]
        assert notes[-1] == "top_k = 3"


@sync
async def test_undo_redraws_and_errors_are_shown(core) -> None:
    app = SteerApp(core)
    async with app.run_test(size=SIZE) as pilot:
        await type_text(pilot, "/undo")
        await pilot.press("enter")
        await pilot.pause()
        assert str(app.query("Static.error").last().render()) == (
            "error: nothing to undo: the conversation is empty"
        )
        await type_text(pilot, "Hi")
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(core.turns) == 2 and not app.busy)
        await type_text(pilot, "/undo")
        await pilot.press("enter")
        await pilot.pause()
        assert core.turns == [] and len(app.query(Markdown)) == 0


@sync
async def test_command_palette_runs_slash_commands(core) -> None:
    app = SteerApp(core)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        await pilot.pause()
        await type_text(pilot, "/clear")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause(0.2)
        notes = [str(w.render()) for w in app.query("Static.note")]
        assert notes[-1] == "conversation cleared"


def test_main_screen_snapshot(snap_compare, core) -> None:
    assert snap_compare(SteerApp(core), terminal_size=(80, 24), run_before=steady_cursor())


@sync
async def test_contrast_shows_progress_and_esc_cancels(core) -> None:
    app = SteerApp(core)
    line = '/contrast slow "Be brief." "Be long." --n 40 --no-calibrate'
    gate = Gate()
    async with app.run_test(size=SIZE) as pilot:
        outcome = core.submit(line)
        job = outcome.job

        def held_at_16(on_progress, cancel):
            def progress(done: int, total: int) -> None:
                on_progress(done, total)
                if done == 16:
                    gate.hold()  # mid-capture, however fast the machine

            return job(progress, cancel)

        outcome.job = held_at_16
        app.start_job(outcome)
        await wait_for(pilot, lambda: app.query_one("#job-bar").progress >= 16)
        label = str(app.query_one("#job-label").render())
        assert label.startswith("capturing activations for 'slow': ") and "/80 · ~" in label
        assert "Esc cancels" in label
        await pilot.press("escape")
        gate.open()
        await wait_for(pilot, lambda: not app.busy)
        await pilot.pause()
        notes = [str(w.render()) for w in app.query("Static.note")]
        assert notes[-1] == "error: /contrast slow cancelled; nothing was built"
        assert "slow" not in core.steering.vectors
        assert len(app.query("#job-bar")) == 0


@sync
async def test_contrast_then_steer_shows_in_the_status_bar(core) -> None:
    app = SteerApp(core)
    async with app.run_test(size=SIZE) as pilot:
        await type_text(pilot, '/contrast t "Be brief." "Be long." --n 3 --no-calibrate')
        await pilot.press("enter")
        await wait_for(pilot, lambda: "t" in core.steering.vectors and not app.busy)
        await pilot.pause()
        # the separation chart and a one-line suggestion
        view = app.query_one(VectorView)
        chart = view.query(BlockChart).last()
        assert chart.title.startswith("held-out effect size per block")
        assert chart.highlight == core.steering.vectors["t"].recommended_range
        lines = "\n".join(str(w.render()) for w in view.query(Static))
        assert lines.startswith("built vector 't' (mean, 3 pairs)")
        assert "apply it: /steer t 1 --layers" in lines
        await type_text(pilot, "/steer t 0.5 --layers 9-13")
        await pilot.press("enter")
        await pilot.pause()
        assert "steering: t +0.5 @9-13" in str(app.query_one("#status").render())


@sync
async def test_a_resumed_session_shows_its_transcript(model, tmp_path) -> None:
    import shutil

    from engine import ChatContext
    from repl.session import attach, detach
    from tests.conftest import ROOT

    samples = ROOT / "sample_sessions"
    shutil.copy(samples / "terse_midway.toml", tmp_path)
    shutil.copytree(samples / "terse_midway.vectors", tmp_path / "terse_midway.vectors")
    core = Core(model, ChatContext(model, n_ctx=1024), GREEDY)
    greeting = attach(core, tmp_path / "terse_midway.toml")
    app = SteerApp(core, greeting)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            users = [str(w.render()) for w in app.query("Static.user")]
            assert users == ["How do plants make food?"] * 2 + ["Why is the ocean salty?"]
            assert str(app.query("Static.stats")[1].render()) == "[9 tokens]"
            assert "steering: terse +1 @9-13" in str(app.query_one("#status").render())
            notes = [str(w.render()) for w in app.query("Static.note")]
            assert any(n.startswith("resumed session") for n in notes)
    finally:
        detach(core)


@sync
async def test_escape_stops_a_replay(core, monkeypatch) -> None:
    from repl.replay import Replayer
    from tests.conftest import ROOT

    gate = Gate()
    monkeypatch.setattr(Replayer, "run", gate.before(Replayer.run))  # held as it starts
    app = SteerApp(core)
    async with app.run_test(size=SIZE) as pilot:
        app.run_line(f"/replay {ROOT / 'sample_sessions' / 'composed_negated.toml'}")
        await wait_for(pilot, gate.reached.is_set)
        assert app.busy
        await pilot.press("escape")
        gate.open()
        await wait_for(pilot, lambda: not app.busy, timeout=60)
        await pilot.pause()
        assert "replay cancelled" in notes_of(app)
        assert not app.query("#job-bar") and core.turns == []


def notes_of(app) -> list[str]:
    return [str(w.render()) for w in app.query("Static.note")]
