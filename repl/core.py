"""The conversation both front ends drive: transcript, settings, and turning lines into actions.

Front ends own threads and drawing; `Core` owns state. A front end calls `submit(line)` for
what the user typed, shows the Outcome, and when it says `generate` runs `generate()` on
whatever thread suits it (a Textual worker, the main thread of the plain REPL).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from engine.batch import Batch
from engine.chat import ChatContext, ContextFullError, EngineError, Reply, Sampling, TokenCallback
from engine.lora import AdapterLoadError
from engine.model import Model
from repl.commands import Outcome, Registry
from repl.session_file import SessionFileError
from repl.steering import Control, Steering
from vectors.lora import AdapterError

REGISTRY = Registry()


@dataclass
class Turn:
    """One message of the transcript; assistant turns carry how they were made."""

    role: str  # "user" or "assistant"
    text: str
    reply: Reply | None = None
    sampling: Sampling | None = None
    steering: list[dict[str, Any]] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        return self.reply is not None and self.reply.interrupted


@dataclass
class Batched:
    """A Core's engine Batch (engine/batch.py), taking messages and putting steering in force."""

    core: Core
    batch: Batch

    def answer(
        self,
        conversations: list[list[dict[str, str]]],
        control: Any,
        max_tokens: int,
        cancel: threading.Event | None = None,
        on_done: Callable[[], None] | None = None,
    ) -> list[Reply] | None:
        """Greedy replies under `control`, written together; None if cancelled."""
        self.core._apply(control)
        ctx = self.core.ctx
        prompts = [ctx.prompt_tokens(m) for m in conversations]
        plains = None
        if isinstance(control, Control) and control.scoped:
            plains = [ctx.system_end(m) for m in conversations]
        return self.batch.write(prompts, max_tokens, cancel, on_done, plains)

    def keep_unsteered(self, conversations: list[list[dict[str, str]]]) -> list[int]:
        """Read these prompts once, unsteered, for `score_unsteered`; a handle for each."""
        self.core._apply(None)
        return self.batch.keep([self.core.ctx.prompt_tokens(m) for m in conversations])

    def score_unsteered(self, items: list[tuple[int, list[int]]]) -> list[np.ndarray]:
        """Log-probability of each reply token after its kept prompt, with no steering."""
        self.core._apply(None)
        return self.batch.score(items)


def steering_text(steering: list[dict[str, Any]]) -> str:
    """'terse +1 @9-13, formal -0.8 @8-12 project': steering as the status bar and views show
    it ('project' marks project mode: the direction is projected out rather than added;
    'prompt' marks prompt mode: added only while the conversation is read; 'messages' the
    same without the system prompt)."""
    return ", ".join(
        f"{s['name']} {s['strength']:+g} @{s['layers'][0]}-{s['layers'][1]}"
        + (f" {s['mode']}" if s.get("mode", "add") != "add" else "")
        for s in steering
    )


def pop_last_exchange(turns: list[Turn]) -> bool:
    """Remove the last user message and everything after it (/undo, live or replayed)."""
    for i in range(len(turns) - 1, -1, -1):
        if turns[i].role == "user":
            del turns[i:]
            return True
    return False


