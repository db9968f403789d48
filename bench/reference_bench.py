"""steer against llama.cpp's own tools, built from the same vendored source with the same flags
(tests/tools/build_llama_cli.sh): decode speed against `llama-bench` tg128; the time to first
token deep in a chat against llama-bench's prompt processing at the same depths (`-p N -d D`);
and building a vector from the 24 default instruction pairs against `llama-cvector-generator` on
the same 48 prompts (steer's chat formatting, both with the `mean` method).

Each round runs every arm once, in ABBA order (the order flips every round), on the same
threads and with the same OMP_WAIT_POLICY, and the ratios are taken within a round. Other
processes on the machine still add noise: read the spread, not only the median.
Run with `.venv/bin/python bench/reference_bench.py` (part of `make bench`).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STORY = "Write a long story about a dragon."
TERSE = "Respond tersely, in one short sentence."
VERBOSE = "Respond in great detail, at length."


def tool(name: str) -> str:
    script = ROOT / "tests" / "tools" / "build_llama_cli.sh"
    proc = subprocess.run(["bash", str(script), name], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"building {name} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout.strip().splitlines()[-1]


def steer_cmd() -> list[str]:
    return [sys.executable, "-m", "repl.cli"]


# -- decode ------------------------------------------------------------------------------------


def llama_bench_rate(binary: str, model: Path, threads: int, n: int, env) -> float:
    """llama-bench tg<n>: decode n tokens one at a time (no sampling), flash attention off as
    in steer; its own warm-up run first. Returns its mean tokens/s over 3 repetitions."""
    cmd = [binary, "-m", str(model), "-p", "0", "-n", str(n), "-t", str(threads)]
    cmd += ["-fa", "0", "-r", "3", "-o", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return float(json.loads(proc.stdout)[0]["avg_ts"])


def steer_plain_rate(threads: int, n: int, env) -> float:
    """The plain REPL, greedy, n tokens of a story: the median decode rate of 3 replies (each
    after /clear). Decode rate = tokens after the first / their time, as steer reports it."""
    lines = "\n".join([STORY, "/clear", STORY, "/clear", STORY]) + "\n"
    cmd = steer_cmd() + ["chat", "--plain", "--jsonl", "--temperature", "0"]
    cmd += ["--max-tokens", str(n), "--threads", str(threads)]
    proc = subprocess.run(
        cmd, input=lines, capture_output=True, text=True, env=env, check=True, cwd=ROOT
    )
    rates = []
    for line in proc.stdout.splitlines():
        event = json.loads(line)
        if event["type"] == "reply":
            assert event["tokens"] == n, event  # the story runs the whole length
            rates.append(event["tokens_per_s"])
    return statistics.median(rates)


# -- a turn deep in a chat ---------------------------------------------------------------------


def steer_turn_ttft(threads: int, turns: int) -> tuple[int, int, int, float]:
    """engine_bench.py's chat of same-size questions, fresh: the time to first token of the
    last turn over the second's, which grows with attention over the cells before the turn.
    Returns (new tokens of the last turn, cached tokens before turn 2, before the last, ratio)."""
    from bench.engine_bench import same_size_chat
    from engine import ChatContext

    ctx = ChatContext(shared_model(), n_ctx=4096, n_threads=threads)
    _, replies = same_size_chat(ctx, turns)
    ctx.close()
    second, last = replies[1], replies[-1]
    cached = [r.prompt_tokens - r.prompt_tokens_evaluated for r in (second, last)]
    return last.prompt_tokens_evaluated, *cached, last.ttft_s / second.ttft_s


def llama_bench_depth_ratio(binary: str, model: Path, threads: int, shape, env) -> float:
    """llama-bench pp<new> at the two depths (its time per run, mean of 5): deep over shallow.
    The same work as steer's two turns, without a chat template or the first token's sampling."""
    new, shallow, deep = shape
    cmd = [binary, "-m", str(model), "-p", str(new), "-n", "0", "-d", f"{shallow},{deep}"]
    cmd += ["-t", str(threads), "-fa", "0", "-r", "5", "-o", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    runs = {run["n_depth"]: run["avg_ns"] for run in json.loads(proc.stdout)}
    return runs[deep] / runs[shallow]


@functools.cache
def shared_model():
    """One Model for the in-process arms (loading it per round would time the disk)."""
    from engine import Model

    return Model()


# -- contrast ----------------------------------------------------------------------------------


def contrast_prompts() -> list[str]:
    """The 48 prompts /contrast terse builds from, chat-formatted as steer formats them."""
    from engine import Model
    from repl.steering import instruction_pairs

    model = Model()
    pairs = instruction_pairs(TERSE, VERBOSE, 24)
    texts = [p for p, _ in pairs] + [n for _, n in pairs]
    out = [model.render_chat([{"role": "user", "content": t}]) for t in texts]
    model.close()
    return out


def cvector_wall(binary: str, model: Path, files: tuple[Path, Path, Path], threads: int, env):
    pos, neg, out = files
    cmd = [binary, "-m", str(model), "--positive-file", str(pos), "--negative-file", str(neg)]
    cmd += ["--method", "mean", "-t", str(threads), "-o", str(out), "-c", "2048"]
    t0 = time.perf_counter()
    subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return time.perf_counter() - t0


def steer_contrast_wall(out: Path, env) -> float:
    """`steer vector build`: /contrast on the 24 default pairs, uncalibrated, saved; the whole
        process (Python start, model load, capture, save), as cvector-generator is timed. It uses
    every core (os.cpu_count()), so run the bench with --threads at the machine's core count."""
    cmd = steer_cmd() + ["vector", "build", "bench_terse", "--positive", TERSE]
    cmd += ["--negative", VERBOSE, "--no-calibrate", "--out", str(out)]
    t0 = time.perf_counter()
    subprocess.run(cmd, capture_output=True, text=True, env=env, check=True, cwd=ROOT)
    return time.perf_counter() - t0


