"""The plain line REPL: prompt_toolkit in a terminal, line-by-line when piped.

Headless by design: this module (and everything it imports) never imports Textual, so
scripts, CI and replay run without it.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

from prompt_toolkit.completion import Completer, Completion

from repl.commands import Outcome
from repl.core import Core
from repl.test_hooks import progress_reported


def reply_event(reply, steering) -> dict:
    return {
        "type": "reply",
        "text": reply.text,
        "tokens": reply.tokens,
        "ttft_s": round(reply.ttft_s, 4),
        "tokens_per_s": round(reply.tokens_per_s, 2),
        "finish_reason": reply.finish_reason,
        "interrupted": reply.interrupted,
        "seed": reply.seed,
        "steering": steering,
    }


def stats_line(reply) -> str:
    flag = {"interrupted": " · interrupted", "context_full": " · context full"}.get(
        reply.finish_reason, ""
    )
    if reply.ttft_s <= 0:  # restored from a session file: no timings were kept
        return f"[{reply.tokens} tokens{flag}]"
    return (
        f"[{reply.tokens} tokens · {reply.ttft_s:.2f}s to first token · "
        f"{reply.tokens_per_s:.1f} tok/s{flag}]"
    )


@contextlib.contextmanager
def sigint_cancels(cancel: threading.Event) -> Iterator[None]:
    """While a reply runs, Ctrl+C stops the reply instead of the program."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class PlainRepl:
    """Runs lines through the Core and prints what happens, as text or as JSON lines."""

    def __init__(
        self,
        core: Core,
        *,
        jsonl: bool = False,
        interactive: bool = False,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        self.core = core
        self.jsonl = jsonl
        self.interactive = interactive
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.errors_shown = 0

    def emit(self, event: dict) -> None:
        self.out.write(json.dumps(event, ensure_ascii=False) + "\n")
        self.out.flush()

    def show(self, outcome: Outcome) -> None:
        event = outcome.view.event() if self.jsonl and outcome.view is not None else None
        if event is not None:
            self.emit(event)
        for message in outcome.info if event is not None else outcome.lines():
            if self.jsonl:
                self.emit({"type": "info", "message": message})
            else:
                self.out.write(message + "\n")
        self.errors_shown += len(outcome.errors)
        for message in outcome.errors:
            if self.jsonl:
                self.emit({"type": "error", "message": message})
            else:
                self.err.write(f"error: {message}\n")
        self.out.flush()
        self.err.flush()

    def handle(self, line: str) -> bool:
        """Process one input line; False when the user asked to quit."""
        outcome = self.core.submit(line)
        self.show(outcome)
        if outcome.job is not None:
            self.run_job(outcome)
        if outcome.generate:
            self.reply()
        return not outcome.quit

    def run_job(self, outcome: Outcome) -> None:
        cancel = threading.Event()
        shown = self._progress(outcome.job_label) if self.interactive else None

        def progress(done: int, total: int) -> None:
            progress_reported()
            if shown is not None:
                shown(done, total)

        with sigint_cancels(cancel):
            result = self.core.run_job(outcome, progress, cancel)
        if shown is not None:
            self.err.write("\r\033[K")
        self.show(result)

    def _progress(self, label: str):
        start = time.monotonic()

        def show(done: int, total: int) -> None:
            spent = time.monotonic() - start
            left = spent / done * (total - done) if done else 0.0
            self.err.write(f"\r\033[K{label}: {done}/{total}, ~{left:.0f}s left (Ctrl+C stops)")
            self.err.flush()

        return show

    def reply(self) -> None:
        cancel = threading.Event()
        steering = self.core.active_steering()
        on_token = None if self.jsonl else self._write_token
        with sigint_cancels(cancel):
            outcome = self.core.generate(on_token, cancel)
        if outcome.reply is not None:
            if self.jsonl:
                self.emit(reply_event(outcome.reply, steering))
            else:
                self.out.write("\n")
                if self.interactive:
                    self.out.write(stats_line(outcome.reply) + "\n")
                self.out.flush()
        self.show(Outcome(errors=outcome.errors))

    def _write_token(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def run_lines(self, lines: TextIO) -> int:
        for line in lines:
            if not self.handle(line.rstrip("\n")):
                break
        return 0

    def run_terminal(self) -> int:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory

        from repl.paths import history_file

        session: PromptSession[str] = PromptSession(
            history=FileHistory(str(history_file())),
            completer=RegistryCompleter(self.core),
            complete_while_typing=True,
        )
        self.out.write(f"steer · {self.core.model.name} · /help for commands, Ctrl+D to exit\n")
        while True:
            try:
                line = session.prompt("> ")
            except KeyboardInterrupt:
                continue
            except EOFError:
                return 0
            if not self.handle(line):
                return 0


class RegistryCompleter(Completer):
    """prompt_toolkit completion straight from the command registry."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def get_completions(self, document, complete_event):
        text = document.text_before_cursor
        start, candidates = self.core.complete(text)
        for candidate in candidates:
            yield Completion(candidate, start_position=start - len(text))
