"""The streaming reply widget, in a small Textual app of its own (no model needed)."""

from __future__ import annotations

import asyncio
import random

from textual.app import App, ComposeResult
from textual.containers import VerticalScroll
from textual.content import Content
from textual.geometry import Region

from repl.streaming import StreamingReply

WIDTH = 40


class Host(App):
    CSS = "StreamingReply { padding: 0 1; }"

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield StreamingReply()


def rows(widget: StreamingReply) -> int:
    return len(Content(widget.text).wrap(widget.content_size.width))


def test_height_grows_in_steps_and_holds_every_row_of_the_text() -> None:
    async def run() -> tuple[list[int], list[int], str]:
        app = Host()
        heights, wrapped = [], []
        async with app.run_test(size=(WIDTH, 40)) as pilot:
            live = app.query_one(StreamingReply)
            for piece in ["Once upon a time", " there was a dragon.", "\n\n", "word " * 80]:
                live.append(piece)
                await pilot.pause()
                heights.append(live.size.height)
                wrapped.append(rows(live))
            lines = live.render_lines(Region(0, 0, *live.size))
            shown = "\n".join(line.text.rstrip() for line in lines)
        return heights, wrapped, shown

    heights, wrapped, shown = asyncio.run(run())
    step = StreamingReply.STEP
    assert all(h % step == 0 for h in heights), heights
    assert all(h - step < w <= h for h, w in zip(heights, wrapped, strict=True)), (heights, wrapped)
    assert heights[0] == step and heights[-1] > step  # it grew once the text passed a step
    assert "Once upon a time there was a dragon." in shown and shown.count("word") == 80


def test_rows_wrapped_a_piece_at_a_time_are_the_whole_texts_and_only_changed_rows_repaint() -> None:
    """The widget wraps only its last paragraph on each update; after every piece its rows are
    the whole text wrapped at once, and the rows it repaints start where they changed."""
    rng = random.Random(7)
    words = ["a", "dragon", "flew", "x" * 50, "\n", "\n\n", "é", "日本語", " ", "  "]
    text = "".join(rng.choice(words) + rng.choice(["", " "]) for _ in range(400))

    async def run() -> tuple[int, int, list[str]]:
        app = Host()
        problems = []
        async with app.run_test(size=(WIDTH, 40)) as pilot:
            live = app.query_one(StreamingReply)
            await pilot.pause()
            width = live.content_size.width
            repaints: list[tuple] = []
            live.refresh = lambda *regions, **kw: repaints.append(regions)  # record only
            at, before, partial = 0, [], 0
            while at < len(text):
                piece = text[at : at + rng.randint(1, 12)]
                at += len(piece)
                repaints.clear()
                live.append(piece)
                now = [row.plain for row in live._done + live._tail]
                if now != [row.plain for row in Content(live.text).wrap(width)]:
                    problems.append(f"rows differ after {at} characters")
                changed = next(
                    (i for i, (a, b) in enumerate(zip(before, now, strict=False)) if a != b),
                    min(len(before), len(now)),
                )
                step = StreamingReply.STEP
                grew = -(-len(now) // step) != -(-len(before) // step)  # all of it repaints
                if not grew and now != before:
                    if repaints == [(Region(0, changed, width, len(now) - changed),)]:
                        partial += 1
                    else:
                        problems.append(f"repainted {repaints}, not from row {changed}, at {at}")
                before = now
        return len(before), partial, problems

    rows, partial, problems = asyncio.run(run())
    assert rows > 100 and partial > 100 and not problems, problems[:5]
