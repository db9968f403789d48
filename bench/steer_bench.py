"""Steering benchmarks: steered vs unsteered decode, capture throughput, time to build a vector.

Ratios are paired within one run (ABBA order) because these machines are noisy.
Run with `make bench`.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import ChatContext, Model, Sampling  # noqa: E402
from engine.capture import Probe  # noqa: E402
from repl.steering import Steering, instruction_pairs  # noqa: E402
from vectors import compose  # noqa: E402

TERSE = "Respond tersely, in one short sentence."
VERBOSE = "Respond in great detail, at length."
STORY = [{"role": "user", "content": "Write a long story about a dragon."}]


def build_terse(steering: Steering) -> None:
    """/contrast terse's capture and maths on the 24 default pairs, no calibration."""
    steering.contrast(
        "terse",
        instruction_pairs(TERSE, VERBOSE, 24),
        method="mean",
        chat_format=True,
        last_k=1,
        provenance={},
    )


def build_time(model: Model) -> Steering:
    steering = Steering(model)
    steering.probe()  # context creation is not part of building
    steering.model_sha256()
    start = time.perf_counter()
    build_terse(steering)
    spent = time.perf_counter() - start
    vec = steering.vectors["terse"]
    print(
        f"build a vector from 24 pairs (48 prompts captured + maths): {spent:6.2f} s; "
        f"recommended {vec.recommended_strength:g} on blocks {vec.recommended_range}"
    )
    return steering


def capture_throughput(model: Model, rounds: int) -> None:
    """/contrast's 48 prompts (24 pairs) captured three ways, in ABBA order: shared prefixes
    (the default), batched without sharing, and one whole prompt per decode."""
    probe = Probe(model)
    pairs = instruction_pairs(TERSE, VERBOSE, 24)
    texts = [p for p, _ in pairs] + [n for _, n in pairs]
    prompts = [model.chat_tokens([{"role": "user", "content": t}]) for t in texts]
    modes = {
        "shared prefixes": {},
        f"batched ({probe.n_batch}-token batches)": {"share": False},
        "one prompt per decode": {"share": False, "batch": False},
    }
    got: dict[str, list[float]] = {name: [] for name in modes}
    for i in range(rounds):
        for name in modes if i % 2 == 0 else reversed(modes):
            start = time.perf_counter()
            probe.capture(prompts, **modes[name])
            got[name].append(len(prompts) / (time.perf_counter() - start))
    print(f"capture, /contrast's 48 prompts ({sum(map(len, prompts))} tokens), median of {rounds}:")
    for name, rates in got.items():
        print(f"  {name:30s}: {statistics.median(rates):6.2f} prompts/s")
    single = got["one prompt per decode"]
    for name in list(modes)[:2]:
        paired = [a / b for a, b in zip(got[name], single, strict=True)]
        print(f"  {name} / one per decode: {statistics.median(paired):6.2f} (median of paired)")
    probe.close()


def steered_decode(model: Model, steering: Steering, rounds: int, n_tokens: int) -> None:
    vec = steering.vectors["terse"]
    # a weak setting keeps the story long; the cost of steering does not depend on the values
    buffer = compose([(vec, 0.1, vec.recommended_range)], model.n_layer, model.n_embd)
    sampling = Sampling(temperature=0, max_tokens=n_tokens)

    def rate(buf) -> float:
        ctx = ChatContext(model, n_ctx=2048)
        ctx.set_control(buf)
        reply = ctx.generate(STORY, sampling)
        ctx.close()
        assert reply.tokens == n_tokens, reply.finish_reason
        return reply.tokens_per_s

    plain, steered, ratios = [], [], []
    for i in range(rounds):
        if i % 2 == 0:
            p, s = rate(None), rate(buffer)
        else:
            s, p = rate(buffer), rate(None)
        plain.append(p)
        steered.append(s)
        ratios.append(s / p)
    print(f"decode, {n_tokens} tokens, {rounds} paired rounds (ABBA):")
    print(f"  unsteered : {statistics.median(plain):6.1f} tok/s")
    print(f"  steered   : {statistics.median(steered):6.1f} tok/s")
    print(
        f"  steered / unsteered : {statistics.median(ratios):.3f} (median of paired; "
        f"min {min(ratios):.3f}, max {max(ratios):.3f})"
    )


def workbench(model: Model, steering: Steering, rounds: int) -> None:
    """What /sweep costs beyond the replies it makes: scoring each reply unsteered."""
    from repl.core import Core
    from repl.workbench import sweep

    sampling = Sampling(temperature=0, max_tokens=256)
    ctx = ChatContext(model, n_ctx=2048)
    reply = ctx.generate(STORY, sampling)
    score_rates = []
    for _ in range(rounds):
        ctx.reset()
        start = time.perf_counter()
        ctx.score(STORY, reply.token_ids)
        score_rates.append(reply.tokens / (time.perf_counter() - start))
    print(f"score a {reply.tokens}-token reply unsteered (batched logits), median of {rounds}:")
    print(f"  {statistics.median(score_rates):7.1f} tok/s vs decode {reply.tokens_per_s:.1f} tok/s")
    ctx.close()

    core = Core(model, ChatContext(model, n_ctx=2048), Sampling(temperature=0, max_tokens=128))
    core.steering = steering
    strengths = [0.5, 1.0, 1.5, 2.0, 3.0]
    question = "Why is the sky blue?"
    ratios = []
    for _ in range(rounds):
        start = time.perf_counter()
        result = sweep(core, "terse", strengths, (9, 13), question)
        spent = time.perf_counter() - start
        singles = 0.0
        for strength in [None, *strengths]:
            buf = (
                None
                if strength is None
                else compose(
                    [(steering.vectors["terse"], strength, (9, 13))], model.n_layer, model.n_embd
                )
            )
            one = ChatContext(model, n_ctx=2048)
            one.set_control(buf)
            t0 = time.perf_counter()
            one.generate([{"role": "user", "content": question}], core.sampling)
            singles += time.perf_counter() - t0
            one.close()
        ratios.append(spent / singles)
    rows = ", ".join(f"{r.strength:g}:{r.reply.tokens}" for r in result.rows)
    print(f"/sweep terse {len(strengths)} strengths + baseline, 128-token cap ({rows} tokens):")
    print(
        f"  last run {spent:5.2f} s; sweep / the same replies made one by one: "
        f"{statistics.median(ratios):.2f} (median of {rounds}; "
        f"min {min(ratios):.2f}, max {max(ratios):.2f})"
    )


