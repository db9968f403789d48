"""Research helper for docs/efficacy.md: build one concept's vector a given way (uncalibrated)
and sweep strengths on a few of the bench's unseen questions, printing marker, NLL ratio and
repeats per strength. Shows whether *any* fluent strength moves the marker, which the
scoreboard (one strength, the recommendation) cannot.

python bench/concept_sweep.py sea "--method replies" 0.5,1,1.5 [--layers 6-10] [--questions 4]
    [--set first|second|both] [--mode add|prompt|project|clamp]

`--mode clamp` adds the vector at each strength and projects its direction out of the same
blocks' own writes at 1 (project mode on a copy): the blocks cannot write against the push.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.efficacy_bench import CONCEPTS, QUESTION_SETS, Condition, set_label  # noqa: E402
from engine import ChatContext, Model, Sampling  # noqa: E402
from engine.capture import Probe  # noqa: E402
from repl.calibrate import answer_all, instructed, score  # noqa: E402
from repl.core import Core  # noqa: E402
from repl.steering import Active, parse_layers  # noqa: E402


def steering(name: str, held: str, strength: float, layers, mode: str) -> dict[str, Active]:
    """One strength of the sweep; clamp is add plus the same direction projected out at 1."""
    if mode == "clamp":
        return {name: Active(strength, layers), held: Active(1.0, layers, "project")}
    return {name: Active(strength, layers, mode)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("concept")
    parser.add_argument("options", help="extra /contrast options, e.g. '--method replies'")
    parser.add_argument("strengths")
    parser.add_argument("--layers")
    parser.add_argument("--questions", type=int, default=4, help="the first N of the set")
    parser.add_argument("--set", choices=sorted(QUESTION_SETS), default="first")
    parser.add_argument("--mode", choices=("add", "prompt", "project", "clamp"), default="add")
    parser.add_argument("--max-tokens", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    concept = next(c for c in CONCEPTS if c.name == args.concept)
    model = Model()
    sampling = Sampling(temperature=0.0, max_tokens=args.max_tokens)
    core = Core(model, ChatContext(model, n_ctx=2048, n_threads=args.threads), sampling)
    core.steering._probe = Probe(model, n_threads=args.threads)
    line = (
        f"/contrast {concept.name} {shlex.quote(concept.positive)} "
        f"{shlex.quote(concept.negative)} {args.options} --no-calibrate"
    )
    result = core.run_job(core.submit(line))
    if result.errors:
        raise SystemExit(result.errors[0])
    vec = core.steering.vectors[concept.name]
    layers = parse_layers(core, args.layers) if args.layers else vec.recommended_range
    questions = QUESTION_SETS[args.set][: args.questions]
    held = f"{concept.name}_held"  # clamp mode's projected copy
    if args.mode == "clamp":
        core.steering.add(dataclasses.replace(vec, name=held))
    base = Condition.of(
        "off", score(core, questions, answer_all(core, questions, None, sampling)), concept
    )
    asked = [instructed(q, concept.positive) for q in questions]
    rows = [
        base,
        Condition.of(
            "prompt", score(core, questions, answer_all(core, asked, None, sampling)), concept
        ),
    ]
    for s in (float(x) for x in args.strengths.split(",")):
        control = core.steering.control(steering(concept.name, held, s, layers, args.mode))
        replies = answer_all(core, questions, control, sampling)
        rows.append(Condition.of(f"{s:g}", score(core, questions, replies), concept))
    print(
        f"{line} · {args.mode} at blocks {layers[0]}-{layers[1]} · {len(questions)} questions "
        f"({set_label(args.set)}), "
        f"{args.max_tokens} tokens"
    )
    print(f"{'':>8} {concept.marker_name:>16} {'tokens':>6} {'NLL x':>6} {'rep3':>6}")
    for row in rows:
        print(
            f"{row.label:>8} {row.marker:16.2f} {row.tokens:6.1f} {row.nll / base.nll:6.2f} "
            f"{row.rep3:6.3f}"
        )
        if row.label not in ("off",):
            print(f"{'':>10}{row.texts[0][:160]!r}")


if __name__ == "__main__":
    main()
