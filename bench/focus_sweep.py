"""Research helper for docs/efficacy.md: the `/contrast --method focus` vector (vectors/focus.py),
swept in messages mode (or --mode prompt/add) on the bench's unseen questions, at other blocks
or scales if asked.

python bench/focus_sweep.py sea 0.85,1 [--layers 5-9] [--ratio 0.09] [--questions 16]
python bench/focus_sweep.py sea pick --no-prompt   # the calibration's pick (repl/calibrate.py)

The model writes a reply (48 tokens, greedy, as `--method replies` does) under each of the
24 positive and negative instructions. Each token of a positive reply gets a weight: how
much more likely the positive instruction made it than the negative one did, in nats, less
one nat (floored at 0), so only the tokens the instruction put there count ("sea",
"ships"; a plain reply's words weigh nothing). Every reply is then read after the *bare*
question, and the vector is the weighted mean of the positive replies' token activations
minus the mean over all replies' tokens. Each block's vector is scaled to `ratio` times the
mean norm of that block's token activations, so strength 1 means the same push at every
block. `--method replies` averages every written token read after its instruction, and
most of them are the same plain answer on both sides (docs/efficacy.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.efficacy_bench import CONCEPTS, QUESTION_SETS, Condition  # noqa: E402
from engine import ChatContext, Model, Sampling  # noqa: E402
from repl.calibrate import answer_all, calibrate, instructed, score  # noqa: E402
from repl.core import Core  # noqa: E402
from repl.steer_commands import reply_gains, write_replies  # noqa: E402
from repl.steering import Active, instruction_pairs  # noqa: E402
from vectors import neutral_prompts  # noqa: E402
from vectors.focus import RATIO  # noqa: E402

N_PAIRS = 24


def focus_vector(core: Core, concept, pairs, replies, ratio: float):
    """The vector `/contrast --method focus` builds, at another `ratio` if asked."""
    gains = reply_gains(core, pairs, replies, None)
    every = np.concatenate(gains)
    print(f"tokens gaining > 1 nat: {(every > 1).mean():.1%}; > 2 nats: {(every > 2).mean():.1%}")
    questions = neutral_prompts()[: len(pairs)]
    return core.steering.contrast_focus(
        concept.name, questions, replies, gains, provenance={}, ratio=ratio
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("concept")
    parser.add_argument("strengths", help="comma-separated; 'pick' is the calibration's pick")
    parser.add_argument("--layers", default="5-9")
    parser.add_argument("--ratio", type=float, default=RATIO)
    parser.add_argument("--set", choices=sorted(QUESTION_SETS), default="both")
    parser.add_argument("--questions", type=int, default=16, help="the first N of the set")
    parser.add_argument(
        "--mode", choices=("add", "prompt", "messages", "content"), default="messages"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-prompt", action="store_true", help="skip the prompt's row")
    args = parser.parse_args()
    concept = next(c for c in CONCEPTS if c.name == args.concept)
    lo, hi = (int(x) for x in args.layers.split("-"))
    model = Model()
    sampling = Sampling(temperature=0.0, max_tokens=150)
    core = Core(model, ChatContext(model, n_ctx=2048, n_threads=args.threads), sampling)
    pairs = instruction_pairs(concept.positive, concept.negative, N_PAIRS)
    replies = write_replies(core, pairs, None, 0, None)
    focus_vector(core, concept, pairs, replies, args.ratio)
    asked = QUESTION_SETS[args.set][: args.questions]
    base = Condition.of("off", score(core, asked, answer_all(core, asked, None, sampling)), concept)
    rows = [base]
    if not args.no_prompt:
        prompted = [instructed(q, concept.positive) for q in asked]
        replies_p = answer_all(core, prompted, None, sampling)
        rows.append(Condition.of("prompt", score(core, asked, replies_p), concept))
    strengths = args.strengths.split(",")
    if "pick" in strengths:
        result = calibrate(core, concept.name, concept.positive, layers=(lo, hi), mode=args.mode)
        points = ", ".join(
            f"{p.strength:g}: NLL {p.nll:.2f}, effect {p.effect}" for p in result.points
        )
        print(f"calibration ({result.seconds:.0f} s): picks {result.strength:g}; {points}")
        strengths = [f"{result.strength:g}" if x == "pick" else x for x in strengths]
    for s in (float(x) for x in strengths):
        control = core.steering.control({concept.name: Active(s, (lo, hi), args.mode)})
        replies_s = answer_all(core, asked, control, sampling)
        rows.append(Condition.of(f"{s:g}", score(core, asked, replies_s), concept))
    print(
        f"{concept.name}: focus, {args.mode} at blocks {lo}-{hi}, ratio {args.ratio:g}, "
        f"{len(asked)} questions ({args.set}), 150 tokens"
    )
    print(f"{'':>8} {concept.marker_name:>16} {'tokens':>6} {'NLL x':>6} {'rep3':>6}")
    for row in rows:
        print(
            f"{row.label:>8} {row.marker:16.2f} {row.tokens:6.1f} {row.nll / base.nll:6.2f} "
            f"{row.rep3:6.3f}"
        )
        if row.label != "off":
            print(f"{'':>10}{row.texts[0][:160]!r}")


if __name__ == "__main__":
    main()
