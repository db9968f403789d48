"""The Textual chat app.

Generation runs in a thread worker that never touches widgets: it posts `Token` and
`ReplyDone` messages, and the handlers here own every widget. The Core is the shared state
(it has its own lock); the app only reads it to draw.
"""

from __future__ import annotations

import gc
import threading
import time
from functools import partial
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Footer, Markdown, OptionList, ProgressBar, Static, TextArea
from textual.widgets.option_list import Option

from repl.commands import Outcome
from repl.core import Core, Turn
from repl.plain import stats_line
from repl.steer_commands import VectorReport
from repl.streaming import StreamingReply
from repl.widgets import CompareView, SteeringRack, SweepView, VectorView
from repl.workbench import Comparison, Sweep


class Token(Message):
    """A piece of reply text from the worker; `taken` is set once the UI has put it in the
    streaming reply (it is painted at the screen's next refresh)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.taken = threading.Event()


class ReplyDone(Message):
    """The worker's reply is finished (or stopped, or failed)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__()
        self.outcome = outcome


NEWLINE_KEYS = ("ctrl+j", "shift+enter", "alt+enter")


def hold_old_objects(hold: bool) -> None:
    """While llama.cpp works, keep Python's cyclic garbage collector off the objects that
    existed before (gc.freeze), and give them back to it after (gc.unfreeze).

    Drawing a streamed reply allocates enough to set off a full collection now and then (in 1
    of 4 replies of 512 tokens, in each of 1,024), and a full collection walks every object of
    the app: its widgets, the transcript's, Textual's and the tokenizer's (~100,000 objects,
    more as a chat grows). That took 0.1-0.13 s of the UI thread, on a core llama.cpp's
    threads need (bench/app_bench.py --variants). Frozen, a collection sees only what the reply
    itself made; the walk over the rest happens once the work is done, when nothing waits."""
    if hold:
        gc.freeze()
    else:
        gc.unfreeze()


class TokenBatcher:
    """Posts reply text at most every `interval` seconds, and holds the generating thread until
    the UI has taken it.

    llama.cpp's threads meet at a barrier after every operation of the graph, so on a machine
    with as many cores as threads, a UI thread working *while* a token is computed takes a core
    from one of them and stalls them all. Waiting until the handler has put the text in the
    widget keeps that work between two tokens; the paint that follows is one widget's region
    (`StreamingReply`). Waiting for the paint too cost more than it saved: the worker then idles
    until the screen's next refresh (bench/app_bench.py measures the rates).
    """

    def __init__(self, post, interval: float = 1 / 5, max_wait: float = 0.5) -> None:
        self._post = post
        self._interval = interval
        self._max_wait = max_wait  # never wait longer on a UI that is not drawing
        self._parts: list[str] = []
        self._last = 0.0

    def add(self, text: str) -> None:
        self._parts.append(text)
        now = time.monotonic()
        if now - self._last >= self._interval:
            self.flush(wait=True)
            self._last = time.monotonic()

    def flush(self, wait: bool = False) -> None:
        if self._parts:
            token = Token("".join(self._parts))
            self._parts.clear()
            self._post(token)
            if wait:
                token.taken.wait(self._max_wait)


class JobProgress(Message):
    def __init__(self, done: int, total: int) -> None:
        super().__init__()
        self.done = done
        self.total = total


class JobDone(Message):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__()
        self.outcome = outcome


