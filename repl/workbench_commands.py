"""Workbench commands: /compare and /pick, /sweep.

They run as jobs (the front ends show progress, Esc / Ctrl+C cancels) and leave the
transcript alone; only /pick puts a compared reply into the conversation, recorded in the
session exactly like a reply made the ordinary way.
"""

from __future__ import annotations

from typing import Any

from engine.chat import ContextFullError, EngineError
from engine.lora import AdapterLoadError
from repl.commands import Arg, Outcome, UsageError, parse_float
from repl.core import REGISTRY, Core
from repl.steering import (
    MODES,
    loaded_names,
    parse_layers,
    recommended_mode,
    vector_or_error,
)
from repl.workbench import compare, keep, sweep
from vectors.lora import AdapterError

MAX_SWEEP = 12


@REGISTRY.command(
    "compare",
    "answer a message unsteered and steered, side by side; /pick keeps one",
    Arg("prompt", "text", optional=True, help="a new message (default: the last one again)"),
    details="Both replies use the same settings and seed; only the steering differs. "
    "Nothing joins the conversation until /pick unsteered, /pick steered or /pick neither.",
)
def cmd_compare(core: Core, args: dict[str, Any]) -> Outcome:
    if not core.steering.active:
        return Outcome.error(
            "nothing is steered, so there is nothing to compare: /steer NAME first"
        )
    prompt = args["prompt"]
    if prompt is None and not any(t.role == "user" for t in core.turns):
        return Outcome.error("nothing to compare: send a message first, or /compare TEXT")

    def job(on_progress, cancel) -> Outcome:
        try:
            result = compare(core, prompt, on_progress, cancel)
        except (ContextFullError, EngineError, AdapterError, AdapterLoadError) as exc:
            return Outcome.error(f"/compare failed: {exc}")
        if result is None:
            return Outcome.error("/compare cancelled; nothing changed")
        core.comparison = result
        return Outcome(view=result)

    core.comparison = None
    return Outcome(job=job, job_label="comparing unsteered and steered replies", job_total=2)


@REGISTRY.command(
    "pick",
    "keep one reply of the last /compare in the conversation",
    Arg("which", "choice", ("unsteered", "steered", "neither")),
)
def cmd_pick(core: Core, args: dict[str, Any]) -> Outcome:
    comparison = core.comparison
    if comparison is None:
        return Outcome.error("no comparison is waiting: /compare first")
    core.comparison = None
    which = args["which"]
    if comparison.stale(core):
        return Outcome.error(
            "the conversation or system prompt changed since /compare: /compare again"
        )
    if which == "neither":
        return Outcome.say("kept neither reply; the conversation is unchanged")
    turn = keep(core, comparison, which)
    out = Outcome(info=[f"kept the {which} reply"], transcript_changed=True)
    core.record(out, lambda r: r.reply(turn))
    return out


def _strengths(raw: str) -> list[float]:
    words = [w for w in raw.replace(" ", "").split(",") if w]
    if not words:
        raise UsageError("give strengths separated by commas, e.g. 0.5,1,2")
    values = [parse_float("strength", w) for w in words]
    if len(values) > MAX_SWEEP:
        raise UsageError(f"at most {MAX_SWEEP} strengths per sweep, not {len(values)}")
    return values


@REGISTRY.command(
    "sweep",
    "answer one message at several strengths of a vector and score each reply",
    Arg("name", help="a loaded vector"),
    Arg("strengths", help="comma-separated strengths, e.g. 0.5,1,1.5,2"),
    options=(
        Arg(
            "--prompt",
            help="a message to answer on its own (default: the last one, in its conversation)",
        ),
        Arg("--layers", help="blocks to steer, A-B (default: as active, or recommended)"),
        Arg(
            "--mode",
            "choice",
            MODES,
            help="add, project, prompt, messages or content (default: the vector's mode if it "
            "is on, else its recommended mode)",
        ),
    ),
    details="Each row shows the reply length, how much of it repeats (share of repeated "
    "3-grams) and its mean log-probability per token under the unsteered model; the "
    "recommendation is the strongest setting that stays fluent. Other active vectors stay on.",
    name=loaded_names,
)
def cmd_sweep(core: Core, args: dict[str, Any]) -> Outcome:
    vec = vector_or_error(core, args["name"])
    strengths = _strengths(args["strengths"])
    prompt = args["prompt"]
    current = core.steering.active.get(vec.name)
    mode = args["mode"] or (current.mode if current is not None else recommended_mode(vec))
    if current is not None and current.mode == mode:
        layers, targets = current.layers, current.targets
    else:
        _, layers, targets = core.steering.recommended(vec, mode)
    if args["layers"] is not None:
        layers = parse_layers(core, args["layers"])
    if prompt is None and not any(t.role == "user" for t in core.turns):
        return Outcome.error("nothing to answer: send a message first, or --prompt TEXT")

    def job(on_progress, cancel) -> Outcome:
        try:
            result = sweep(
                core, vec.name, strengths, layers, prompt, on_progress, cancel, mode, targets
            )
        except (ContextFullError, EngineError, AdapterError, AdapterLoadError) as exc:
            return Outcome.error(f"/sweep failed: {exc}")
        if result is None:
            return Outcome.error(f"/sweep {vec.name} cancelled; nothing changed")
        return Outcome(view=result)

    return Outcome(job=job, job_label=f"sweeping {vec.name!r}", job_total=len(strengths) + 1)
