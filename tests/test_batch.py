"""Batched replies and scorings (engine/batch.py) on the real model: the machinery is exact
where it can be (one sequence gives what the chat gives), cleans up after itself, and leaves the
chat as it was."""

from __future__ import annotations

import threading

import llama_cpp
import numpy as np
import pytest

from engine import ChatContext, Model, Sampling
from engine.batch import Batch
from engine.chat import BATCH_SEQS, EngineError
from repl.steering import Active, Steering
from tests.conftest import user

QUESTIONS = [
    "Why do cats purr?",
    "How does a compass work?",
    "What makes bread rise?",
]
FORTY = Sampling(temperature=0.0, max_tokens=40)


@pytest.fixture
def ctx(model: Model):
    context = ChatContext(model, n_ctx=2048)
    yield context
    context.close()


def empty(ctx: ChatContext) -> bool:
    mem = llama_cpp.llama_get_memory(ctx.ptr)
    return all(llama_cpp.llama_memory_seq_pos_max(mem, s) == -1 for s in range(BATCH_SEQS))


def test_one_sequence_writes_what_the_chat_writes(model: Model, ctx: ChatContext) -> None:
    """Same cells, same batch split: the reply is the chat's to the token, so the batching
    machinery (prefix tree, positions, greedy pick) adds nothing of its own."""
    for question in QUESTIONS:
        ctx.reset()
        chat = ctx.generate(user(question), FORTY)
        ctx.reset()
        with Batch(ctx) as batch:
            (written,) = batch.write([ctx.prompt_tokens(user(question))], 40)
        assert written.token_ids == chat.token_ids and written.text == chat.text
        assert written.finish_reason == chat.finish_reason


def test_one_sequence_writes_what_the_chat_writes_under_steering(
    model: Model, ctx: ChatContext, steering: Steering
) -> None:
    buffer = steering.buffer({"terse": Active(0.5, (9, 13))})
    ctx.set_control(buffer)
    chat = ctx.generate(user(QUESTIONS[0]), FORTY)
    ctx.reset()
    with Batch(ctx) as batch:
        (written,) = batch.write([ctx.prompt_tokens(user(QUESTIONS[0]))], 40)
    assert written.token_ids == chat.token_ids
    ctx.set_control(None)
    plain = ctx.generate(user(QUESTIONS[0]), FORTY)
    assert plain.token_ids != chat.token_ids  # the steering was in force, not a no-op


def test_a_kept_prompt_scores_like_the_chat(model: Model, ctx: ChatContext) -> None:
    reply = ctx.generate(user(QUESTIONS[1]), FORTY)
    ctx.reset()
    chat = ctx.score(user(QUESTIONS[1]), reply.token_ids)
    ctx.reset()
    with Batch(ctx) as batch:
        (handle,) = batch.keep([ctx.prompt_tokens(user(QUESTIONS[1]))])
        (scores,) = batch.score([(handle, reply.token_ids)])
    assert np.array_equal(scores, np.asarray(chat))


def test_many_sequences_write_sensible_replies_and_leave_the_chat_as_it_was(
    model: Model, ctx: ChatContext
) -> None:
    before = ctx.generate(user(QUESTIONS[2]), FORTY)
    prompts = [ctx.prompt_tokens(user(q)) for q in QUESTIONS]
    done: list[int] = []
    with Batch(ctx) as batch:
        replies = batch.write(prompts + prompts[:1], 40, on_done=lambda: done.append(1))
        # the same prompt twice is written once and given to both
        assert replies[3] is replies[0] and len(done) == 3
        handles = batch.keep(prompts)
        scores = batch.score([(h, r.token_ids) for h, r in zip(handles, replies, strict=False)])
    assert empty(ctx) and ctx.n_cached == 0
    for question, reply, score in zip(QUESTIONS, replies, scores, strict=False):
        assert reply.tokens == 40 and reply.finish_reason == "length"
        assert len(score) == 40 and -1.5 < float(np.mean(score)) < 0, (question, reply.text)
    assert "purr" in replies[0].text.lower() and "bread" in replies[2].text.lower()
    assert ctx.generate(user(QUESTIONS[2]), FORTY).token_ids == before.token_ids


def test_kept_prompts_outlive_a_change_of_steering_but_score_only_under_their_own(
    model: Model, ctx: ChatContext, steering: Steering
) -> None:
    reply = ctx.generate(user(QUESTIONS[0]), FORTY)
    buffer = steering.buffer({"terse": Active(0.5, (9, 13))})
    with Batch(ctx) as batch:
        (handle,) = batch.keep([ctx.prompt_tokens(user(QUESTIONS[0]))])
        (first,) = batch.score([(handle, reply.token_ids)])
        ctx.set_control(buffer)
        batch.write([ctx.prompt_tokens(user(QUESTIONS[1]))], 8)
        with pytest.raises(EngineError, match="steering its prompts were read under"):
            batch.score([(handle, reply.token_ids)])
        ctx.set_control(None)
        (again,) = batch.score([(handle, reply.token_ids)])
    assert np.array_equal(first, again)
    assert empty(ctx)


def test_cancel_returns_nothing_and_frees_the_sequences(model: Model, ctx: ChatContext) -> None:
    cancel = threading.Event()
    prompts = [ctx.prompt_tokens(user(q)) for q in QUESTIONS]
    with Batch(ctx) as batch:
        cancel.set()
        assert batch.write(prompts, 40, cancel) is None
        free = len(batch._free)
        assert free == BATCH_SEQS - 1  # every sequence came back
        assert len(batch.write(prompts, 4)) == 3
    assert empty(ctx)