class ChatInput(TextArea):
    """Multi-line input: Enter sends, Ctrl+J (or Shift+Enter) inserts a newline, Tab completes."""

    BINDINGS = [
        Binding(",".join(NEWLINE_KEYS), "newline", "Newline", key_display="^j"),
    ]

    class Submitted(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    async def _on_key(self, event) -> None:
        menu = self.app.query_one("#completions", OptionList)
        if menu.display and event.key in ("up", "down"):
            event.stop()
            event.prevent_default()
            if event.key == "up":
                menu.action_cursor_up()
            else:
                menu.action_cursor_down()
            return
        if event.key == "tab":
            event.stop()
            event.prevent_default()
            self.action_complete()
            return
        if event.key in NEWLINE_KEYS:
            # handled here, not only by the binding, so it keeps its place among typed keys
            event.stop()
            event.prevent_default()
            self.action_newline()
            return
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            if menu.display and menu.highlighted is not None and self._completing_command():
                self.action_complete()
                return
            self.post_message(self.Submitted(self.text))
            return
        await super()._on_key(event)

    def _completing_command(self) -> bool:
        """Enter accepts a completion only while the command name itself is being typed."""
        return self.text.startswith("/") and " " not in self.text

    def action_newline(self) -> None:
        start, end = self.selection
        self.replace("\n", start, end, maintain_selection_offset=False)

    def action_complete(self) -> None:
        app = self.app
        if isinstance(app, SteerApp):
            app.accept_completion()


class SlashCommands(Provider):
    """The command palette lists every slash command."""

    async def discover(self) -> Hits:
        app = self.app
        assert isinstance(app, SteerApp)
        for name, cmd in sorted(app.core.registry.commands.items()):
            yield DiscoveryHit(f"/{name}", partial(app.palette_pick, name), help=cmd.summary)

    async def search(self, query: str) -> Hits:
        app = self.app
        assert isinstance(app, SteerApp)
        matcher = self.matcher(query)
        for name, cmd in sorted(app.core.registry.commands.items()):
            score = matcher.match(f"/{name} {cmd.summary}")
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(f"/{name}"),
                    partial(app.palette_pick, name),
                    help=cmd.summary,
                )


