"""The Textual app's decode speed against the plain REPL's, driven headless (App.run_test).

Each round answers the same greedy message (a story, `--tokens` long) in the plain REPL
(writing to an in-memory stream) and in the app at 80x24 and at 160x48, in ABBA order, and
compares the decode rates steer reports (tokens after the first / their time). The app's cost
is what its UI thread (Markdown rendering of the streamed reply) takes from llama.cpp's threads.
Other processes on the machine add noise: read the spread, not only the median.
Run with `.venv/bin/python bench/app_bench.py` (part of `make bench`).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "passive")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from textual.widgets import Markdown  # noqa: E402

from engine import ChatContext, Model, Sampling  # noqa: E402
from repl.app import ReplyDone, SteerApp, Token  # noqa: E402
from repl.core import Core  # noqa: E402
from repl.plain import PlainRepl  # noqa: E402

STORY = "Write a long story about a dragon."
SIZES = ((80, 24), (160, 48))


def fresh_core(model: Model, tokens: int) -> Core:
    core = Core(model, ChatContext(model, n_ctx=2048), Sampling(temperature=0, max_tokens=tokens))
    core.sampling = replace(core.sampling, max_tokens=tokens)
    return core


def plain_rate(model: Model, tokens: int) -> float:
    core = fresh_core(model, tokens)
    repl = PlainRepl(core, out=io.StringIO())
    repl.handle(STORY)
    reply = core.last_reply
    assert reply is not None and reply.tokens == tokens, reply
    core.ctx.close()
    return reply.tokens_per_s


UI_CPU: dict[str, list[float]] = {}


class MarkdownStreamingApp(SteerApp):
    """The app as it streamed before: the reply re-rendered as Markdown (Textual's
    MarkdownStream) on every update, instead of plain text until it is done."""

    def start_reply(self) -> None:
        self._md = Markdown("", classes="assistant")
        self.query_one("#transcript").mount(self._md)
        self._md_stream = Markdown.get_stream(self._md)
        super().start_reply()

    async def on_token(self, message: Token) -> None:
        message.prevent_default()  # not SteerApp's plain-text update
        await self._md_stream.write(message.text)

    async def on_reply_done(self, message: ReplyDone) -> None:
        await self._md_stream.stop()


async def _app_rate(model: Model, tokens: int, size: tuple[int, int], app_class) -> float:
    """The reply's decode rate; the UI thread's CPU time while it streamed goes to UI_CPU
    (the event loop of run_test is the app's UI thread)."""
    core = fresh_core(model, tokens)
    app = app_class(core)
    async with app.run_test(size=size) as pilot:
        await pilot.press(*[{" ": "space"}.get(c, c) for c in STORY])
        t0 = time.thread_time()
        await pilot.press("enter")
        while not (len(core.turns) == 2 and not app.busy):
            await pilot.pause(0.05)
        await pilot.pause()
        label = f"{LABELS[app_class]} {size[0]}x{size[1]}"
        UI_CPU.setdefault(label, []).append(time.thread_time() - t0)
    reply = core.last_reply
    assert reply is not None and reply.tokens == tokens, reply
    core.ctx.close()
    return reply.tokens_per_s


LABELS = {SteerApp: "app", MarkdownStreamingApp: "app, Markdown while streaming,"}


def app_rate(model: Model, tokens: int, size: tuple[int, int], app_class=SteerApp) -> float:
    return asyncio.run(_app_rate(model, tokens, size, app_class))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="also run the app as it streamed before (Markdown re-rendered on every update)",
    )
    args = parser.parse_args()
    model = Model()
    arms = {"plain REPL": lambda: plain_rate(model, args.tokens)}
    for w, h in SIZES:
        arms[f"app {w}x{h}"] = lambda w=w, h=h: app_rate(model, args.tokens, (w, h))
    if args.markdown:
        for w, h in SIZES:
            arms[f"app, Markdown while streaming, {w}x{h}"] = lambda w=w, h=h: app_rate(
                model, args.tokens, (w, h), MarkdownStreamingApp
            )
    got: dict[str, list[float]] = {name: [] for name in arms}
    names = list(arms)
    for i in range(args.rounds):
        for name in names if i % 2 == 0 else reversed(names):
            got[name].append(arms[name]())
    print(
        f"decode in the app against the plain REPL, {args.tokens} tokens greedy, "
        f"{args.rounds} ABBA rounds, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
    )
    for name, values in got.items():
        print(
            f"  {name:40s}: {statistics.median(values):7.1f} tok/s (median; "
            f"min {min(values):.1f}, max {max(values):.1f})"
        )
    for name, values in UI_CPU.items():
        print(f"  UI thread CPU, {name}: {statistics.median(values):.3f} s per reply (median)")
    for name in names[1:]:
        paired = [a / p for a, p in zip(got[name], got["plain REPL"], strict=True)]
        print(
            f"  ratio {name} / plain: {statistics.median(paired):.3f} (median of paired; "
            f"min {min(paired):.3f}, max {max(paired):.3f})"
        )


if __name__ == "__main__":
    main()
