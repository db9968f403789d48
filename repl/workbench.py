"""The steering workbench's results: side-by-side comparisons and strength sweeps.

Both answer one user message several ways without touching the transcript; the front ends
draw the result (widgets in the app, text or JSON lines headless) and the user decides what,
if anything, joins the conversation.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from engine.chat import Reply, Sampling
from repl.core import Core, Turn, steering_text
from repl.steering import READ_MODES, READS, Active, Control
from vectors.calibration import (  # degeneration is re-exported for the sweep's callers
    MAX_NLL_RATIO,
    MAX_REPEAT_GAIN,
    MIN_NLL_SLACK,
    SHORT_RULE,
    Point,
    degeneration,
    is_fluent,
    recommendation_margin,
)
from vectors.lora import DEFAULT_TARGETS

# The fluency rule /sweep recommends by is the one /contrast's calibration uses
# (vectors/calibration.py explains the numbers); /sweep takes the strongest fluent setting.
FLUENCY_RULE = (
    "the strongest setting (positive, unless only negatives were swept) whose reply is "
    f"not empty, repeats at most {MAX_REPEAT_GAIN:g} more of its 3-grams than the unsteered "
    f"reply and costs at most {MAX_NLL_RATIO:g}x its NLL/token under the unsteered model "
    f"(or +{MIN_NLL_SLACK:g} nat/token, whichever allows more)"
)


def fixed_seed(sampling: Sampling) -> Sampling:
    """Sampled settings get one seed for every variant, so only the steering differs."""
    if sampling.temperature > 0 and sampling.seed is None:
        return replace(sampling, seed=random.getrandbits(31))
    return sampling


# -- /compare --------------------------------------------------------------------------------------


@dataclass
class Comparison:
    """One user message answered unsteered and under the steering of the moment."""

    prompt: str
    new_message: bool  # True: /compare PROMPT; False: the last user message was re-answered
    sampling: Sampling
    steering: list[dict[str, Any]]
    unsteered: Reply
    steered: Reply
    context: tuple = ()  # the transcript and system prompt it answered after (see `stale`)

    def stale(self, core: Core) -> bool:
        """A kept reply must follow the conversation it was made for, under the same prompt."""
        return self.context != _context(core)

    def reply(self, which: str) -> Reply:
        return self.steered if which == "steered" else self.unsteered

    def label(self, which: str) -> str:
        if which == "unsteered":
            return "unsteered"
        return f"steered: {steering_text(self.steering)}"

    def lines(self) -> list[str]:
        out = [f"compare: {self.prompt}"]
        for which in ("unsteered", "steered"):
            reply = self.reply(which)
            out += [f"--- {self.label(which)} · {reply.tokens} tokens", reply.text]
        out.append("keep one: /pick unsteered | /pick steered | /pick neither")
        return out

    def event(self) -> dict:
        from repl.plain import reply_event

        return {
            "type": "compare",
            "prompt": self.prompt,
            "unsteered": reply_event(self.unsteered, []),
            "steered": reply_event(self.steered, self.steering),
        }


def compare(
    core: Core,
    prompt: str | None,
    on_progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> Comparison | None:
    """Answer twice with the same seed; None when cancelled (nothing is kept)."""
    history, text = _question(core, prompt)
    messages = core.messages_for(history, text)
    sampling = fixed_seed(core.sampling)
    steering = core.active_steering()
    controls = [None, core.steering.control()]
    replies = _answers(core, messages, controls, sampling, on_progress, cancel)
    if replies is None:
        return None
    return Comparison(text, prompt is not None, sampling, steering, *replies, _context(core))


def _answers(
    core: Core,
    messages: list[dict[str, str]],
    controls: list[Control | None],
    sampling: Sampling,
    on_progress: Callable[[int, int], None] | None,
    cancel: threading.Event | None,
) -> list[Reply] | None:
    """One reply per control buffer, with progress; None as soon as one is cancelled."""
    replies = []
    for i, control in enumerate(controls):
        if on_progress is not None:
            on_progress(i, len(controls))
        reply = core.answer(messages, control, sampling, cancel)
        if reply.interrupted:
            return None
        replies.append(reply)
    if on_progress is not None:
        on_progress(len(controls), len(controls))
    return replies


def _context(core: Core) -> tuple:
    return (core.system, tuple((t.role, t.text) for t in core.turns))


def _question(core: Core, prompt: str | None) -> tuple[list[Turn], str]:
    """The turns before the message and the message: a new one, or the last user message."""
    if prompt is not None:
        return list(core.turns), prompt
    for i in range(len(core.turns) - 1, -1, -1):
        if core.turns[i].role == "user":
            return core.turns[:i], core.turns[i].text
    raise ValueError("nothing to compare: send a message first, or give one: /compare TEXT")


def keep(core: Core, comparison: Comparison, which: str) -> Turn:
    """Put the chosen reply into the transcript as if it had been answered normally."""
    reply = comparison.reply(which)
    if comparison.new_message:
        core.turns.append(Turn("user", comparison.prompt))
        if core.recorder is not None:
            core.recorder.user(comparison.prompt)
    elif core.turns and core.turns[-1].role == "assistant":
        core.turns.pop()
        if core.recorder is not None:
            core.recorder.command("/regen")  # replays as: drop the reply, answer again
    steering = comparison.steering if which == "steered" else []
    turn = Turn("assistant", reply.text, reply, comparison.sampling, steering)
    core.turns.append(turn)
    core.last_reply = reply
    return turn


# -- /sweep ----------------------------------------------------------------------------------------


@dataclass
class SweepRow:
    strength: float
    reply: Reply
    degeneration: float
    logprob: float  # mean log-probability per token under the unsteered model (nan if empty)
    fluent: bool = False

    def event(self) -> dict:
        return {
            "strength": self.strength,
            "tokens": self.reply.tokens,
            "degeneration": round(self.degeneration, 4),
            "logprob": None if math.isnan(self.logprob) else round(self.logprob, 4),
            "fluent": self.fluent,
            "text": self.reply.text,
        }


@dataclass
class Sweep:
    vector: str
    layers: tuple[int, int]
    prompt: str
    baseline: SweepRow  # every vector off
    rows: list[SweepRow] = field(default_factory=list)
    others: list[dict[str, Any]] = field(default_factory=list)  # other vectors held on
    mode: str = "add"
    targets: tuple[str, ...] = ()  # project mode's weights
    margin: float = 1.0  # the recommendation's share of the best row (recommendation_margin)

    @property
    def best(self) -> float | None:
        """The strongest fluent strength swept (positive, unless only negatives were)."""
        if any(r.strength > 0 for r in self.rows):
            fluent = [r.strength for r in self.rows if r.fluent and r.strength > 0]
            return max(fluent, default=None)
        return min((r.strength for r in self.rows if r.fluent and r.strength < 0), default=None)

    @property
    def recommended(self) -> float | None:
        best = self.best
        return None if best is None else round(best * self.margin, 4)

    @property
    def mark(self) -> str:
        """What the best row is called in the table: the recommendation, unless a margin
        puts the recommendation below it."""
        return "recommended" if self.margin == 1.0 else "strongest fluent"

    def header(self) -> str:
        held = "".join(f", {s['name']} held at {s['strength']:+g}" for s in self.others)
        how = f" projected out of {'+'.join(self.targets)}" if self.mode == "project" else ""
        how = f" while reading {READS[self.mode]}" if self.mode in READS else how
        return (
            f"sweep {self.vector}{how} on blocks {self.layers[0]}-{self.layers[1]}{held} · "
            f"prompt: {self.prompt}"
        )

    def verdict(self, short: bool = False) -> str:
        best = self.recommended
        rule = SHORT_RULE if short else f"rule: {FLUENCY_RULE}"
        if best is None:
            return f"no strength stays fluent ({rule})"
        if self.margin != 1.0:  # a focus vector's: its topic costs more over long replies
            rule = f"{self.margin:g} x the strongest fluent setting, {self.best:g}; {rule}"
        a, b = self.layers
        mode = f" --mode project{self._targets_option()}" if self.mode == "project" else ""
        mode = f" --mode {self.mode}" if self.mode in READ_MODES else mode
        return f"recommended: /steer {self.vector} {best:g}{mode} --layers {a}-{b} ({rule})"

    def _targets_option(self) -> str:
        if not self.targets or tuple(self.targets) == DEFAULT_TARGETS:
            return ""
        return f" --targets {','.join(self.targets)}"

    def table(self) -> list[str]:
        out = [f"{'strength':>9} {'tokens':>6} {'repeat':>6} {'logprob':>8}  fluent"]
        for label, row in [("off", self.baseline), *((f"{r.strength:+g}", r) for r in self.rows)]:
            lp = "–" if math.isnan(row.logprob) else f"{row.logprob:.2f}"
            mark = "yes" if row.fluent else "no"
            if row is not self.baseline and row.strength == self.best:
                mark += f"  <- {self.mark}"
            out.append(f"{label:>9} {row.reply.tokens:>6} {row.degeneration:>6.2f} {lp:>8}  {mark}")
        return out

    def lines(self) -> list[str]:
        out = [self.header(), *self.table(), self.verdict()]
        for row in self.rows:
            out.append(f"--- {row.strength:+g} · {row.reply.tokens} tokens")
            out.append(row.reply.text)
        return out

    def event(self) -> dict:
        return {
            "type": "sweep",
            "vector": self.vector,
            "layers": list(self.layers),
            "mode": self.mode,
            "prompt": self.prompt,
            "baseline": self.baseline.event(),
            "rows": [r.event() for r in self.rows],
            "recommended": self.recommended,
            "margin": self.margin,
        }


def sweep(
    core: Core,
    name: str,
    strengths: list[float],
    layers: tuple[int, int],
    prompt: str | None,
    on_progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
    mode: str = "add",
    targets: tuple[str, ...] | None = None,
) -> Sweep | None:
    """Answer one message at each strength of `name` (in `mode`); None when cancelled.

    Other active vectors stay as they are, so the sweep shows what changing this one would
    do to the next reply. Every reply is then scored by the unsteered model.
    """
    # a prompt of its own is answered on its own, not after a conversation it has no part in
    history, text = ([], prompt) if prompt is not None else _question(core, None)
    messages = core.messages_for(history, text)
    sampling = fixed_seed(core.sampling)
    others = [s for s in core.active_steering() if s["name"] != name]
    how = Active(1.0, layers, mode, targets) if targets else Active(1.0, layers, mode)
    controls = [None, *(_control(core, name, replace(how, strength=float(s))) for s in strengths)]
    replies = _answers(core, messages, controls, sampling, on_progress, cancel)
    if replies is None:
        return None
    # scored after all replies are made: one switch to no steering, and the prompt stays cached
    rows = []
    for strength, reply in zip([0.0, *strengths], replies, strict=True):
        scores = core.score_unsteered(messages, reply.token_ids)
        logprob = float(np.mean(scores)) if scores else math.nan
        rows.append(SweepRow(strength, reply, degeneration(reply.token_ids), logprob))
    baseline, rows = rows[0], rows[1:]
    for row in [baseline, *rows]:
        row.fluent = _fluent(row, baseline)
    margin = recommendation_margin(core.steering.vectors[name].meta, mode)
    return Sweep(name, layers, text, baseline, rows, others, mode, how.targets, margin)


def _control(core: Core, name: str, how: Active) -> Control | None:
    """The steering with `name` set as `how` and every other active vector as it is."""
    return core.steering.control({**core.steering.active, name: how})


def _fluent(row: SweepRow, baseline: SweepRow) -> bool:
    return is_fluent(_point(row), _point(baseline))


def _point(row: SweepRow) -> Point:
    """A sweep row as a calibration point: one reply, NLL = minus the mean logprob."""
    return Point(row.strength, -row.logprob, row.degeneration, float(row.reply.tokens))
