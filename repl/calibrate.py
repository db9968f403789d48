"""Calibration: the strength /contrast recommends, measured instead of assumed.

A vector's unit (strength 1 = the mean contrast difference) is the same at every block, but how
much of it a model tolerates is not: the terse vector broke the text at 1 and read naturally at
0.3. So after building, /contrast answers a few held-out questions (vectors/data/calibration_
prompts.txt) greedily at a few strengths, scores every reply with the unsteered model, and
recommends by the rule in vectors/calibration.py. The replies are made with the machinery
/sweep uses (`Core.answer`, then scoring with no steering so each prompt stays cached), and the
walk up the strength ladder stops at the first strength that is not fluent, which keeps the
cost near the capture's.

The same measurements serve bench/efficacy_bench.py with longer replies.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from engine.chat import Reply, Sampling
from repl.steering import Active
from vectors import calibration_prompts
from vectors.calibration import RULE, Point, choose, degeneration, is_fluent

if TYPE_CHECKING:  # repl.core imports the commands, which import this module
    from repl.core import Core

LADDER = (0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0, 1.4, 2.0)
START = 0.3  # first rung tried: fluent for every vector measured so far on the default model
# Prompt mode touches only the prompt's tokens, so it takes more: a topic vector did nothing
# below 1.25 and fell apart past 1.5 (docs/efficacy.md); finer rungs around there.
PROMPT_LADDER = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)
PROMPT_START = 1.0
N_PROMPTS = 3
MAX_TOKENS = 40
MAX_STEPS = 5  # rungs tried besides the unsteered baseline


@dataclass
class Scored:
    """One reply and its measures (see vectors/calibration.py)."""

    question: str
    reply: Reply
    nll: float  # nan for an empty reply
    repeat: float
    effect: float | None


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def instructed(question: str, instruction: str) -> str:
    """A question with an instruction appended, as /contrast builds its pairs."""
    return f"{question} {instruction}"


def answer_all(
    core: Core,
    questions: list[str],
    control: np.ndarray | None,
    sampling: Sampling,
    cancel: threading.Event | None = None,
    tick: Callable[[], None] | None = None,
) -> list[Reply] | None:
    """Each question answered on its own under `control`; None as soon as one is cancelled."""
    replies = []
    for question in questions:
        reply = core.answer(user(question), control, sampling, cancel)
        if reply.interrupted:
            return None
        replies.append(reply)
        if tick is not None:
            tick()
    return replies


def score(
    core: Core,
    questions: list[str],
    replies: list[Reply],
    positive: str | None = None,
    negative: str | None = None,
) -> list[Scored]:
    """Score replies to the bare questions with no steering; the effect needs both
    instructions. All of one reply's scorings run back to back, so the question stays cached."""
    out = []
    for question, reply in zip(questions, replies, strict=True):
        ids = reply.token_ids
        if not ids:
            out.append(Scored(question, reply, math.nan, 0.0, None))
            continue
        nll = -float(np.mean(core.score_unsteered(user(question), ids)))
        effect = None
        if positive and negative:
            pos = core.score_unsteered(user(instructed(question, positive)), ids)
            neg = core.score_unsteered(user(instructed(question, negative)), ids)
            effect = (float(np.sum(pos)) - float(np.sum(neg))) / len(ids)
        out.append(Scored(question, reply, nll, degeneration(ids), effect))
    return out


def summarise(strength: float, scored: list[Scored]) -> Point:
    """Mean measures over the replies at one strength (empty replies count in `empty`)."""
    made = [s for s in scored if s.reply.tokens > 0]
    effects = [s.effect for s in made if s.effect is not None]
    return Point(
        strength=float(strength),
        nll=float(np.mean([s.nll for s in made])) if made else math.nan,
        repeat=float(np.mean([s.repeat for s in scored])) if scored else 0.0,
        tokens=float(np.mean([s.reply.tokens for s in scored])) if scored else 0.0,
        empty=len(scored) - len(made),
        effect=float(np.mean(effects)) if effects and len(effects) == len(made) else None,
    )


