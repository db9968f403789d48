"""Shared fixtures: the real default model, loaded once per test run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import tomllib
from pathlib import Path

import pytest
from hypothesis import settings

# Keep tests away from the user's own history and library.
os.environ.setdefault("STEER_DATA_DIR", tempfile.mkdtemp(prefix="steer-test-data-"))

# Property tests draw the same examples on every run of `make test` (a suite that finds
# something new each run is not a test); `make fuzz` (STEER_FUZZ=1) draws new, random ones,
# ten times as many, and what it finds becomes an @example in the suite.
FUZZ = os.environ.get("STEER_FUZZ") == "1"
settings.register_profile("suite", derandomize=True, database=None, print_blob=True)
settings.register_profile("fuzz", derandomize=False, print_blob=True)
settings.load_profile("fuzz" if FUZZ else "suite")


def examples(n: int) -> int:
    """How many examples a property test draws: n in the suite, ten times n in `make fuzz`."""
    return n * 10 if FUZZ else n


from engine import ChatContext, Model, Sampling  # noqa: E402
from repl.core import Core  # noqa: E402
from repl.steering import Steering, instruction_pairs  # noqa: E402

GREEDY = Sampling(temperature=0.0, max_tokens=48)
STEER = [sys.executable, "-m", "repl.cli"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def model() -> Model:
    return Model()


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    """Gemma 3 270M (the second architecture), assembled into the user cache once."""
    from tests.tools.gemma_model import ensure

    return ensure()


@pytest.fixture(scope="session")
def gemma(gemma_path: Path) -> Model:
    """Gemma 3 270M with llama.cpp's `gemma` template (a base model: it has none), loaded
    once per test run."""
    from engine.templates import ChatTemplate

    return Model(gemma_path, ChatTemplate(name="gemma"))


@pytest.fixture(scope="session")
def llama_completion() -> str:
    """llama.cpp's own CLI, built from the vendored source (tests/tools/build_llama_cli.sh)."""
    import subprocess

    script = ROOT / "tests" / "tools" / "build_llama_cli.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture
def ctx(model: Model) -> ChatContext:
    context = ChatContext(model, n_ctx=2048)
    yield context
    context.close()


@pytest.fixture
def core(model: Model, ctx: ChatContext) -> Core:
    return Core(model, ctx, GREEDY)


TERSE = "Respond tersely, in one short sentence."
VERBOSE = "Respond in great detail, at length."


@pytest.fixture(scope="session")
def steering(model: Model) -> Steering:
    s = Steering(model)
    s.contrast(
        "terse",
        instruction_pairs(TERSE, VERBOSE, 24),
        method="mean",
        chat_format=True,
        last_k=1,
        provenance={"positive": TERSE, "negative": VERBOSE},
    )
    return s


@pytest.fixture(scope="session")
def terse(steering: Steering):
    return steering.vectors["terse"]


# Questions in neither the build prompts nor the calibration's (test_calibrate checks it), and
# the greedy 150-token replies the unsteered model gives them: the bar every held-out terse
# test measures against, made once.
UNSEEN = [
    "How do birds find their way when they migrate?",
    "What is the difference between a virus and a bacterium?",
    "How does a battery store energy?",
]
LONG = Sampling(temperature=0.0, max_tokens=150)


@pytest.fixture(scope="session")
def unseen_plain(model: Model) -> list:
    ctx = ChatContext(model, n_ctx=1024)
    out = [ctx.generate(user(q), LONG) for q in UNSEEN]
    ctx.close()
    return out


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


class Gate:
    """Holds a worker thread at a known point until the test lets it go, so the test acts
    (Esc, Ctrl+C) while the work provably runs, however fast the machine: a pause of N seconds
    races the work instead."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.opened = threading.Event()

    def hold(self) -> None:
        self.reached.set()
        assert self.opened.wait(120), "the test never opened the gate"

    def open(self) -> None:
        self.opened.set()

    def before(self, fn):
        """`fn`, made to wait at the gate before it starts."""

        def held(*args, **kwargs):
            self.hold()
            return fn(*args, **kwargs)

        return held


def record_and_replay(tmp_path: Path, lines: str, max_tokens: int):
    """Chat `lines` greedily in a recorded session (`steer chat --jsonl`), then replay it with
    --check. Returns the reply events, the session file's TOML and the replay's process."""
    env = {**os.environ, "STEER_DATA_DIR": str(tmp_path / "data")}
    session = tmp_path / "p.toml"
    proc = subprocess.run(
        [*STEER, "chat", "--jsonl", "--temperature", "0", "--max-tokens", str(max_tokens),
         "--session", str(session)],
        input=lines, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    replies = [e for e in map(json.loads, proc.stdout.splitlines()) if e["type"] == "reply"]
    check = subprocess.run(
        [*STEER, "replay", str(session), "--check"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )  # fmt: skip
    return replies, tomllib.loads(session.read_text("utf-8")), check


def steady_cursor(before=None):
    """A `run_before` for snap_compare: `before`, then the input's cursor stops blinking (it
    stays shown while the input has focus). A blinking cursor is caught on or off depending on
    how long the machine took to get there, and the app turns the blink back on whenever work
    ends, so this comes last."""

    async def run(pilot) -> None:
        if before is not None:
            await before(pilot)
        from repl.app import ChatInput  # the app's Textual widgets: only where a test needs them

        chat_input = pilot.app.query_one(ChatInput)
        chat_input.cursor_blink = False
        # Textual 8.2's TextArea keys its cached lines on the cursor only while it blinks, so a
        # line cached in the blink's hidden phase would be drawn again without the cursor;
        # notify_style_update clears that cache.
        chat_input.notify_style_update()
        await pilot.pause()

    return run
