"""The streaming reply widget, in a small Textual app of its own (no model needed)."""

from __future__ import annotations

import asyncio

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
