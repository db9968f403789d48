"""The chat context's KV cache grows on demand (engine/chat.py): it starts at 512 cells and
doubles whenever llama.cpp finds no room, up to the context window. A grown context must write
exactly what a context made at its full size writes: mid-prompt, mid-reply, steered in every
mode, and with a batch's sequences beside the chat's.

Greedy, short replies after long prompts (prompt evaluation is the cheap way to fill cells)."""

from __future__ import annotations

import pytest

from engine import ChatContext, Model, Sampling
from engine.batch import Batch
from engine.chat import FIRST_CELLS
from repl.steering import Steering
from tests.conftest import user
from vectors import bundled_path

SHORT = Sampling(temperature=0.0, max_tokens=40)
TWENTY = Sampling(temperature=0.0, max_tokens=20)
ANIMALS = ["fox", "heron", "badger", "otter", "lynx", "crow", "hare", "stoat"]
PLACES = ["river", "orchard", "quarry", "meadow", "bridge", "harbour", "forest"]


def notes(n: int, start: int = 0) -> str:
    """A long message: n numbered field notes (~14 tokens each)."""
    lines = [
        f"Note {i}: the {ANIMALS[i % len(ANIMALS)]} crossed the {PLACES[i % len(PLACES)]} "
        f"at {i % 12 + 1} o'clock."
        for i in range(start, start + n)
    ]
    return "Here are my field notes.\n" + "\n".join(lines)


# over 512 tokens: project mode's vector cancels the instruction at its end
LONG = user(notes(30) + "\nRetell these notes as a story. Respond tersely, in one short sentence.")


def conversation(ctx: ChatContext) -> list[list[int]]:
    """Two turns: a prompt that ends just short of the first 512 cells, so the reply crosses
    them one token at a time, then a second message that takes the cache past 1,024 in the
    middle of a prompt batch. Returns each reply's tokens."""
    first = user(notes(24) + "\nRetell these notes as a story.")
    assert 470 <= ctx.count_tokens(first) < FIRST_CELLS - 10
    a = ctx.generate(first, SHORT)
    second = [
        *first,
        {"role": "assistant", "content": a.text},
        {"role": "user", "content": notes(28, 24) + "\nAnd which crossed the bridge?"},
    ]
    assert ctx.count_tokens(second) > 2 * FIRST_CELLS
    b = ctx.generate(second, SHORT)
    return [a.token_ids, b.token_ids]


@pytest.fixture(scope="module")
def full(model: Model):
    ctx = ChatContext(model, n_ctx=2048, first_cells=2048)
    yield ctx
    ctx.close()


def test_a_grown_context_writes_what_a_full_one_writes(model: Model, full: ChatContext) -> None:
    full.reset()
    unsteered = conversation(full)
    grown = ChatContext(model, n_ctx=2048)
    assert (grown.n_cells, full.n_cells) == (FIRST_CELLS, 2048)
    got = conversation(grown)
    assert grown.n_cells == 2048  # 512 -> 1,024 mid-reply, -> 2,048 mid-prompt
    assert len(got[0]) == SHORT.max_tokens  # the first reply did write across 512 cells
    assert got == unsteered
    grown.close()


@pytest.fixture(scope="module")
def plain(full: ChatContext) -> tuple[list[int], list[float]]:
    """The unsteered reply to LONG and its scores."""
    full.reset()
    reply = full.generate(LONG, TWENTY).token_ids
    return reply, full.score(LONG, reply)


@pytest.mark.parametrize(("mode", "strength"), [("add", 0.5), ("prompt", 1.5), ("project", 1.0)])
def test_steering_stays_in_force_when_the_cache_grows(
    model: Model, full: ChatContext, plain, mode: str, strength: float
) -> None:
    """The new llama.cpp context gets the control vector (both phases of prompt mode) and the
    LoRA adapters of project mode again. Scoring LONG grows the cache after its first 512
    tokens; lost there, the rest would be read unsteered. Scores are compared to the bit, not
    greedy tokens, which a change late in the prompt may leave as they were."""
    reply, unsteered = plain
    assert FIRST_CELLS < full.count_tokens(LONG) < 2 * FIRST_CELLS
    steering = Steering(model)
    steering.load(str(bundled_path("terse")), "terse")
    steering.activate("terse", strength, (9, 13), mode)
    control = steering.control()
    grown = ChatContext(model, n_ctx=2048)
    scores = []
    try:
        for ctx in (full, grown):
            ctx.set_adapters(control.adapters)
            ctx.set_control(control.buffer, control.prompt)
            scores.append(ctx.score(LONG, reply))
    finally:
        full.set_adapters([])
        full.set_control(None)
        grown.close()
        steering.close()
    assert grown.n_cells == 2 * FIRST_CELLS
    assert scores[1] == scores[0]
    assert scores[0] != unsteered  # the steering does change them, so the check can fail


def test_a_batch_grows_the_cache_and_gives_it_back(model: Model, full: ChatContext) -> None:
    """Three long prompts side by side need more than 512 cells: all the batch's sequences
    move into the grown cache, and each reply is the one a full-size context writes. Closed,
    the batch leaves the cache empty, and it goes back to 512 cells for the chat."""
    prompts = [notes(12, 10 * k) + f"\nWhat crossed at {k + 2} o'clock?" for k in range(3)]
    grown = ChatContext(model, n_ctx=2048)
    written = []
    for ctx in (full, grown):
        with Batch(ctx) as batch:
            out = batch.write([ctx.prompt_tokens(user(p)) for p in prompts], 40)
            cells = ctx.n_cells
        written.append([r.token_ids for r in out])
    assert cells == 2 * FIRST_CELLS
    assert written[1] == written[0]
    assert min(len(w) for w in written[0]) >= 5
    assert (grown.n_cells, full.n_cells) == (FIRST_CELLS, 2048)
    question = user("Where do herons nest?")
    assert grown.generate(question, SHORT).token_ids == full.generate(question, SHORT).token_ids
    grown.close()


def test_growth_stops_at_the_context_window(model: Model) -> None:
    ctx = ChatContext(model, n_ctx=700)  # llama.cpp rounds it up to 768
    assert (ctx.n_ctx, ctx.n_cells) == (768, FIRST_CELLS)
    reply = ctx.generate(user(notes(24) + "\nRetell these notes as a story."), SHORT)
    assert ctx.n_cells == 768 and reply.tokens == SHORT.max_tokens
    long = user(notes(60))
    with pytest.raises(Exception, match="context full"):
        ctx.generate(long, SHORT)
    assert ctx.n_cells == 768
    ctx.close()


def test_the_first_size_is_never_under_a_batch(model: Model) -> None:
    """llama.cpp lowers n_batch to the cells it has; a smaller batch split than a full-size
    context's would change the numbers, so a context never starts below one batch."""
    ctx = ChatContext(model, n_ctx=2048, first_cells=128)
    assert (ctx.n_cells, ctx.n_batch) == (512, 512)
    ctx.close()
