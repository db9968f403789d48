"""How should llama.cpp's OpenMP threads wait at their barriers? Decode speed of the plain REPL
with steer's default (a short spin: OMP_WAIT_POLICY=active, GOMP_SPINCOUNT=1000), a passive
wait (OMP_WAIT_POLICY=passive) and OpenMP's own default (a long spin), on an otherwise quiet
machine and with one CPU-bound process beside it (a busy loop, as another program or agent
would be).

libgomp reads the variables once, when llama.cpp is loaded, so every arm is its own
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


# each arm's variables; steer leaves a set variable alone and OpenMP ignores an empty one, so
# the last arm gets OpenMP's own default
ARMS = {
    "steer (a spin of 1000)": {},
    "OMP_WAIT_POLICY=passive": {"OMP_WAIT_POLICY": "passive"},
    "OpenMP's default": {"OMP_WAIT_POLICY": ""},
}


def rate(arm: dict[str, str], tokens: int, threads: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(arm)
    cmd = [sys.executable, "-m", "repl.cli", "chat", "--plain", "--jsonl", "--temperature", "0"]
    cmd += ["--max-tokens", str(tokens), "--threads", str(threads)]
    proc = subprocess.run(
        cmd, input=STORY + "\n", capture_output=True, text=True, env=env, check=True, cwd=ROOT
    )
    replies = [json.loads(x) for x in proc.stdout.splitlines()]
    return next(r["tokens_per_s"] for r in replies if r["type"] == "reply")


def condition(label: str, rounds: int, tokens: int, threads: int) -> None:
    got: dict[str, list[float]] = {name: [] for name in ARMS}
    names = list(ARMS)
    for i in range(rounds):
        for name in names if i % 2 == 0 else reversed(names):
            got[name].append(rate(ARMS[name], tokens, threads))
    print(f"{label}: decode of {tokens} tokens, {threads} threads, {rounds} ABBA rounds")
    for name, values in got.items():
        print(
            f"  {name:28s}: {statistics.median(values):7.1f} tok/s (median; "
            f"min {min(values):.1f}, max {max(values):.1f})"
        )
    steer = names[0]
    for other in names[1:]:
        paired = [s / o for s, o in zip(got[steer], got[other], strict=True)]
        print(
            f"  ratio steer / {other}: {statistics.median(paired):.3f} "
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
