"""Calibration: the strength /contrast recommends, measured instead of assumed.

A vector's unit (strength 1 = the mean contrast difference) is the same at every block, but how
much of it a model tolerates is not: the terse vector broke the text at 1 and read naturally at
0.3. So after building, /contrast answers a few held-out questions (vectors/data/calibration_
prompts.txt) greedily at a few strengths, scores every reply with the unsteered model, and
recommends by the rule in vectors/calibration.py. The walk up the strength ladder stops at
the first strength that is not fluent or whose effect falls (once the effect is large enough
for a fall to mean something).

The work is batched (engine/batch.py, through `Core.batch`): the questions of one strength are
answered side by side, and the scoring prompts (each question plain and with the positive
instruction) are read once and kept, so every later scoring evaluates only the reply. Batched
replies can part from one-at-a-time ones at a near tie (float rounding), so a calibration makes
all of its own replies and scores the same way.

The same measurements, one reply at a time (what `/steer` gives), serve bench/efficacy_bench.py.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from engine.batch import BatchFull
from engine.chat import Reply, Sampling
from repl.steering import READ_MODES, Active
from vectors import calibration_prompts
from vectors.calibration import RULE, Point, choose, degeneration, effect_fell, is_fluent

if TYPE_CHECKING:  # repl.core imports the commands, which import this module
    from repl.core import Batched, Core

LADDER = (0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0, 1.4, 2.0)
START = 0.3  # first rung tried: fluent for every vector measured so far on the default model
# Prompt (and messages) mode touches only the prompt's tokens, so it takes more: a topic vector
# did nothing below 1.25 and fell apart past 1.5 (docs/efficacy.md); finer rungs around there.
PROMPT_LADDER = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)
# Content mode has a rung at 1.1 as well: a topic's window is narrow there, and food's is 1.1
# (at 1 its replies loop or barely turn; at 1.25 they break on other questions), where it passes
# on three sets of unseen questions. Every other topic's walk, and cheerfulness's, stops where
# it did; a rung at 1.35 moved sea off its window (docs/efficacy.md, "Stronger rungs with DRY,
# and a finer ladder").
CONTENT_LADDER = (0.5, 0.75, 1.0, 1.1, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)
PROMPT_START = 1.0
N_PROMPTS = 3
MAX_TOKENS = 40
# Content mode reads the assistant's header plain, so a reply departs from the unsteered one
# later and more slowly, and 40 tokens overstate what a stronger rung costs: space at 1.25
# cost 1.86x there, 1.65x over 60 and 1.51x over 80, where it is fluent (docs/efficacy.md,
# "The calibration's length in content mode"). Over 80 tokens the picks of sea, music, food
# and sports held.
CONTENT_TOKENS = 80
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
    return one_by_one(core, [user(q) for q in questions], control, sampling, cancel, tick)


def one_by_one(core: Core, conversations, control, sampling, cancel=None, tick=None):
    """Each conversation answered in turn (`Core.answer`); None as soon as one is cancelled."""
    replies = []
    for conversation in conversations:
        reply = core.answer(conversation, control, sampling, cancel)
        if reply.interrupted:
            return None
        replies.append(reply)
        if tick is not None:
            tick()
    return replies


class Scorer:
    """Scores replies to a fixed list of questions with no steering, batched: the plain (and,
    for the effect, the positively instructed) prompts are read once, then each scoring
    evaluates only the replies."""

    def __init__(self, batched: Batched, questions: list[str], positive: str | None = None) -> None:
        self.batched = batched
        self.effects = bool(positive)
        asked = [user(q) for q in questions]
        if positive:
            asked += [user(instructed(q, positive)) for q in questions]
        self.questions = questions
        self.handles = batched.keep_unsteered(asked)

    def __call__(self, replies: list[Reply], effect: bool = True) -> list[Scored]:
        """Each reply's measures; `effect=False` leaves the effect out (one scoring fewer).
        One reply's scorings come together (plain, then positive), so one at a time the
        question stays cached between them."""
        n = len(self.questions)
        views = 2 if self.effects and effect else 1
        items = [
            (self.handles[v * n + i], reply.token_ids)
            for i, reply in enumerate(replies)
            for v in range(views)
        ]
        scores = self.batched.score_unsteered(items)
        out = []
        for i, (question, reply) in enumerate(zip(self.questions, replies, strict=True)):
            ids = reply.token_ids
            if not ids:
                out.append(Scored(question, reply, math.nan, 0.0, None))
                continue
            mine = scores[i * views : (i + 1) * views]
            change = None
            if views == 2:
                change = (float(np.sum(mine[1])) - float(np.sum(mine[0]))) / len(ids)
            nll = -float(np.mean(mine[0]))
            out.append(Scored(question, reply, nll, degeneration(ids), change))
        return out


class Unbatched:
    """`repl.core.Batched`'s three calls made one reply at a time (`Core.answer`, and scoring
    that keeps each prompt cached): for a context window too small for a batch, and for the
    bench that compares the two."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.kept: list[list[dict[str, str]]] = []

    def answer(self, conversations, control, max_tokens, cancel=None, on_done=None):
        sampling = Sampling(temperature=0.0, max_tokens=max_tokens)
        return one_by_one(self.core, conversations, control, sampling, cancel, on_done)

    def keep_unsteered(self, conversations: list[list[dict[str, str]]]) -> list[int]:
        self.kept += conversations
        return list(range(len(self.kept) - len(conversations), len(self.kept)))

    def score_unsteered(self, items: list[tuple[int, list[int]]]) -> list[np.ndarray]:
        return [np.asarray(self.core.score_unsteered(self.kept[h], ids)) for h, ids in items]