def calibrate_terse(batched, prompts: list[str]) -> float:
    """/contrast terse's calibration, on a batch or one reply at a time; its strength."""
    from repl.calibrate import _calibrate, _Progress

    progress = _Progress(None, 0, 1)
    job = ("terse", TERSE, (9, 13), prompts, 40, "add", 1.0, progress, None)
    return _calibrate(batched, *job).strength


def calibration_time(model: Model, rounds: int) -> None:
    """/contrast terse's two parts, ABBA-paired: capture and maths (24 pairs), then the
    calibration, batched (what /contrast does) and one reply at a time."""
    from repl.calibrate import N_PROMPTS, Unbatched
    from repl.core import Core
    from vectors import calibration_prompts

    core = Core(model, ChatContext(model, n_ctx=2048), Sampling(temperature=0, max_tokens=48))
    core.steering.probe()
    prompts = calibration_prompts()[:N_PROMPTS]
    got: dict[str, list[float]] = {"capture": [], "batched": [], "one at a time": []}
    chosen: dict[str, float] = {}

    def capture() -> None:
        core.steering.vectors.pop("terse", None)
        build_terse(core.steering)

    for order in [("batched", "one at a time"), ("one at a time", "batched")] * rounds:
        start = time.perf_counter()
        capture()
        got["capture"].append(time.perf_counter() - start)
        for how in order:
            start = time.perf_counter()
            if how == "batched":
                with core.batch() as batched:
                    chosen[how] = calibrate_terse(batched, prompts)
            else:
                chosen[how] = calibrate_terse(Unbatched(core), prompts)
            got[how].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in got.items()}
    print(f"/contrast terse, 24 pairs, medians of {2 * rounds} (ABBA):")
    print(f"  capture + maths        : {med['capture']:6.2f} s")
    for how in ("batched", "one at a time"):
        print(
            f"  calibration, {how:<13}: {med[how]:6.2f} s = {med[how] / med['capture']:.2f}x "
            f"capture; recommends {chosen[how]:g}"
        )
    print(f"  one at a time / batched: {med['one at a time'] / med['batched']:.2f}")


def calibration_huge_pages(model: Model, rounds: int) -> None:
    """The batched calibration of /contrast terse on a chat context whose KV cache is on 2 MB
    pages (engine/hugepages.py) against one on 4 KB pages, ABBA; capture (the probe's own
    context, unchanged) alongside for the ratio the efficacy issue asks about."""
    from engine import hugepages
    from repl.calibrate import N_PROMPTS
    from repl.core import Core
    from vectors import calibration_prompts

    cores = {}
    for name, on in (("huge pages", True), ("4 KB pages", False)):
        hugepages.enabled = on
        cores[name] = Core(model, ChatContext(model, n_ctx=2048), Sampling(temperature=0))
        cores[name].steering.probe()
    hugepages.enabled = True
    prompts = calibration_prompts()[:N_PROMPTS]
    got: dict[str, list[float]] = {"capture": [], **{name: [] for name in cores}}
    chosen = {}
    for i in range(rounds):
        for name in list(cores) if i % 2 == 0 else reversed(list(cores)):
            core = cores[name]
            core.steering.vectors.pop("terse", None)
            start = time.perf_counter()
            build_terse(core.steering)
            got["capture"].append(time.perf_counter() - start)
            start = time.perf_counter()
            with core.batch() as batched:
                chosen[name] = calibrate_terse(batched, prompts)
            got[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in got.items()}
    paired = [a / b for a, b in zip(got["4 KB pages"], got["huge pages"], strict=True)]
    print(f"/contrast terse calibration, batched, medians of {rounds} (ABBA):")
    print(f"  capture + maths        : {med['capture']:6.2f} s")
    for name in cores:
        print(
            f"  calibration, {name:<10}: {med[name]:6.2f} s = {med[name] / med['capture']:.2f}x "
            f"capture; recommends {chosen[name]:g}"
        )
    print(
        f"  4 KB / huge pages      : {statistics.median(paired):.3f} (paired; min "
        f"{min(paired):.3f}, max {max(paired):.3f})"
    )


def main() -> None:
    model = Model()
    print(f"model: {model.name}")
    steering = build_time(model)
    capture_throughput(model, 3)
    steered_decode(model, steering, 8, 256)
    workbench(model, steering, 5)
    calibration_time(model, 2)
    calibration_huge_pages(model, 6)


if __name__ == "__main__":
    main()
