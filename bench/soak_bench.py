"""Soak: a 300-turn plain-REPL chat with the steering changed every few turns.

Runs `steer chat --jsonl` as a user would (a subprocess fed through stdin), builds a vector
with /contrast, then sends 300 messages, switching the steering every 5 turns and clearing
the conversation every 25 so it fits the context. It reports the process's RSS (from
/proc/PID/status) after the first turn and at the end, the time per turn against the
turns since the last /clear (context growth) and against time (slowdown), and finally runs
`steer replay FILE --check` on the session the chat left.

    flock /tmp/steer-cpu.lock .venv/bin/python bench/soak_bench.py [--turns 300]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEER = [sys.executable, "-m", "repl.cli"]
TERSE = "Respond tersely, in one short sentence."
VERBOSE = "Respond in great detail, at length."
QUESTIONS = [
    "Name a color.",
    "What is rain?",
    "Why do cats purr?",
    "Name a big city.",
    "What is two plus two?",
    "Say hello.",
    "What is a star?",
    "Name a fruit.",
]
STEERING = [
    "/steer terse 0.5 --layers 9-13",
    "/steer terse -0.5 --layers 9-13",
    "/steer off",
    "/steer terse",
]
CLEAR_EVERY = 25
STEER_EVERY = 5


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


class Chat:
    """steer chat --jsonl, one line in, its events out."""

    def __init__(self, session: Path, env: dict, max_tokens: int, ctx: int) -> None:
        args = [*STEER, "chat", "--jsonl", "--temperature", "0", "--max-tokens", str(max_tokens)]
        self.proc = subprocess.Popen(
            [*args, "--ctx", str(ctx), "--session", str(session)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )

    def send(self, line: str, until: str, text: str = "") -> list[dict]:
        """Send a line; read events until one of type `until` (whose message holds `text`)
        arrives. An error event stops the soak."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        events = []
        while True:
            raw = self.proc.stdout.readline()
            if not raw:
                raise RuntimeError(f"steer ended after {line!r}: {events}")
            event = json.loads(raw)
            events.append(event)
            if event["type"] == "error":
                raise RuntimeError(f"{line!r}: {event['message']}")
            if event["type"] == until and text in event.get("message", ""):
                return events

    def command(self, line: str) -> None:
        self.send(line, "info")

    def close(self) -> int:
        self.proc.stdin.close()
        return self.proc.wait(timeout=120)


def run(turns: int, max_tokens: int, ctx: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="steer-soak-"))
    env = {**os.environ, "STEER_DATA_DIR": str(folder / "data")}
    session = folder / "soak.toml"
    chat = Chat(session, env, max_tokens, ctx)
    t0 = time.perf_counter()
    chat.send(f'/contrast terse "{TERSE}" "{VERBOSE}" --n 12', "info", "apply it")
    build_s = time.perf_counter() - t0
    rows = []  # (turn, turns since /clear, seconds, tokens, steering changed before it)
    since_clear = 0
    start_rss = None
    samples: list[tuple[int, int]] = []  # (turn, VmRSS KiB)
    for turn in range(1, turns + 1):
        if turn > 1 and (turn - 1) % CLEAR_EVERY == 0:
            chat.command("/clear")
            since_clear = 0
        changed = (turn - 1) % STEER_EVERY == 0
        if changed:
            chat.command(STEERING[((turn - 1) // STEER_EVERY) % len(STEERING)])
        since_clear += 1
        t = time.perf_counter()
        reply = chat.send(QUESTIONS[turn % len(QUESTIONS)], "reply")[-1]
        rows.append((turn, since_clear, time.perf_counter() - t, reply["tokens"], changed))
        if turn == 1:
            start_rss = rss_kib(chat.proc.pid)
        if turn in (1, 25) or turn % 50 == 0:
            samples.append((turn, rss_kib(chat.proc.pid)["VmRSS"]))
    end_rss = rss_kib(chat.proc.pid)
    code = chat.close()
    t = time.perf_counter()
    replay = subprocess.run(
        [*STEER, "replay", str(session), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=3600,
    )
    replay_s = time.perf_counter() - t
    return {
        "turns": turns,
        "exit_code": code,
        "build_s": round(build_s, 2),
        "rss_start_kib": start_rss,
        "rss_end_kib": end_rss,
        "rss_samples": samples,
        "rows": rows,
        "session_bytes": session.stat().st_size,
        "replay_exit": replay.returncode,
        "replay_summary": (replay.stdout.strip().splitlines() or [replay.stderr.strip()])[-1],
        "replay_s": round(replay_s, 1),
    }


def line(label: str, part: list) -> str:
    if not part:
        return f"  {label}: (none)"
    ms = statistics.median(r[2] for r in part) * 1000
    per_token = statistics.median(r[2] / max(r[3], 1) for r in part) * 1000
    return f"  {label}: median {ms:6.1f} ms ({per_token:5.1f} ms/token, {len(part)} turns)"


def report(result: dict) -> None:
    everything = result["rows"]
    rows = [r for r in everything if not r[4]]  # a steering change re-reads the conversation
    print(f"soak: {result['turns']} turns, exit code {result['exit_code']}")
    print(f"/contrast (12 pairs): {result['build_s']} s")
    s, e = result["rss_start_kib"], result["rss_end_kib"]
    print(
        f"RSS after turn 1: {s['VmRSS'] / 1024:.1f} MiB; after turn {result['turns']}: "
        f"{e['VmRSS'] / 1024:.1f} MiB (peak {e['VmHWM'] / 1024:.1f} MiB)"
    )
    shown = ", ".join(f"{t}: {kib / 1024:.1f}" for t, kib in result["rss_samples"])
    print(f"RSS by turn (MiB): {shown}")
    print("time per turn by turns since /clear (context growth; turns after a steering change")
    print("are apart: the change re-reads the whole conversation under the new steering):")
    for lo in range(1, CLEAR_EVERY + 1, 5):
        print(line(f"turns {lo:>2}-{lo + 4:<2}", [r for r in rows if lo <= r[1] < lo + 5]))
    print(line("after a change", [r for r in everything if r[4]]))
    print("time per turn over the run (slowdown):")
    for lo in range(1, result["turns"] + 1, 50):
        print(line(f"turns {lo:>3}-{lo + 49:<3}", [r for r in rows if lo <= r[0] < lo + 50]))
    print(f"session file: {result['session_bytes'] / 1024:.0f} KiB")
    print(f"replay --check: exit {result['replay_exit']}, {result['replay_summary']}")
    print(f"  ({result['replay_s']} s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--ctx", type=int, default=2048)
    args = parser.parse_args()
    result = run(args.turns, args.max_tokens, args.ctx)
    report(result)
    ok = result["exit_code"] == 0 and result["replay_exit"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
