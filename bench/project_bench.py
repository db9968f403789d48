"""Project mode (issue 12): does projecting the terse direction out cancel a written terse
instruction, fluently? And what does projection cost?

`efficacy` (default): 8 questions that no build or calibration prompt contains (the first set of
bench/efficacy_bench.py), greedy, 150-token cap, answered

- plain: the bare question, unsteered;
- prompted: the question with the terse instruction appended, unsteered (the instruction works:
  replies are short);
- prompted + project at each setting (targets, blocks, s): the instruction should be cancelled.

Every reply is scored by the unsteered model on the bare question (NLL/token), with its share of
repeated token 3-grams. The issue's target: replies >= 2x the prompted length, NLL <= 1.5x
plain's. `--configs` takes settings such as `ffn_down:9-13:1,ffn_down+attn_output:9-13:1`.

`speed`: decode with projection active vs unsteered (256 tokens, ABBA-paired rounds in one run)
and the time to build a 5-block adapter. Other agents may share the CPU: ratios, not absolutes.

Run: `python bench/project_bench.py [efficacy|speed] [--configs ...] [--show]`.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.efficacy_bench import QUESTIONS  # noqa: E402
from engine import ChatContext, Model, Sampling  # noqa: E402
from repl.calibrate import answer_all, instructed, score  # noqa: E402
from repl.core import Core  # noqa: E402
from repl.steering import Active  # noqa: E402
from vectors import bundled_path, calibration_prompts, load_vector, neutral_prompts  # noqa: E402
from vectors.lora import build_adapter, parse_targets, save_adapter  # noqa: E402

TERSE = "Respond tersely, in one short sentence."
STORY = [{"role": "user", "content": "Write a long story about a dragon."}]
DEFAULT_CONFIGS = "attn_output:9-13:1,attn_output:9-13:1.5"


@dataclass
class Row:
    label: str
    tokens: float
    nll: float
    rep3: float
    texts: list[str]


def summarise(label: str, scored) -> Row:
    made = [s for s in scored if s.reply.tokens > 0]
    return Row(
        label,
        float(np.mean([s.reply.tokens for s in scored])),
        float(np.mean([s.nll for s in made])) if made else math.nan,
        float(np.mean([s.repeat for s in scored])),
        [s.reply.text for s in scored],
    )


def parse_config(text: str) -> tuple[tuple[str, ...], tuple[int, int], float]:
    targets, band, strength = text.split(":")
    a, _, b = band.partition("-")
    return parse_targets(targets.replace("+", ",")), (int(a), int(b or a)), float(strength)


def efficacy(args) -> None:
    overlap = set(QUESTIONS) & (set(neutral_prompts()) | set(calibration_prompts()))
    assert not overlap, overlap
    model = Model()
    sampling = Sampling(temperature=0.0, max_tokens=args.max_tokens)
    core = Core(model, ChatContext(model, n_ctx=2048, n_threads=args.threads), sampling)
    core.steering.load(str(bundled_path("terse")), "terse")
    asked = [instructed(q, TERSE) for q in QUESTIONS]
    start = time.perf_counter()
    plain = summarise("plain", _scored(core, QUESTIONS, None, sampling))
    prompted = summarise("prompted", _scored(core, asked, None, sampling))
    rows = [plain, prompted]
    print(_head(), flush=True)
    for row in rows:
        print(_line(row, plain, prompted), flush=True)
    for config in args.configs.split(","):
        targets, layers, strength = parse_config(config)
        active = {"terse": Active(strength, layers, "project", targets)}
        control = core.steering.control(active)
        row = summarise(f"prompted + project {config}", _scored(core, asked, control, sampling))
        rows.append(row)
        print(_line(row, plain, prompted), flush=True)
        _show(args, row)
        if args.bare:
            replies = _scored(core, QUESTIONS, control, sampling)
            bare = summarise(f"bare + project {config}", replies)
            print(_line(bare, plain, prompted), flush=True)
            _show(args, bare)
    print(
        f"({len(QUESTIONS)} unseen questions, greedy, {args.max_tokens}-token cap, "
        f"{time.perf_counter() - start:.0f} s; NLL under the unsteered model on the bare question)"
    )


def _scored(core: Core, prompts: list[str], control, sampling: Sampling):
    """Replies to `prompts` under `control`, scored unsteered on the bare questions."""
    return score(core, QUESTIONS, answer_all(core, prompts, control, sampling))


def _show(args, row: Row) -> None:
    if args.show:
        for q, text in zip(QUESTIONS, row.texts, strict=True):
            print(f"    [{q}] {text[:240]!r}")


def _head() -> str:
    return (
        f"{'condition':<44} {'tokens':>6} {'x prompt':>8} {'NLL/tok':>7} {'x plain':>7} "
        f"{'rep3':>5}  target (>=2x, <=1.5x)"
    )


def _line(row: Row, plain: Row, prompted: Row) -> str:
    longer, cost = row.tokens / prompted.tokens, row.nll / plain.nll
    verdict = ""
    if row.label.startswith("prompted + project"):
        verdict = "PASS" if longer >= 2 and cost <= 1.5 else "fail"
    return (
        f"{row.label:<44} {row.tokens:6.1f} {longer:8.2f} {row.nll:7.3f} {cost:7.2f} "
        f"{row.rep3:5.2f}  {verdict}"
    )


def speed(args) -> None:
    model = Model()
    vec = load_vector(bundled_path("terse"))
    layers = (9, 13)
    # build time: the first build reads the model's tensor index; later ones reuse it
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            start = time.perf_counter()
            adapter = build_adapter(vec, model.path, layers, ("attn_output",))
            path = Path(tmp) / f"a{i}.gguf"
            save_adapter(adapter, path)
            times.append(time.perf_counter() - start)
        print(f"build + write a 5-block adapter (attn_output, blocks 9-13), {args.rounds} times:")
        median = statistics.median(times) * 1000
        print(f"  first {times[0] * 1000:6.1f} ms, median {median:6.1f} ms")
        core = Core(model, ChatContext(model, n_ctx=2048), Sampling(temperature=0.0))
        core.steering.load(str(bundled_path("terse")), "terse")
        # a weak setting keeps the story long; the cost does not depend on the scale's value
        control = core.steering.control({"terse": Active(0.1, layers, "project")})
        sampling = Sampling(temperature=0, max_tokens=args.tokens)

        def rate(ctl) -> float:
            ctx = ChatContext(model, n_ctx=2048, n_threads=args.threads)
            if ctl is not None:
                ctx.set_adapters(ctl.adapters)
            reply = ctx.generate(STORY, sampling)
            ctx.close()
            assert reply.tokens == args.tokens, reply.finish_reason
            return reply.tokens_per_s

        plain, projected, ratios = [], [], []
        for i in range(args.rounds):
            if i % 2 == 0:
                p, s = rate(None), rate(control)
            else:
                s, p = rate(control), rate(None)
            plain.append(p)
            projected.append(s)
            ratios.append(s / p)
    print(
        f"decode, {args.tokens} tokens, {args.threads} threads, {args.rounds} paired rounds (ABBA):"
    )
    print(f"  unsteered          : {statistics.median(plain):6.1f} tok/s")
    print(f"  projection active  : {statistics.median(projected):6.1f} tok/s")
    print(
        f"  projected / unsteered : {statistics.median(ratios):.3f} (median of paired; "
        f"min {min(ratios):.3f}, max {max(ratios):.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="efficacy", choices=("efficacy", "speed"))
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="TARGETS:A-B:S,...")
    parser.add_argument("--max-tokens", type=int, default=150)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--show", action="store_true", help="print every projected reply")
    parser.add_argument(
        "--bare", action="store_true", help="also project on the bare questions (no instruction)"
    )
    args = parser.parse_args()
    (speed if args.what == "speed" else efficacy)(args)


if __name__ == "__main__":
    main()
