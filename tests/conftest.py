"""Shared fixtures: the real default model, loaded once per test run."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

# Keep tests away from the user's own history and library.
os.environ.setdefault("STEER_DATA_DIR", tempfile.mkdtemp(prefix="steer-test-data-"))

from engine import ChatContext, Model, Sampling  # noqa: E402
from repl.core import Core  # noqa: E402
from repl.steering import Steering, instruction_pairs  # noqa: E402

GREEDY = Sampling(temperature=0.0, max_tokens=48)
STEER = [sys.executable, "-m", "repl.cli"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def model() -> Model:
    return Model()


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


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]
