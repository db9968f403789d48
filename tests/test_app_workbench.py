"""The workbench in the Textual app: rack keys, compare, sweep and vector views (Pilot)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from textual.widgets import DataTable, Markdown, Static

from engine import ChatContext
from repl.app import SteerApp
from repl.core import Core
from repl.session import attach, detach
from repl.session_file import load_session
from repl.widgets import BlockChart, CompareView, SteeringRack, SweepView, VectorView
from tests.conftest import GREEDY, Gate, steady_cursor
from tests.test_app import sync, type_text, wait_for
from vectors import SteeringVector

SHORT = replace(GREEDY, max_tokens=24)
QUESTION = "What is a volcano?"


@pytest.fixture
def wb_core(model, terse) -> Core:
    """A chat that knows a copy of the terse vector, with fixed provenance for snapshots."""
    core = Core(model, ChatContext(model, n_ctx=1024), SHORT)
    meta = {**terse.meta, "created": "2026-11-29T00:00:00+00:00"}
    core.steering.add(SteeringVector("terse", terse.directions, meta))
    return core


def notes(app) -> list[str]:
    return [str(w.render()) for w in app.query("Static.note")]


async def run_and_wait(pilot, app, line: str) -> None:
    app.run_line(line)
    await wait_for(pilot, lambda: not app.busy, timeout=120)
    await pilot.pause(0.2)


# -- the rack -------------------------------------------------------------------------------------


@sync
async def test_rack_keys_steer_and_are_recorded_like_steer(wb_core: Core, tmp_path) -> None:
    path = tmp_path / "rack.toml"
    attach(wb_core, path)
    app = SteerApp(wb_core)
    active = wb_core.steering.active
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            rack = app.query_one(SteeringRack)
            assert rack.display  # shown because a vector is loaded
            await pilot.press("ctrl+r")
            assert rack.has_focus
            await pilot.press("space")  # on, at the recommendation
            assert active["terse"].strength == 1.0 and active["terse"].layers == (9, 13)
            await pilot.press("right", "shift+right", "left")  # +0.1 +0.5 -0.1
            assert active["terse"].strength == 1.5
            await pilot.press("r")
            assert active["terse"].strength == 1.0
            await pilot.press("right", "space")  # 1.1, then off
            assert "terse" not in active
            assert "+1.10" in str(rack.render())  # an inactive vector shows its last setting
            await pilot.press("space")  # back on as it was
            assert active["terse"].strength == 1.1
            assert "steering: terse +1.1 @9-13" in str(app.query_one("#status").render())
            await pilot.press("escape")
            assert not rack.has_focus
            await type_text(pilot, "Hi")
            await pilot.press("enter")
            await wait_for(pilot, lambda: len(wb_core.turns) == 2 and not app.busy)
            await pilot.press("ctrl+b")  # hidden; the status bar still tells
            assert not rack.display
            assert "steering: terse +1.1 @9-13" in str(app.query_one("#status").render())
    finally:
        detach(wb_core)
    events = load_session(path).events
    commands = [e.text for e in events if e.kind == "command"]
    assert commands == [
        "/steer terse",
        "/steer terse 1.1 --layers 9-13",
        "/steer terse 1.6 --layers 9-13",
        "/steer terse 1.5 --layers 9-13",
        "/steer terse",
        "/steer terse 1.1 --layers 9-13",
        "/steer terse off",
        "/steer terse 1.1 --layers 9-13",
    ]
    assert events[-1].kind == "assistant"
    assert events[-1].steering == [{"name": "terse", "strength": 1.1, "layers": [9, 13]}]


@sync
async def test_rack_waits_while_a_reply_is_written(wb_core: Core) -> None:
    wb_core.sampling = replace(GREEDY, max_tokens=400)
    app = SteerApp(wb_core)
    async with app.run_test(size=(100, 30)) as pilot:
        await type_text(pilot, "Write a long story.")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.busy)
        app.query_one(SteeringRack).action_toggle()
        assert wb_core.steering.active == {}  # refused, not applied mid-reply
        app.action_stop()
        await wait_for(pilot, lambda: not app.busy)


# -- compare --------------------------------------------------------------------------------------


@sync
async def test_compare_shows_both_and_the_pick_continues(wb_core: Core) -> None:
    app = SteerApp(wb_core)
    async with app.run_test(size=(100, 30)) as pilot:
        await run_and_wait(pilot, app, "/steer terse")
        await type_text(pilot, f"/compare {QUESTION}")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.busy and app.query(CompareView), timeout=120)
        await pilot.pause(0.2)
        view = app.query_one(CompareView)
        comparison = wb_core.comparison
        titles = [str(w.render()) for w in view.query(".pane-title")]
        assert titles == [
            f"1 · unsteered · {comparison.unsteered.tokens} tokens",
            f"2 · steered: terse +1 @9-13 · {comparison.steered.tokens} tokens",
        ]
        texts = [md.source for md in view.query(Markdown)]
        assert texts == [comparison.unsteered.text, comparison.steered.text]
        assert view.has_focus and wb_core.turns == []
        await pilot.press("2")
        await pilot.pause(0.2)
        assert [(t.role, t.text) for t in wb_core.turns] == [
            ("user", QUESTION),
            ("assistant", comparison.steered.text),
        ]
        assert not app.query(CompareView)  # the transcript is redrawn with the kept reply
        assert [md.source for md in app.query("Markdown.assistant")] == [comparison.steered.text]
        assert app.query_one("#input").has_focus
        await type_text(pilot, "Thanks")
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(wb_core.turns) == 4 and not app.busy)


@sync
async def test_compare_is_stacked_when_narrow(wb_core: Core) -> None:
    app = SteerApp(wb_core)
    async with app.run_test(size=(80, 24)) as pilot:
        await run_and_wait(pilot, app, "/steer terse")
        await run_and_wait(pilot, app, f"/compare {QUESTION}")
        panes = list(app.query(".compare-pane"))
        assert panes[0].region.x == panes[1].region.x and panes[1].region.y > panes[0].region.y
        await pilot.press("0")
        await pilot.pause()
        assert wb_core.turns == [] and notes(app)[-1].startswith("kept neither")


# -- sweep ----------------------------------------------------------------------------------------


@sync
async def test_sweep_table_shows_replies_and_enter_applies(wb_core: Core) -> None:
    app = SteerApp(wb_core)
    async with app.run_test(size=(100, 30)) as pilot:
        await run_and_wait(pilot, app, f'/sweep terse 0.5,1,3 --prompt "{QUESTION}"')
        view = app.query_one(SweepView)
        table = view.query_one(DataTable)
        assert table.has_focus and table.row_count == 4
        result = view.result
        shown = str(view.query_one(".sweep-reply", Static).render())
        best = result.recommended
        current = (
            result.baseline if best is None else next(r for r in result.rows if r.strength == best)
        )
        assert shown.endswith(current.reply.text)
        table.move_cursor(row=3)
        await pilot.pause()
        assert str(view.query_one(".sweep-reply", Static).render()) == (
            f"+3: {result.rows[2].reply.text}"
        )
        await pilot.press("enter")
        await pilot.pause()
        assert wb_core.steering.active["terse"].strength == 3.0
        assert any(n.startswith("steering: terse 3 on blocks 9-13") for n in notes(app))


@sync
async def test_escape_cancels_sweep_and_compare(wb_core: Core, monkeypatch) -> None:
    wb_core.sampling = replace(GREEDY, max_tokens=400)
    app = SteerApp(wb_core)
    async with app.run_test(size=(100, 30)) as pilot:
        await run_and_wait(pilot, app, "/steer terse 3")
        for line, message in (
            ("/sweep terse 2,3,4,5 --prompt Hi", "error: /sweep terse cancelled; nothing changed"),
            ("/compare Tell me a long story.", "error: /compare cancelled; nothing changed"),
        ):
            gate = Gate()  # each job is held before its first reply, however fast the machine
            monkeypatch.setattr(wb_core, "answer", gate.before(Core.answer.__get__(wb_core)))
            app.run_line(line)
            await wait_for(pilot, gate.reached.is_set)
            assert app.busy
            await pilot.press("escape")
            gate.open()
            await wait_for(pilot, lambda: not app.busy, timeout=60)
            await pilot.pause()
            assert notes(app)[-1] == message
            assert not app.query(SweepView) and not app.query(CompareView)
            assert not app.query("#job-bar")
        assert wb_core.turns == [] and wb_core.comparison is None


# -- vector charts --------------------------------------------------------------------------------


@sync
async def test_vector_show_draws_charts_with_the_recommended_range(wb_core: Core) -> None:
    app = SteerApp(wb_core)
    async with app.run_test(size=(100, 30)) as pilot:
        await run_and_wait(pilot, app, "/vector show terse")
        view = app.query_one(VectorView)
        charts = list(view.query(BlockChart))
        assert [c.title.split(" (")[0] for c in charts] == [
            "norm per block",
            "held-out effect size per block",
        ]
        assert all(c.highlight == (9, 13) for c in charts)
        rendered = str(charts[1].render())
        assert rendered.splitlines()[-1].strip().endswith("recommended 9-13")
        text = "\n".join(str(w.render()) for w in view.query(Static))
        assert "suggested: /steer terse 1 --layers 9-13" in text
        assert "positive: Respond tersely, in one short sentence." in text


# -- snapshots ------------------------------------------------------------------------------------

SIZES = [(80, 24), (160, 48)]


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "160x48"])
def test_rack_snapshot(snap_compare, wb_core: Core, size) -> None:
    wb_core.submit("/vector mix casual terse*-0.5")

    async def before(pilot) -> None:
        await run_and_wait(pilot, pilot.app, "/steer terse 1.2")
        await pilot.press("ctrl+r", "down")

    assert snap_compare(SteerApp(wb_core), terminal_size=size, run_before=steady_cursor(before))


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "160x48"])
def test_compare_snapshot(snap_compare, wb_core: Core, size) -> None:
    async def before(pilot) -> None:
        await run_and_wait(pilot, pilot.app, "/steer terse")
        await run_and_wait(pilot, pilot.app, f"/compare {QUESTION}")

    assert snap_compare(SteerApp(wb_core), terminal_size=size, run_before=steady_cursor(before))


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "160x48"])
def test_sweep_snapshot(snap_compare, wb_core: Core, size) -> None:
    async def before(pilot) -> None:
        await run_and_wait(pilot, pilot.app, f'/sweep terse 0.5,1,3 --prompt "{QUESTION}"')

    assert snap_compare(SteerApp(wb_core), terminal_size=size, run_before=steady_cursor(before))


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "160x48"])
def test_vector_view_snapshot(snap_compare, wb_core: Core, size) -> None:
    async def before(pilot) -> None:
        await run_and_wait(pilot, pilot.app, "/vector show terse")

    assert snap_compare(SteerApp(wb_core), terminal_size=size, run_before=steady_cursor(before))