class SteerApp(App):
    """steer's chat screen: transcript, input with completion, status bar."""

    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "steer"
    COMMANDS = App.COMMANDS | {SlashCommands}
    BINDINGS = [
        Binding("escape", "stop", "Stop"),
        Binding("ctrl+r", "focus_rack", "Rack"),
        Binding("ctrl+b", "toggle_rack", "Show/hide rack"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]
    # seconds between two updates of a streaming reply. 5 a second into StreamingReply:
    # 0.93-0.96 of the plain REPL's decode (four runs); 10 a second 0.92 at 80x24 and 0.89 at
    # 160x48 in one of them (bench/app_bench.py --variants; README, "Against llama.cpp's own
    # tools")
    STREAM_INTERVAL = 1 / 5
    STREAM_MAX_WAIT = 0.5
    STREAMING = StreamingReply  # the widget a reply is written into while it streams
    # /compare puts its replies side by side only where both get a readable width
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]

    def __init__(self, core: Core, greeting: list[str] | None = None) -> None:
        super().__init__()
        self.core = core
        self.greeting = greeting or []
        self.cancel = threading.Event()
        self._busy = False
        self._live: StreamingReply | None = None
        self._completion_start = 0
        self._job_start = 0.0
        self._job_label = ""
        self.rack_shown: bool | None = None  # None: shown while any vector is loaded

    def on_unmount(self) -> None:
        hold_old_objects(False)  # an app that ends mid-reply leaves nothing frozen

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            yield VerticalScroll(id="transcript")
            yield SteeringRack(id="rack")
        yield OptionList(id="completions")
        yield ChatInput(id="input", show_line_numbers=False, compact=True)
        yield Static(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#completions").display = False
        self.query_one("#transcript", VerticalScroll).anchor()
        self.note(f"steer · {self.core.model.name} — type a message, /help for commands")
        for line in self.greeting:
            self.note(line)
        for turn in self.core.turns:  # a resumed session
            self.draw_turn(turn)
        self.refresh_status()
        self.query_one(ChatInput).focus()

    def exit(self, *args, **kwargs) -> None:
        """Also stop a reply or job on a worker thread at its next token. The process waits for
        its threads before it ends, so quitting mid-reply used to leave a blank terminal until
        the reply was finished, slower still with no UI to take its updates. The stopped reply
        joins the transcript and the session file, as with Esc."""
        self.cancel.set()
        super().exit(*args, **kwargs)

    @property
    def busy(self) -> bool:
        """True while a reply or a job runs llama.cpp on a worker thread."""
        return self._busy

    @busy.setter
    def busy(self, value: bool) -> None:
        if value != self._busy:
            hold_old_objects(value)
        self._busy = value
        # A blinking cursor repaints the screen twice a second, on the cores llama.cpp's threads
        # need: 0.02-0.1 s more of the UI thread per 256-token reply (bench/app_bench.py). The
        # cursor stays shown, and blinks again once the work is done.
        self.query_one(ChatInput).cursor_blink = not value

    # -- drawing --------------------------------------------------------------------------------

    def note(self, text: str, kind: str = "info") -> None:
        self.query_one("#transcript").mount(Static(text, classes=f"note {kind}", markup=False))

    def draw_turn(self, turn: Turn) -> None:
        transcript = self.query_one("#transcript")
        if turn.role == "user":
            transcript.mount(Static(turn.text, classes="user", markup=False))
            return
        transcript.mount(Markdown(turn.text, classes="assistant"))
        if turn.reply is not None:
            transcript.mount(Static(stats_line(turn.reply), classes="stats", markup=False))

    def redraw(self) -> None:
        transcript = self.query_one("#transcript")
        transcript.remove_children()
        for turn in self.core.turns:
            self.draw_turn(turn)

    @staticmethod
    def view_widget(view) -> Static | None:
        if isinstance(view, VectorReport):
            return VectorView(view)
        if isinstance(view, Comparison):
            return CompareView(view)
        if isinstance(view, Sweep):
            return SweepView(view)
        return None

    def refresh_status(self, writing: bool = False) -> None:
        self.refresh_rack()
        s = self.core.status()
        rate = f"{s['tokens_per_s']:.1f} tok/s" if s["tokens_per_s"] else "– tok/s"
        steering = s["steering"] or "none"
        line = f"{s['model']} · ctx {s['ctx_used']}/{s['ctx_size']} · {rate} · steering: {steering}"
        if writing:
            line += " · writing… (Esc stops)"
        self.query_one("#status", Static).update(line)

    def show(self, outcome: Outcome) -> None:
        view = self.view_widget(outcome.view)
        if view is not None:
            self.query_one("#transcript").mount(view)
            if isinstance(view, CompareView | SweepView):
                view.focus()  # a SweepView hands focus to its table
            # the view's top (its chart or table) matters more than the transcript's tail
            self.call_after_refresh(view.scroll_visible, top=True, animate=False)
        for message in outcome.info:
            self.note(message)
        for message in outcome.errors:
            self.note(f"error: {message}", "error")

    # -- input ----------------------------------------------------------------------------------

    @on(ChatInput.Submitted)
    def submitted(self, event: ChatInput.Submitted) -> None:
        if not event.text.strip():
            return
        if self.busy:
            self.notify("steer is busy: wait, or press Esc to stop it.")
            return
        chat_input = self.query_one(ChatInput)
        chat_input.clear()
        self.hide_completions()
        self.run_line(event.text)

    def run_line(self, line: str) -> None:
        before = len(self.core.turns)
        outcome = self.core.submit(line)
        if outcome.transcript_changed:
            self.redraw()
        elif len(self.core.turns) > before:
            self.draw_turn(self.core.turns[-1])
        self.show(outcome)
        self.refresh_status()
        if outcome.quit:
            self.exit()
        elif outcome.job is not None:
            self.start_job(outcome)
        elif outcome.generate:
            self.start_reply()

    def palette_pick(self, name: str) -> None:
        cmd = self.core.registry.commands[name]
        if any(not a.optional for a in cmd.args):
            chat_input = self.query_one(ChatInput)
            chat_input.text = f"/{name} "
            chat_input.move_cursor(chat_input.document.end)
            chat_input.focus()
        elif not self.busy:
            self.run_line(f"/{name}")

    # -- completion -----------------------------------------------------------------------------

    @on(TextArea.Changed, "#input")
    def input_changed(self, event: TextArea.Changed) -> None:
        chat_input = self.query_one(ChatInput)
        text = chat_input.document.get_text_range((0, 0), chat_input.cursor_location)
        menu = self.query_one("#completions", OptionList)
        start, candidates = self.core.complete(text) if "\n" not in text else (0, [])
        if candidates == [text[start:]]:
            candidates = []
        self._completion_start = start
        menu.clear_options()
        if candidates:
            menu.add_options([self._option(c) for c in candidates[:50]])
            menu.highlighted = 0
        menu.display = bool(candidates)

    def _option(self, candidate: str) -> Option:
        cmd = self.core.registry.commands.get(candidate[1:]) if candidate[:1] == "/" else None
        label = Text(candidate)
        if cmd is not None:
            label.append(f"  {cmd.summary}", style="dim")
        return Option(label, id=candidate)

    def hide_completions(self) -> None:
        self.query_one("#completions", OptionList).display = False

    def accept_completion(self) -> None:
        menu = self.query_one("#completions", OptionList)
        if not menu.display or menu.highlighted is None:
            return
        choice = menu.get_option_at_index(menu.highlighted).id or ""
        chat_input = self.query_one(ChatInput)
        end = chat_input.cursor_location
        before = chat_input.document.get_text_range((0, 0), end)
        row, col = end
        start_col = col - (len(before) - self._completion_start)
        chat_input.replace(choice + " ", (row, start_col), end)
        self.hide_completions()

    @on(OptionList.OptionSelected, "#completions")
    def completion_clicked(self, event: OptionList.OptionSelected) -> None:
        self.accept_completion()
        self.query_one(ChatInput).focus()

    # -- generation -----------------------------------------------------------------------------

    def start_reply(self) -> None:
        self.busy = True
        self.cancel.clear()
        self._live = self.STREAMING(classes="assistant")
        self.query_one("#transcript").mount(self._live)
        self.refresh_status(writing=True)
        self.generate_reply()

    @work(thread=True, exclusive=True, group="reply")
    def generate_reply(self) -> None:
        batch = TokenBatcher(self.post_message, self.STREAM_INTERVAL, self.STREAM_MAX_WAIT)
        outcome = self.core.generate(batch.add, self.cancel)
        batch.flush()
        self.post_message(ReplyDone(outcome))

    def on_token(self, message: Token) -> None:
        if self._live is not None:
            self._live.append(message.text)
        message.taken.set()

    async def on_reply_done(self, message: ReplyDone) -> None:
        outcome = message.outcome
        live, self._live = self._live, None
        transcript = self.query_one("#transcript")
        if outcome.reply is not None:
            # the Markdown takes the streamed text's place, as the transcript draws a reply
            await transcript.mount(Markdown(outcome.reply.text, classes="assistant"), before=live)
            transcript.mount(Static(stats_line(outcome.reply), classes="stats", markup=False))
        if live is not None:
            await live.remove()
        if outcome.transcript_changed:
            self.redraw()
        self.show(outcome)
        self.busy = False
        self.refresh_status()

    # -- long jobs (/contrast) --------------------------------------------------------------------

    def start_job(self, outcome: Outcome) -> None:
        self.busy = True
        self.cancel.clear()
        self._job_start = time.monotonic()
        self._job_label = outcome.job_label
        bar = ProgressBar(total=outcome.job_total or None, show_eta=False, id="job-bar")
        label = Static(f"{outcome.job_label}… (Esc cancels)", id="job-label", classes="note")
        transcript = self.query_one("#transcript")
        transcript.mount(label)
        transcript.mount(bar)
        self.run_job(outcome)

    @work(thread=True, exclusive=True, group="job")
    def run_job(self, outcome: Outcome) -> None:
        result = self.core.run_job(
            outcome, lambda done, total: self.post_message(JobProgress(done, total)), self.cancel
        )
        self.post_message(JobDone(result))

    def on_job_progress(self, message: JobProgress) -> None:
        self.query_one("#job-bar", ProgressBar).update(total=message.total, progress=message.done)
        spent = time.monotonic() - self._job_start
        left = spent / message.done * (message.total - message.done) if message.done else 0
        self.query_one("#job-label", Static).update(
            f"{self._job_label}: {message.done}/{message.total} · ~{left:.0f}s left (Esc cancels)"
        )

    async def on_job_done(self, message: JobDone) -> None:
        for widget_id in ("#job-bar", "#job-label"):
            await self.query_one(widget_id).remove()
        self.show(message.outcome)
        self.busy = False
        self.refresh_status()

    def action_stop(self) -> None:
        if self.query_one("#completions").display:
            self.hide_completions()
        elif self.busy:
            self.cancel.set()

    # -- the steering rack ------------------------------------------------------------------------

    def refresh_rack(self) -> None:
        rack = self.query_one(SteeringRack)
        shown = self.rack_shown
        rack.display = bool(self.core.steering.vectors) if shown is None else shown
        rack.refresh()

    def action_toggle_rack(self) -> None:
        rack = self.query_one(SteeringRack)
        self.rack_shown = not rack.display
        self.refresh_rack()
        if not rack.display and rack.has_focus:
            self.focus_input()

    def action_focus_rack(self) -> None:
        self.rack_shown = True
        self.refresh_rack()
        self.query_one(SteeringRack).focus()

    def rack_line(self, line: str) -> bool:
        """Run a /steer line for a rack key; True if it took effect."""
        if self.busy:
            self.notify("steer is busy: change steering once the reply or job ends (Esc stops it)")
            return False
        outcome = self.core.submit(line)
        for message in outcome.errors:
            self.note(f"error: {message}", "error")
        for message in outcome.info:
            if message.startswith("warning"):
                self.notify(message, severity="warning")
        self.refresh_status()
        return not outcome.errors

    def focus_input(self) -> None:
        self.query_one(ChatInput).focus()