@dataclass
class Calibration:
    """What the calibration measured and chose; `meta()` goes into the vector's provenance."""

    layers: tuple[int, int]
    prompts: list[str]
    max_tokens: int
    baseline: Point
    points: list[Point] = field(default_factory=list)
    seconds: float = 0.0
    mode: str = "add"
    prompted: Point | None = None  # replies to the positively instructed prompts, unsteered

    @property
    def ladder(self) -> tuple[float, ...]:
        return PROMPT_LADDER if self.mode == "prompt" else LADDER

    def fluent(self, point: Point) -> bool:
        return is_fluent(point, self.baseline, self.prompted)

    @property
    def chosen(self) -> Point | None:
        return choose(self.points, self.baseline, self.prompted)

    @property
    def strength(self) -> float:
        """The recommendation; the gentlest strength tried when none stayed fluent."""
        chosen = self.chosen
        if chosen is not None:
            return chosen.strength
        return min((p.strength for p in self.points), key=abs, default=self.ladder[0])

    def meta(self) -> dict:
        chosen = self.chosen
        return {
            "recommended_strength": self.strength,
            "recommended_mode": self.mode,
            "calibration": {
                "mode": self.mode,
                "prompted": None if self.prompted is None else self.prompted.as_dict(),
                "prompts": list(self.prompts),
                "max_tokens": self.max_tokens,
                "sampling": "greedy",
                "layers": list(self.layers),
                "rule": RULE,
                "baseline": self.baseline.as_dict(),
                "points": [p.as_dict() for p in self.points],
                "fluent": [self.fluent(p) for p in self.points],
                "chosen": None if chosen is None else chosen.strength,
                "seconds": round(self.seconds, 2),
            },
        }


class _Progress:
    """Counts replies made and reports them after `offset` units of earlier work."""

    def __init__(self, on_progress, offset: int, expected: int) -> None:
        self.on_progress, self.offset, self.total, self.done = on_progress, offset, expected, 0

    def finish(self) -> None:
        """The walk stopped early or late: the bar ends full either way."""
        self.total = self.done
        if self.on_progress is not None:
            self.on_progress(self.offset + self.done, self.offset + self.total)

    def tick(self) -> None:
        self.done += 1
        self.total = max(self.total, self.done)
        if self.on_progress is not None:
            self.on_progress(self.offset + self.done, self.offset + self.total)


def calibrate(
    core: Core,
    name: str,
    positive: str | None,
    negative: str | None,
    *,
    layers: tuple[int, int] | None = None,
    prompts: list[str] | None = None,
    max_tokens: int = MAX_TOKENS,
    mode: str = "add",
    on_progress: Callable[[int, int], None] | None = None,
    progress_offset: int = 0,
    cancel: threading.Event | None = None,
) -> Calibration | None:
    """Walk the strength ladder for vector `name` alone (other vectors off) in `mode` ("add"
    or "prompt"); None if cancelled.

    From the mode's start it climbs while replies stay fluent, or steps down until they are.
    With instructions, the replies to the positively instructed prompt are measured first:
    their cost is the fluency allowance (vectors/calibration.py).
    """
    start = time.perf_counter()
    vec = core.steering.vectors[name]
    layers = layers or vec.recommended_range or (1, core.model.n_layer - 1)
    prompts = prompts or calibration_prompts()[:N_PROMPTS]
    sampling = Sampling(temperature=0.0, max_tokens=max_tokens)
    progress = _Progress(on_progress, progress_offset, len(prompts) * (5 if positive else 4))

    def measure(strength: float, asked: list[str] | None = None) -> Point | None:
        control = None
        if strength:
            control = core.steering.control({name: Active(float(strength), layers, mode)})
        replies = answer_all(core, asked or prompts, control, sampling, cancel, progress.tick)
        if replies is None:
            return None
        return summarise(strength, score(core, prompts, replies, positive, negative))

    baseline = measure(0.0)
    if baseline is None:
        return None
    result = Calibration(layers, prompts, max_tokens, baseline, mode=mode)
    if positive:
        result.prompted = measure(0.0, [instructed(q, positive) for q in prompts])
        if result.prompted is None:
            return None
    for strength in _walk(result):
        point = measure(strength)
        if point is None:
            return None
        result.points.append(point)
    result.seconds = time.perf_counter() - start
    progress.finish()
    return result


def _walk(result: Calibration):
    """Yield rungs to try: up from the start while fluent, else down from it until fluent."""
    ladder = result.ladder
    i = ladder.index(PROMPT_START if result.mode == "prompt" else START)
    yield ladder[i]
    up = result.fluent(result.points[-1])
    steps = 1
    while steps < MAX_STEPS:
        i += 1 if up else -1
        if not 0 <= i < len(ladder):
            return
        yield ladder[i]
        steps += 1
        if result.fluent(result.points[-1]) != up:
            return
