"""Rebuild the ready-made vectors shipped in vectors/data/vectors/ (for the default model).

Each is made by the same `/contrast` line a user would type (calibration included), so its file
carries the provenance and the calibration that chose its strength. The lines are the ones the
efficacy scoreboard (bench/efficacy_bench.py, docs/efficacy.md) measured.

Each recommends its calibration's pick, confirmed on 16 fresh questions that nothing was
chosen on: `python bench/efficacy_bench.py --ready --questions fresh`.

Run: python bench/build_ready_vectors.py [NAME ...]   (all of them by default)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.efficacy_bench import CONCEPTS, build_line  # noqa: E402
from engine import ChatContext, Model, Sampling  # noqa: E402
from repl.core import Core  # noqa: E402
from vectors import save_vector  # noqa: E402

# sea: a topic that met the bar on both sets of questions with /set dry 0.8 on every
# condition, by the widest margin (music did too, at 56-59% of the prompt's gain; docs/
# efficacy.md, "DRY"); the other topics, sadness and gratitude did not. food: since content
# mode's ladder has a rung at 1.1, its pick, it meets the bar on three sets of questions at
# plain greedy and on both with DRY ("Stronger rungs with DRY, and a finer ladder")
READY = ("terse", "formal", "excited", "cheerful", "sea", "food")
# /contrast options a ready vector is built with beyond its scoreboard concept's: cheerful
# passes with --method focus, not with the default method (docs/efficacy.md, "focus on the
# tones"), and it shipped calibrated in messages mode, focus's mode until content mode passed
# it too (with less margin: "Content mode for the tones")
OPTIONS = {"cheerful": "--method focus --mode messages"}
# Project mode's measured setting (bench/project_bench.py, docs/projection.md), kept in the file
# so `/steer terse --mode project` and `/vector show terse` use and show it. Measured again
# when the vector changes: `python bench/project_bench.py efficacy --bare`.
PROJECT = {
    "terse": {
        "strength": 1.5,
        "layers": [9, 13],
        "targets": ["attn_output"],
        "measured_by": "python bench/project_bench.py efficacy --bare",
        "note": "8 unseen questions with the terse instruction, greedy, 150 tokens: unablated "
        "25.9 tokens; s=1 63.5 (2.45x) at 0.96x the unsteered NLL; s=1.5 89.2 (3.45x) at "
        "1.07x, repeats 0.07; s=2 112.8 at 1.05x but repeats 0.18 (not fluent by the "
        "calibration rule)",
    }
}
OUT = ROOT / "vectors" / "data" / "vectors"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"some of {', '.join(READY)} (default: all)")
    names = parser.parse_args().names or READY
    if unknown := set(names) - set(READY):
        raise SystemExit(f"not a ready-made vector: {', '.join(sorted(unknown))}; known: {READY}")
    model = Model()
    core = Core(model, ChatContext(model, n_ctx=2048), Sampling(temperature=0.0))
    OUT.mkdir(parents=True, exist_ok=True)
    for concept in (c for c in CONCEPTS if c.name in names):
        line = build_line(concept, OPTIONS.get(concept.name, ""), ready=False)
        result = core.run_job(core.submit(line))
        if result.errors:
            raise SystemExit(f"{line}: {result.errors[0]}")
        vec = core.steering.vectors[concept.name]
        vec.meta["built_by"] = line
        if concept.name in PROJECT:
            vec.meta["project"] = PROJECT[concept.name]
        save_vector(vec, OUT / f"{concept.name}.gguf", model.metadata("general.architecture") or "")
        print(f"{concept.name}: {vec.recommended_strength:g} on {vec.recommended_range} <- {line}")


if __name__ == "__main__":
    main()