def score(
    core: Core, questions: list[str], replies: list[Reply], positive: str | None = None
) -> list[Scored]:
    """Score replies to the bare questions with no steering, one at a time (the chat's own
    scoring, as /sweep's); the effect needs the positive instruction."""
    return Scorer(Unbatched(core), questions, positive)(replies)


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
    batched: bool = True  # False when the context had no room and replies came one by one
    margin: float = 1.0  # the recommendation is this share of the pick (a focus vector's 0.85)

    @property
    def ladder(self) -> tuple[float, ...]:
        if self.mode == "content":
            return CONTENT_LADDER
        return PROMPT_LADDER if self.mode in READ_MODES else LADDER

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
        margin = {} if self.margin == 1.0 else {"margin": self.margin}
        return {
            "recommended_strength": round(self.strength * self.margin, 4),
            "recommended_mode": self.mode,
            "calibration": {
                **margin,
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
                "batched": self.batched,
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
    *,
    layers: tuple[int, int] | None = None,
    prompts: list[str] | None = None,
    max_tokens: int | None = None,
    mode: str = "add",
    margin: float = 1.0,
    on_progress: Callable[[int, int], None] | None = None,
    progress_offset: int = 0,
    cancel: threading.Event | None = None,
) -> Calibration | None:
    """Walk the strength ladder for vector `name` alone (other vectors off) in `mode` ("add"
    or a read mode); None if cancelled. It recommends `margin` x the strength it picks.
    Replies are `max_tokens` long (by default `MAX_TOKENS`, `CONTENT_TOKENS` in content mode).

    From the mode's start it climbs while replies stay fluent, or steps down until they are.
    With instructions, the replies to the positively instructed prompt are measured first:
    their cost is the fluency allowance (vectors/calibration.py).
    """
    vec = core.steering.vectors[name]
    layers = layers or vec.recommended_range or (1, core.model.n_layer - 1)
    prompts = prompts or calibration_prompts()[:N_PROMPTS]
    max_tokens = max_tokens or (CONTENT_TOKENS if mode == "content" else MAX_TOKENS)
    progress = _Progress(on_progress, progress_offset, len(prompts) * (5 if positive else 4))
    job = (name, positive, layers, prompts, max_tokens, mode, margin, progress, cancel)
    try:
        with core.batch() as batched:
            return _calibrate(batched, *job)
    except BatchFull:  # a small context window (--ctx): the same work, one reply at a time
        return _calibrate(Unbatched(core), *job)


def _calibrate(
    batched: Batched, name, positive, layers, prompts, max_tokens, mode, margin, progress, cancel
) -> Calibration | None:
    start = time.perf_counter()
    steering = batched.core.steering
    scorer = Scorer(batched, prompts, positive)

    def measure(strength: float) -> Point | None:
        control = steering.control({name: Active(float(strength), layers, mode)})
        conversations = [user(q) for q in prompts]
        replies = batched.answer(conversations, control, max_tokens, cancel, progress.tick)
        return None if replies is None else summarise(strength, scorer(replies))

    # unsteered, the plain questions and (with instructions) the positively instructed ones
    # are answered in one batch
    asked = [instructed(q, positive) for q in prompts] if positive else []
    conversations = [user(q) for q in prompts + asked]
    replies = batched.answer(conversations, None, max_tokens, cancel, progress.tick)
    if replies is None:
        return None
    n = len(prompts)
    baseline = summarise(0.0, scorer(replies[:n]))
    result = Calibration(layers, prompts, max_tokens, baseline, mode=mode, margin=margin)
    result.batched = not isinstance(batched, Unbatched)
    if positive:
        # the prompted replies are held to their NLL only (their effect is not used)
        result.prompted = summarise(0.0, scorer(replies[n:], effect=False))
    for strength in _walk(result):
        point = measure(strength)
        if point is None:
            return None
        result.points.append(point)
    result.seconds = time.perf_counter() - start
    progress.finish()
    return result


def _walk(result: Calibration):
    """Yield rungs to try: up from the start while fluent and the effect still grows (or is
    too small to tell), else down from it until fluent."""
    ladder = result.ladder
    i = ladder.index(PROMPT_START if result.mode in READ_MODES else START)
    yield ladder[i]
    up = result.fluent(result.points[-1])
    steps = 1
    while steps < MAX_STEPS:
        i += 1 if up else -1
        if not 0 <= i < len(ladder):
            return
        yield ladder[i]
        steps += 1
        fell = up and effect_fell(result.points, result.baseline)
        if result.fluent(result.points[-1]) != up or fell:
            return
