"""Should steer run llama.cpp's OpenMP threads with OMP_WAIT_POLICY=passive? Decode speed of the
plain REPL with the policy passive and with OpenMP's default, on an otherwise quiet machine and
with one CPU-bound process beside it (a busy loop, as another program or agent would be).

libgomp reads OMP_WAIT_POLICY once, when llama.cpp is loaded, so every arm is its own
`steer chat --plain` process. Arms run in ABBA order within each condition; ratios are paired.
"Quiet" is only as quiet as the machine: other processes add noise, read the spread.
Run with `.venv/bin/python bench/omp_bench.py` (part of `make bench`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STORY = "Write a long story about a dragon."
BUSY = "while True: pass"


def rate(policy: str, tokens: int, threads: int) -> float:
    # set but empty: steer leaves a set OMP_WAIT_POLICY alone, and OpenMP ignores an empty
    # one, so the process gets OpenMP's own default
    env = {**os.environ, "OMP_WAIT_POLICY": policy or ""}
    cmd = [sys.executable, "-m", "repl.cli", "chat", "--plain", "--jsonl", "--temperature", "0"]
    cmd += ["--max-tokens", str(tokens), "--threads", str(threads)]
    proc = subprocess.run(
        cmd, input=STORY + "\n", capture_output=True, text=True, env=env, check=True, cwd=ROOT
    )
    replies = [json.loads(x) for x in proc.stdout.splitlines()]
    return next(r["tokens_per_s"] for r in replies if r["type"] == "reply")


def condition(label: str, rounds: int, tokens: int, threads: int) -> None:
    arms = {"passive": "passive", "default (unset)": ""}
    got: dict[str, list[float]] = {name: [] for name in arms}
    names = list(arms)
    for i in range(rounds):
        for name in names if i % 2 == 0 else reversed(names):
            got[name].append(rate(arms[name], tokens, threads))
    print(f"{label}: decode of {tokens} tokens, {threads} threads, {rounds} ABBA rounds")
    for name, values in got.items():
        print(
            f"  OMP_WAIT_POLICY {name:16s}: {statistics.median(values):7.1f} tok/s (median; "
            f"min {min(values):.1f}, max {max(values):.1f})"
        )
    paired = [p / d for p, d in zip(got["passive"], got["default (unset)"], strict=True)]
    print(
        f"  ratio passive / default: {statistics.median(paired):.3f} "
        f"(min {min(paired):.3f}, max {max(paired):.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    condition("quiet", args.rounds, args.tokens, args.threads)
    busy = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        condition("beside one busy process", max(2, args.rounds // 2), 16, args.threads)
    finally:
        busy.kill()
        busy.wait()


if __name__ == "__main__":
    main()