class InProcess:
    """/contrast's own time inside a running steer (the model loaded, the probe made once, as
    in a chat): capture of the 48 prompts, the maths, no calibration."""

    def __init__(self) -> None:
        from engine import Model
        from repl.steering import Steering, instruction_pairs

        self.steering = Steering(Model())
        self.steering.probe()
        self.steering.model_sha256()
        self.pairs = instruction_pairs(TERSE, VERBOSE, 24)

    def __call__(self) -> float:
        self.steering.vectors.pop("terse", None)
        t0 = time.perf_counter()
        self.steering.contrast(
            "terse", self.pairs, method="mean", chat_format=True, last_k=1, provenance={}
        )
        return time.perf_counter() - t0


# -- rounds ------------------------------------------------------------------------------------


def abba(arms: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    names = list(arms)
    got: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        for name in names if i % 2 == 0 else reversed(names):
            got[name].append(arms[name]())
    return got


def report(title: str, got: dict[str, list[float]], unit: str, *ratios: tuple[str, str]) -> None:
    print(title)
    for name, values in got.items():
        print(
            f"  {name:34s}: {statistics.median(values):8.2f} {unit} (median; "
            f"min {min(values):.2f}, max {max(values):.2f})"
        )
    for a, b in ratios:
        paired = [x / y for x, y in zip(got[a], got[b], strict=True)]
        print(
            f"  ratio {a} / {b}: {statistics.median(paired):.3f} (median of {len(paired)} "
            f"paired; min {min(paired):.3f}, max {max(paired):.3f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument(
        "--omp-wait-policy",
        default="",
        help="OMP_WAIT_POLICY for every arm (default: active with GOMP_SPINCOUNT=1000, as steer "
        "sets them)",
    )
    parser.add_argument("--turns", type=int, default=30, help="the chat's length for ttft")
    parser.add_argument("--only", choices=("decode", "ttft", "contrast"), help="run one comparison")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # each figure as soon as it is known
    # for the arms in this process too: OpenMP reads it when llama.cpp is loaded, below
    os.environ.pop("OMP_WAIT_POLICY", None)
    if args.omp_wait_policy:
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy
    else:  # steer's default, for llama-bench too
        os.environ.setdefault("OMP_WAIT_POLICY", "active")
        os.environ.setdefault("GOMP_SPINCOUNT", "1000")
    os.environ.pop("STEER_HUGE_PAGES", None)  # the steer arm as users get it
    env = dict(os.environ)
    from engine.model import default_model_path

    model = default_model_path()
    print(
        f"model: {model.name}; {args.threads} threads; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
        f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', '(unset)')}; {args.rounds} ABBA rounds"
    )
    if args.only in (None, "decode"):
        bench = tool("llama-bench")
        got = abba(
            {
                f"llama-bench tg{args.tokens}": lambda: llama_bench_rate(
                    bench, model, args.threads, args.tokens, env
                ),
                "steer plain REPL": lambda: steer_plain_rate(args.threads, args.tokens, env),
                "steer, STEER_HUGE_PAGES=0": lambda: steer_plain_rate(
                    args.threads, args.tokens, {**env, "STEER_HUGE_PAGES": "0"}
                ),
            },
            args.rounds,
        )
        report(
            f"decode, {args.tokens} tokens, greedy",
            got,
            "tok/s",
            ("steer plain REPL", f"llama-bench tg{args.tokens}"),
            ("steer, STEER_HUGE_PAGES=0", f"llama-bench tg{args.tokens}"),
            ("steer plain REPL", "steer, STEER_HUGE_PAGES=0"),
        )
    if args.only in (None, "ttft"):
        bench = tool("llama-bench")
        shape = steer_turn_ttft(args.threads, args.turns)[:3]  # warm-up; the depths to match
        got = abba(
            {
                f"steer turn {args.turns} / turn 2": lambda: steer_turn_ttft(
                    args.threads, args.turns
                )[3],
                "llama-bench the same depths": lambda: llama_bench_depth_ratio(
                    bench, model, args.threads, shape, env
                ),
            },
            args.rounds,
        )
        report(
            f"time to first token deep in a chat: {shape[0]} new tokens after {shape[2]} cached "
            f"over after {shape[1]} (llama-bench: pp{shape[0]} at -d {shape[2]} / -d {shape[1]})",
            got,
            "x",
            (f"steer turn {args.turns} / turn 2", "llama-bench the same depths"),
        )
    if args.only in (None, "contrast"):
        cvec = tool("llama-cvector-generator")
        with tempfile.TemporaryDirectory() as tmp:
            pos, neg = Path(tmp, "positive.txt"), Path(tmp, "negative.txt")
            prompts = contrast_prompts()
            # one prompt per line, as cvector-generator reads them (it undoes the escapes)
            esc = [p.replace("\\", "\\\\").replace("\n", "\\n") for p in prompts]
            pos.write_text("\n".join(esc[:24]) + "\n")
            neg.write_text("\n".join(esc[24:]) + "\n")
            files = (pos, neg, Path(tmp, "cvec.gguf"))
            in_process = InProcess()
            got = abba(
                {
                    "llama-cvector-generator (wall)": lambda: cvector_wall(
                        cvec, model, files, args.threads, env
                    ),
                    "steer vector build (wall)": lambda: steer_contrast_wall(
                        Path(tmp, "steer.gguf"), env
                    ),
                    "steer /contrast (in process)": in_process,
                },
                args.rounds,
            )
        report(
            "building a vector from the 24 default pairs (48 prompts, mean method)",
            got,
            "s",
            ("llama-cvector-generator (wall)", "steer vector build (wall)"),
            ("llama-cvector-generator (wall)", "steer /contrast (in process)"),
        )


if __name__ == "__main__":
    main()
