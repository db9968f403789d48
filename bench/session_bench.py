"""Session files: how long a 1,000-turn session takes to save and to load (issue: under 1 s).

Builds a session of 1,000 turns (a user message and a steered, sampled assistant reply of a
few hundred characters each, plus a command every 10 turns), saves it atomically and loads it
back, and prints the median of several runs. No model is needed.
Run with `.venv/bin/python bench/session_bench.py`.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from repl.session_file import (  # noqa: E402
    Event,
    ModelInfo,
    Session,
    VectorRef,
    load_session,
    save_session,
)

TURNS = 1000
ROUNDS = 7
SAMPLING = {"temperature": 0.7, "top_p": 0.95, "top_k": 40, "max_tokens": 512, "seed": 42}
STEERING = [{"name": "terse", "strength": 0.5, "layers": [9, 13]}]
REPLY = (
    'Here is a reply of a typical length.\nIt has a few lines, "quotes", unicode (✓ é 漢字)\n'
    "and a list:\n- one\n- two\n- three\n"
) * 3


def build(turns: int) -> Session:
    events: list[Event] = []
    for i in range(turns):
        if i % 10 == 0:
            events.append(Event("command", f"/steer terse {0.1 * (i % 7):.1f} --layers 9-13"))
        events.append(Event("user", f"Question number {i}: why is the sky blue?"))
        events.append(
            Event(
                "assistant",
                REPLY,
                tokens=120,
                finish_reason="stop",
                seed=42,
                steering=STEERING,
                sampling=SAMPLING,
                system="Be helpful.",
            )
        )
    return Session(
        model=ModelInfo("models/smol.gguf", "SmolLM2-135M-Instruct-Q4_1", "0" * 64),
        sampling=SAMPLING,
        system="Be helpful.",
        vectors=[VectorRef("terse", "bench.vectors/terse.gguf", "1" * 64)],
        steering=STEERING,
        events=events,
    )


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    session = build(TURNS)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.toml"
        saves = [timed(lambda: save_session(session, path)) for _ in range(ROUNDS)]
        loads = [timed(lambda: load_session(path)) for _ in range(ROUNDS)]
        assert load_session(path) == session
        size = path.stat().st_size
    print(
        f"session of {TURNS} turns ({len(session.events)} events, {size / 1024:.0f} KiB), "
        f"median of {ROUNDS}:"
    )
    print(f"  save (validate + atomic write + fsync): {statistics.median(saves) * 1000:7.1f} ms")
    print(f"  load (read + parse + validate)        : {statistics.median(loads) * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
