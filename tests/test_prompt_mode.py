"""Prompt mode on the real default model: `/steer NAME S --mode prompt` adds the vector while
the model reads the conversation and not while it writes its reply (engine/chat.py); messages
mode does the same but leaves the system prompt unsteered.

Greedy, short generations, with the ready-made terse vector: what is tested is where the vector
is added, not what it does to a topic (that is bench/efficacy_bench.py's scoreboard).
"""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np
import pytest

from engine import ChatContext, Model, Sampling
from engine.batch import BatchFull
from repl.core import Core
from tests.conftest import record_and_replay, user
from vectors import bundled_path

QUESTION = "How is paper made?"  # no build or calibration prompt holds it
SHORT = Sampling(temperature=0.0, max_tokens=32)
STRENGTH = 1.5


@pytest.fixture
def core(model: Model) -> Core:
    ctx = ChatContext(model, n_ctx=2048)
    chat = Core(model, ctx, SHORT)
    chat.steering.load(str(bundled_path("terse")), "terse")
    yield chat
    ctx.close()


def test_prompt_mode_steers_what_is_read_and_not_what_is_written(core: Core) -> None:
    """The first token comes from the last prompt token, read under the vector in both modes,
    so it is the same; after it, add mode keeps steering and prompt mode does not."""
    steering, messages = core.steering, user(QUESTION)
    plain = core.answer(messages, None, SHORT)
    steering.activate("terse", STRENGTH, (9, 13), "prompt")
    read = core.answer(messages, steering.control(), SHORT)
    steering.activate("terse", STRENGTH, (9, 13), "add")
    added = core.answer(messages, steering.control(), SHORT)
    assert read.token_ids[0] == added.token_ids[0]
    assert len({plain.text, read.text, added.text}) == 3
    # the reply's tokens were not kept: the next turn reads them again under the vector
    steering.activate("terse", STRENGTH, (9, 13), "prompt")
    again = core.answer(messages, steering.control(), SHORT)
    assert again.token_ids == read.token_ids
    assert core.ctx.n_cached == len(core.model.chat_tokens(messages))


def test_content_mode_says_what_it_reads_and_points_to_dry(core: Core) -> None:
    out = core.submit("/steer terse 1 --mode content")
    assert not out.errors
    said = out.info[0]
    assert "while reading the messages' text (not the system prompt or the assistant's" in said
    assert out.info[-1].startswith("tip: a topic's replies can loop, most at plain greedy; /set")
    assert "thins a tone's words, less with /set dry_allowed 3" in out.info[-1]
    core.submit("/set dry 0.8")
    assert not any("tip:" in line for line in core.submit("/steer terse 1 --mode content").info)
    assert not any("tip:" in line for line in core.submit("/steer terse 1 --mode messages").info)


def test_prompt_mode_in_a_conversation(core: Core) -> None:
    """Two turns: each reply is recorded in prompt mode, the cache holds only what was read
    (the second prompt, first reply included), and the steered reply is not the plain one."""
    out = core.submit("/steer terse 1.5 --mode prompt")
    assert not out.errors and "while reading the prompt" in out.info[0]
    for text in (QUESTION, "And how is it recycled?"):
        assert core.submit(text).generate
        assert not core.generate().errors
    assert core.turns[-1].steering == [
        {"name": "terse", "strength": 1.5, "layers": [9, 13], "mode": "prompt"}
    ]
    assert "terse +1.5 @9-13 prompt" in core.status()["steering"]
    steered = [t.reply.text for t in core.turns if t.role == "assistant"]
    cached = core.ctx.n_cached
    assert cached == len(core.model.chat_tokens(core.messages()[:-1]))
    core.steering.active.clear()
    assert core.answer(core.messages()[:1], None, SHORT).text != steered[0]


def test_a_vector_that_recommends_prompt_mode_gets_it_from_plain_steer(core: Core) -> None:
    vec = core.steering.vectors["terse"]
    vec.meta["recommended_mode"] = "prompt"
    assert not core.submit("/steer terse").errors
    assert core.steering.active["terse"].mode == "prompt"
    assert not core.submit("/steer terse 0.4 --mode add").errors
    assert core.steering.active["terse"].mode == "add"
    out = core.submit("/steer terse 1 --mode prompt --targets ffn_down")
    assert len(out.errors) == 1 and out.errors[0].startswith("--targets goes with --mode project")


def test_prompt_steering_is_recorded_and_replays(tmp_path) -> None:
    lines = f"/vector load terse\n/steer terse 1.5 --mode prompt\n{QUESTION}\nWhy?\n"
    replies, doc, check = record_and_replay(tmp_path, lines, 24)
    assert [r["steering"][0]["mode"] for r in replies] == ["prompt", "prompt"]
    assert doc["steering"][0]["mode"] == "prompt" and "targets" not in doc["steering"][0]
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.splitlines()[-1] == "replay: 2 identical, 0 different"