class Core:
    """State of one chat: the model's context, the transcript and the settings."""

    registry: Registry = REGISTRY

    def __init__(
        self,
        model: Model,
        ctx: ChatContext,
        sampling: Sampling | None = None,
        system: str | None = None,
    ) -> None:
        self.model = model
        self.ctx = ctx
        self.sampling = sampling or Sampling()
        self.system = system
        self.turns: list[Turn] = []
        self.last_reply: Reply | None = None
        self.steering = Steering(model)
        self.recorder = None  # a repl.session.Recorder when the chat is kept as a session
        self.comparison = None  # a repl.workbench.Comparison waiting for /pick
        # set by /regen: the reply it took away ([] if none), put back if no new one is made
        self.regen_backup: list[Turn] | None = None
        self._lock = threading.Lock()

    # -- what the model sees ----------------------------------------------------------------

    def messages(self, history: list[Turn] | None = None) -> list[dict[str, str]]:
        """The system prompt and `history` (by default the transcript) as chat messages."""
        turns = self.turns if history is None else history
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        msgs += [{"role": t.role, "content": t.text} for t in turns]
        return msgs

    def messages_for(self, history: list[Turn], text: str) -> list[dict[str, str]]:
        """What the model sees when `text` follows `history` (for answers kept aside)."""
        return [*self.messages(history), {"role": "user", "content": text}]

    def active_steering(self) -> list[dict[str, Any]]:
        """The steering the next reply is made under: name, strength, layers [a, b]."""
        return self.steering.describe()

    def steering_summary(self) -> str:
        return steering_text(self.active_steering())

    def status(self) -> dict[str, Any]:
        rate = self.last_reply.tokens_per_s if self.last_reply else None
        return {
            "model": self.model.name,
            "ctx_used": self.ctx.n_cached,
            "ctx_size": self.ctx.n_ctx,
            "tokens_per_s": rate,
            "steering": self.steering_summary(),
        }

    # -- input ----------------------------------------------------------------------------------

    def submit(self, line: str) -> Outcome:
        """Handle one line the user typed: a slash command, or a chat message.

        A line starting with '//' is a message that starts with '/'.
        """
        text = line.strip()
        if not text:
            return Outcome()
        if text.startswith("/") and not text.startswith("//"):
            outcome = self.registry.dispatch(self, text)
            if outcome.job is not None:
                outcome.job_line = text
            elif outcome.changed:
                self.record(outcome, lambda r: r.command(text))
            return outcome
        if text.startswith("//"):
            text = text[1:]
        self.turns.append(Turn("user", text))
        if self.recorder is not None:
            self.recorder.user(text)
        return Outcome(generate=True)

    def record(self, outcome: Outcome, event) -> None:
        """Record an event and autosave; a failed save is reported, never fatal."""
        if self.recorder is None:
            return
        event(self.recorder)
        try:
            self.recorder.save()
        except (OSError, SessionFileError) as exc:  # disk full, read-only folder, ...
            why = getattr(exc, "strerror", None) or str(exc)
            outcome.errors.append(
                f"autosave to {self.recorder.path} failed ({why}); the session "
                "is still in memory: /session save PATH to keep it elsewhere"
            )

    def complete(self, text: str) -> tuple[int, list[str]]:
        return self.registry.complete(self, text)

    # -- generation -----------------------------------------------------------------------------

    def generate(
        self, on_token: TokenCallback | None = None, cancel: threading.Event | None = None
    ) -> Outcome:
        """Answer the last user turn; the reply (possibly partial) joins the transcript.

        If no reply can be made, the transcript goes back to what it was before the line
        that asked for it: a new message is taken back (so the transcript never holds two user
        turns in a row), a /regen gets its old reply back. The session file follows.
        """
        with self._lock:
            backup, self.regen_backup = self.regen_backup, None
            if not self.turns or self.turns[-1].role != "user":
                return Outcome.error("nothing to reply to: send a message first")
            try:
                self._apply(self.steering.control())
                reply = self.ctx.generate(self.messages(), self.sampling, on_token, cancel)
            except (ContextFullError, EngineError, AdapterLoadError, AdapterError) as exc:
                return self._unanswered(exc, backup)
            steering = self.active_steering()
            turn = Turn("assistant", reply.text, reply, self.sampling, steering)
            self.turns.append(turn)
            self.last_reply = reply
            out = Outcome(reply=reply)
            self.record(out, lambda r: r.reply(turn))
            if reply.finish_reason == "context_full":
                out.errors.append(
                    f"reply stopped: the context window ({self.ctx.n_ctx} tokens) is full; "
                    "use /undo or /clear to make room"
                )
            return out

    def answer(
        self,
        messages: list[dict[str, str]],
        control: Any,
        sampling: Sampling,
        cancel: threading.Event | None = None,
    ) -> Reply:
        """A reply under the given steering (a Control, a bare control-vector buffer, or None)
        that joins nothing (/compare, /sweep)."""
        with self._lock:
            self._apply(control)
            return self.ctx.generate(messages, sampling, None, cancel)

    def score_unsteered(self, messages: list[dict[str, str]], token_ids: list[int]) -> list[float]:
        """Log-probability of each reply token under the model with no steering."""
        with self._lock:
            self._apply(None)
            return self.ctx.score(messages, token_ids)

    @contextlib.contextmanager
    def batch(self) -> Iterator[Batched]:
        """Many greedy replies and scorings side by side (a calibration); the chat's own replies
        wait until the block ends, and its cache is emptied as by any change of steering."""
        with self._lock, Batch(self.ctx) as batch:
            yield Batched(self, batch)

    def _apply(self, control: Control | Any) -> None:
        """Put `control` in force on the chat context: both halves, each emptying the KV cache
        only when it changes."""
        if control is None or not isinstance(control, Control):
            self.ctx.set_adapters([])
            self.ctx.set_control(control)
            return
        self.ctx.set_adapters(control.adapters)
        self.ctx.set_control(control.buffer, control.prompt, control.messages, control.content)

    def _unanswered(self, exc: Exception, backup: list[Turn] | None) -> Outcome:
        """Undo the line that asked for a reply that could not be made, live and on disk."""
        if backup is not None:
            self.turns.extend(backup)
            out = Outcome(errors=[f"{exc} (the last reply is kept)"], transcript_changed=True)
            self.record(out, lambda r: r.retract("command", "/regen"))
        else:
            self.turns.pop()
            out = Outcome(errors=[f"{exc} (message not sent)"], transcript_changed=True)
            self.record(out, lambda r: r.retract("user"))
        return out

    def run_job(self, outcome: Outcome, on_progress=None, cancel=None) -> Outcome:
        """Run a command's long job (see Outcome.job); failures come back as one-line errors."""
        try:
            result = outcome.job(on_progress, cancel)
        except (ValueError, OSError, RuntimeError, EngineError) as exc:
            return Outcome.error(f"{outcome.job_label} failed: {exc}")
        if result.changed and outcome.job_line:
            self.record(result, lambda r: r.command(outcome.job_line))
        return result

    # -- state changes used by commands ---------------------------------------------------------

    def set_sampling(self, **changes: Any) -> None:
        self.sampling = replace(self.sampling, **changes)

    def pop_last_exchange(self) -> bool:
        return pop_last_exchange(self.turns)


# Importing the command modules registers their commands in REGISTRY.
from repl import (  # noqa: E402,F401
    chat_commands,
    session_commands,
    steer_commands,
    workbench_commands,
)
