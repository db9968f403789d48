"""The Textual app's decode speed against the plain REPL's, driven headless (App.run_test).

Each round answers the same greedy message (a story, `--tokens` long) in the plain REPL
(writing to an in-memory stream) and in the app at 80x24 and at 160x48, in ABBA order, and
compares the decode rates steer reports (tokens after the first / their time). The app's cost
is what its UI thread (drawing the streamed reply: plain text in `StreamingReply`, Markdown once
it is done) takes from llama.cpp's threads; the UI thread's CPU time while the reply is
written is printed too, with the garbage collector's full collections in that time. --variants
adds five alternatives measured against it: 10 updates a second instead of 5, the input's cursor
blinking while the model writes, the garbage collector walking every object while it writes,
the whole streamed reply wrapped and drawn again on every update, and the reply streamed into
Textual's Markdown widget (the last four as the app did before).
Other processes on the machine add noise: read the spread, not only the median.
Run with `.venv/bin/python bench/app_bench.py` (part of `make bench`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import os
import statistics
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from textual.content import Content  # noqa: E402
from textual.widgets import Markdown, Static  # noqa: E402

from engine import ChatContext, Model, Sampling  # noqa: E402
from repl.app import ChatInput, ReplyDone, SteerApp, Token  # noqa: E402
from repl.core import Core  # noqa: E402
from repl.plain import PlainRepl  # noqa: E402

STORY = "Write a long story about a dragon."
SIZES = ((80, 24), (160, 48))


def fresh_core(model: Model, tokens: int) -> Core:
    core = Core(model, ChatContext(model, n_ctx=2048), Sampling(temperature=0, max_tokens=tokens))
    core.sampling = replace(core.sampling, max_tokens=tokens)
    return core


def plain_rate(model: Model, tokens: int) -> float:
    """The plain REPL's reply, made on a thread of its own that then ends, as the app's replies
    are: this process's main thread (the app's UI thread) must never run llama.cpp. Once a
    thread that lives on has run llama.cpp's OpenMP threads, libgomp counts more threads than
    cores and makes every other thread's barrier wait 100 spins long: a reply made on another
    thread (the app's worker) then decodes ~2.8x slower (26 against 75 tok/s, measured)."""
    got: list[float] = []

    def reply() -> None:
        core = fresh_core(model, tokens)
        repl = PlainRepl(core, out=io.StringIO())
        repl.handle(STORY)
        assert core.last_reply is not None and core.last_reply.tokens == tokens, core.last_reply
        core.ctx.close()
        got.append(core.last_reply.tokens_per_s)

    thread = threading.Thread(target=reply)
    thread.start()
    thread.join()
    return got[0]


UI_CPU: dict[str, list[float]] = {}
FULL_COLLECTIONS: dict[str, list[float]] = {}  # seconds of each full collection in a reply


class CollectorWatch:
    """Times Python's full (generation 2) collections, on whichever thread they run."""

    def __init__(self) -> None:
        self.full: list[float] = []
        self._start = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.full.append(time.perf_counter() - self._start)


class FastUpdateApp(SteerApp):
    """The app with 10 updates a second of the streaming reply instead of 5."""

    STREAM_INTERVAL = 1 / 10


class BlinkingApp(SteerApp):
    """The app with the input's cursor blinking while the model writes."""

    @SteerApp.busy.setter
    def busy(self, value: bool) -> None:
        SteerApp.busy.fset(self, value)
        self.query_one(ChatInput).cursor_blink = True


class UnheldApp(SteerApp):
    """The app with Python's garbage collector walking every object while the model writes
    (no gc.freeze; `repl.app.hold_old_objects`)."""

    @SteerApp.busy.setter
    def busy(self, value: bool) -> None:
        self._busy = value
        self.query_one(ChatInput).cursor_blink = not value


class WholeRedraw(Static):
    """StreamingReply as it was: the whole reply wrapped and drawn again on every update."""

    STEP = 8

    def __init__(self, classes: str | None = None) -> None:
        super().__init__("", markup=False, classes=classes)
        self.text = ""
        self._height = 0

    def append(self, text: str) -> None:
        self.text += text
        width = self.content_size.width or self.app.size.width
        rows = len(Content(self.text).wrap(max(1, width)))
        height = -(-rows // self.STEP) * self.STEP + self.styles.gutter.height
        grow = height != self._height
        if grow:
            self._height = height
            self.styles.height = height
        self.update(self.text, layout=grow)


class WholeRedrawApp(SteerApp):
    """The app with the streamed reply in `WholeRedraw`."""

    STREAMING = WholeRedraw


class MarkdownStreamingApp(SteerApp):
    """The app as it was before `StreamingReply`: the reply streamed into Textual's Markdown
    widget (MarkdownStream re-parses only the last block, but the screen is laid out again as
    it grows), the worker held until each update was painted."""

    def start_reply(self) -> None:
        super().start_reply()
        self._md = Markdown("", classes="assistant")
        self.query_one("#transcript").mount(self._md, before=self._live)
        self._live.display = False

    async def on_token(self, message: Token) -> None:
        message.prevent_default()  # not SteerApp's StreamingReply
        await self._md.append(message.text)
        self.call_after_refresh(message.taken.set)

    async def on_reply_done(self, message: ReplyDone) -> None:
        await self._md.remove()  # Textual then calls SteerApp.on_reply_done (per class)


async def _app_rate(model: Model, tokens: int, size: tuple[int, int], app_class) -> float:
    """The reply's decode rate; the UI thread's CPU time while the reply was written goes to
    UI_CPU (the event loop of run_test is the app's UI thread; the final Markdown, drawn once
    the decode is over, is not counted). The wait polls with asyncio.sleep, not Pilot.pause:
    Pilot.pause sends a message to every widget and forces a screen refresh, work the app
    does not do by itself (with it, the UI thread spent ~0.1 s more per reply)."""
    core = fresh_core(model, tokens)
    app = app_class(core)
    watch = CollectorWatch()
    async with app.run_test(size=size) as pilot:
        await pilot.press(*[{" ": "space"}.get(c, c) for c in STORY])
        t0 = time.thread_time()
        gc.callbacks.append(watch)
        await pilot.press("enter")
        while core.last_reply is None:
            await asyncio.sleep(0.05)
        gc.callbacks.remove(watch)
        label = f"{LABELS[app_class]} {size[0]}x{size[1]}"
        UI_CPU.setdefault(label, []).append(time.thread_time() - t0)
        FULL_COLLECTIONS.setdefault(label, []).extend(watch.full)
        while not (len(core.turns) == 2 and not app.busy):
            await asyncio.sleep(0.05)
        await pilot.pause()
    reply = core.last_reply
    assert reply is not None and reply.tokens == tokens, reply
    core.ctx.close()
    return reply.tokens_per_s


LABELS = {
    SteerApp: "app",
    FastUpdateApp: "app, 10 updates/s,",
    BlinkingApp: "app, cursor blinking,",
    UnheldApp: "app, collector on every object,",
    WholeRedrawApp: "app, whole reply redrawn,",
    MarkdownStreamingApp: "app, Markdown while streaming,",
}


def app_rate(model: Model, tokens: int, size: tuple[int, int], app_class=SteerApp) -> float:
    return asyncio.run(_app_rate(model, tokens, size, app_class))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument(
        "--variants",
        action="store_true",
        help="also run the app with 10 updates/s, with the cursor blinking while the model "
        "writes, with the collector on every object, redrawing the whole reply, and streaming "
        "into Markdown (as before)",
    )
    args = parser.parse_args()
    model = Model()
    arms = {"plain REPL": lambda: plain_rate(model, args.tokens)}
    for w, h in SIZES:
        arms[f"app {w}x{h}"] = lambda w=w, h=h: app_rate(model, args.tokens, (w, h))
    if args.variants:
        for cls in (FastUpdateApp, BlinkingApp, UnheldApp, WholeRedrawApp, MarkdownStreamingApp):
            for w, h in SIZES:
                arms[f"{LABELS[cls]} {w}x{h}"] = lambda w=w, h=h, cls=cls: app_rate(
                    model, args.tokens, (w, h), cls
                )
    got: dict[str, list[float]] = {name: [] for name in arms}
    names = list(arms)
    for i in range(args.rounds):
        for name in names if i % 2 == 0 else reversed(names):
            got[name].append(arms[name]())
    print(
        f"decode in the app against the plain REPL, {args.tokens} tokens greedy, "
        f"{args.rounds} ABBA rounds, GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}"
    )
    for name, values in got.items():
        print(
            f"  {name:40s}: {statistics.median(values):7.1f} tok/s (median; "
            f"min {min(values):.1f}, max {max(values):.1f})"
        )
    for name, values in UI_CPU.items():
        print(f"  UI thread CPU, {name}: {statistics.median(values):.3f} s per reply (median)")
        full = FULL_COLLECTIONS[name]
        print(
            f"    full collections of the garbage collector while it wrote: {len(full)} in "
            f"{len(values)} replies, {sum(full):.3f} s"
        )
    for name in names[1:]:
        paired = [a / p for a, p in zip(got[name], got["plain REPL"], strict=True)]
        print(
            f"  ratio {name} / plain: {statistics.median(paired):.3f} (median of paired; "
            f"min {min(paired):.3f}, max {max(paired):.3f})"
        )


if __name__ == "__main__":
    main()