def _by_hand(model: Model, pieces: list[tuple[list[int], np.ndarray | None]], n: int) -> list[int]:
    """Read-time steering written out in llama.cpp's own calls: each piece of the prompt read
    under its control vector (None: none), then `n` greedy tokens with none."""
    ctx = ChatContext(model, n_ctx=2048)
    n_embd, n_layer = model.n_embd, model.n_layer

    def cvec(data: np.ndarray | None) -> None:
        ptr = None if data is None else data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        size = 0 if data is None else data.size
        rc = llama_cpp.llama_set_adapter_cvec(ctx.ptr, ptr, size, n_embd, 1, n_layer - 1)
        assert rc == 0

    def decode(tokens: list[int]) -> None:
        arr = (llama_cpp.llama_token * len(tokens))(*tokens)
        assert ctx.decode(llama_cpp.llama_batch_get_one(arr, len(tokens))) == 0

    out: list[int] = []
    try:
        for tokens, buf in pieces:
            cvec(None if buf is None else np.ascontiguousarray(buf, dtype=np.float32).ravel())
            decode(tokens)
        cvec(None)
        while len(out) < n:
            logits = np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(ctx.ptr, -1), (model.n_vocab,)
            )
            token = int(np.argmax(logits))
            if model.is_eog(token):
                break
            out.append(token)
            decode([token])
    finally:
        ctx.close()
    return out


def test_messages_mode_reads_the_system_prompt_plain(core: Core) -> None:
    """`--mode messages` is prompt mode with the system prompt read unsteered: its reply is
    the one llama.cpp writes when only the tokens from the question on are read under the
    vector, and not the prompt-mode reply (which steers the system prompt too)."""
    steering, messages = core.steering, user(QUESTION)
    prompt = core.model.chat_tokens(messages)
    cut = core.ctx.system_end(messages)
    assert 0 < cut < len(prompt)
    assert core.model.detokenize(prompt[cut:]).startswith(QUESTION)  # the question's own text
    assert core.ctx.system_end(user("Why?")) == cut  # one system prompt, one cut
    steering.activate("terse", STRENGTH, (9, 13), "messages")
    control = steering.control()
    assert control.buffer is None and control.prompt is None and control.messages is not None
    messaged = core.answer(messages, control, SHORT)
    pieces = [(prompt[:cut], None), (prompt[cut:], control.messages)]
    assert messaged.token_ids == _by_hand(core.model, pieces, 32)
    steering.activate("terse", STRENGTH, (9, 13), "prompt")
    prompted = core.answer(messages, steering.control(), SHORT)
    assert prompted.token_ids != messaged.token_ids
    # a calibration's batch writes the same reply; prompts under two system prompts cannot
    # share one batch (each would need its own cut), so the caller goes one at a time
    steering.activate("terse", STRENGTH, (9, 13), "messages")
    with core.batch() as batch:
        assert batch.answer([messages], steering.control(), 32)[0].token_ids == messaged.token_ids
        # several prompts: their shared system prompt is a step of its own, read unsteered
        assert all(r.tokens for r in batch.answer([messages, user("Why?")], control, 8))
        other = [{"role": "system", "content": "You are terse."}, *messages]
        with pytest.raises(BatchFull):
            batch.answer([messages, other], steering.control(), 4)


def test_content_mode_reads_the_closing_tokens_plain(core: Core) -> None:
    """`--mode content` is messages mode with the prompt's closing tokens (the end of the
    question and the assistant's header) read unsteered too: its reply is the one llama.cpp
    writes that way, the batch writes the same, and after a turn the cache keeps the
    conversation up to the question's text, so the next turn reads the closing tokens inside
    the conversation, under the vector, as a fresh read would."""
    steering, messages = core.steering, user(QUESTION)
    prompt = core.model.chat_tokens(messages)
    cut, k = core.ctx.system_end(messages), core.ctx.closing_tokens()
    assert prompt[-k:] == core.model.tokenize("<|im_end|>\n<|im_start|>assistant\n")
    assert core.model.detokenize(prompt[cut:-k]) == QUESTION
    steering.activate("terse", STRENGTH, (9, 13), "content")
    control = steering.control()
    assert control.messages is None and control.content is not None
    content = core.answer(messages, control, SHORT)
    pieces = [(prompt[:cut], None), (prompt[cut:-k], control.content), (prompt[-k:], None)]
    assert content.token_ids == _by_hand(core.model, pieces, 32)
    assert core.ctx.n_cached == len(prompt) - k
    steering.activate("terse", STRENGTH, (9, 13), "messages")
    assert core.answer(messages, steering.control(), SHORT).token_ids != content.token_ids
    steering.activate("terse", STRENGTH, (9, 13), "content")
    with core.batch() as batch:
        assert batch.answer([messages], control, 32)[0].token_ids == content.token_ids
        assert all(r.tokens for r in batch.answer([messages, user("Why?")], control, 8))
    # the next turn reads the first one's closing tokens under the vector: the cache the first
    # turn left is a prefix of the second's prompt, and it ends where the second's closing begin
    core.answer(messages, control, SHORT)
    second = [*messages, {"role": "assistant", "content": content.text}, *user("Why?")]
    longer = core.model.chat_tokens(second)
    assert longer[: len(prompt) - k] == prompt[:-k] and longer[len(prompt) - k] == prompt[-k]
    assert (
        core.answer(second, control, SHORT).prompt_tokens_evaluated == len(longer) - len(prompt) + k
    )
    assert core.ctx.n_cached == len(longer) - k


def test_read_scoped_steering_is_recorded_and_replays(tmp_path) -> None:
    """A turn in messages mode, then one in content mode, recorded and replayed exactly."""
    lines = (
        f"/vector load terse\n/steer terse 1.5 --mode messages\n{QUESTION}\n"
        "/steer terse 1.5 --mode content\nWhy?\n"
    )
    replies, doc, check = record_and_replay(tmp_path, lines, 24)
    assert [r["steering"][0]["mode"] for r in replies] == ["messages", "content"]
    assert doc["steering"][0]["mode"] == "content"
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.splitlines()[-1] == "replay: 2 identical, 0 different"
