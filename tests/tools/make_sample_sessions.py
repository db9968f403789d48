"""Record the sample sessions anew: each is the same lines typed into `steer chat --plain`.

Run it when the greedy numerics change (another llama.cpp, other build flags), then check that
`make test` replays them: `.venv/bin/python tests/tools/make_sample_sessions.py`. What a
session records is whatever this build says; the test suite then holds every later build to it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
TERSE = (
    '/contrast terse "Respond tersely, in one short sentence." '
    '"Respond in great detail, at length."'
)
FORMAL = (
    '/contrast formal "Respond formally, like an official letter." '
    '"Respond casually, like a text to a friend."'
)

# name: (--max-tokens, the lines typed)
SESSIONS: dict[str, tuple[int, list[str]]] = {
    "plain_chat": (
        60,
        [
            "Name three colors.",
            "Which of them is the color of the sky?",
            "Write one sentence about that color.",
        ],
    ),
    "terse_midway": (
        80,
        [
            TERSE,
            "How do plants make food?",
            "/steer terse",
            "How do plants make food?",
            "Why is the ocean salty?",
        ],
    ),
    "composed_negated": (
        80,
        [
            TERSE,
            FORMAL,
            "/steer terse 0.6",
            "/steer formal -0.8",
            "How was your weekend?",
            "/set temperature 0.8",
            "/set seed 7",
            "Tell me about cats.",
        ],
    ),
}


def record(name: str, max_tokens: int, lines: list[str], data: Path) -> None:
    target = ROOT / "sample_sessions" / f"{name}.toml"
    target.unlink(missing_ok=True)
    shutil.rmtree(target.with_suffix(".vectors"), ignore_errors=True)
    proc = subprocess.run(
        [sys.executable, "-m", "repl.cli", "chat", "--plain", "--temperature", "0"]
        + ["--max-tokens", str(max_tokens), "--session", str(target)],
        input="".join(f"{line}\n" for line in lines),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "STEER_DATA_DIR": str(data)},
        check=False,
    )
    if proc.returncode != 0 or proc.stderr:
        sys.exit(f"{name}: steer failed ({proc.returncode}): {proc.stderr.strip()}")
    print(f"{name}: recorded {target.relative_to(ROOT)}")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="steer-samples-") as data:
        for name, (max_tokens, lines) in SESSIONS.items():
            record(name, max_tokens, lines, Path(data))


if __name__ == "__main__":
    main()
