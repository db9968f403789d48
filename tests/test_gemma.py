"""A second architecture: Gemma 3 270M (arch gemma3, 18 blocks x 640, Q4_K_M, a base model
with no chat template), through everything steer does with the default llama-arch model.

Gemma is loaded once per run (the `gemma` fixture) and its replies are kept to a few tokens:
~10 tokens/s on 2 busy cores with a 262k-token vocabulary.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine import ChatContext, Sampling
from engine.capture import Probe
from repl.core import Core
from tests.conftest import TERSE, VERBOSE, user
from tests.test_interop import control_vector_flags, run_cli
from tests.test_plain import steer
from vectors import compose, load_vector, save_vector

pytestmark = pytest.mark.gemma

QUESTION = "Explain how a rainbow forms."
SHORT = Sampling(temperature=0.0, max_tokens=12)


@pytest.fixture(scope="module")
def terse_gemma(gemma):
    """A terse-minus-verbose vector built on Gemma, as /contrast builds it (8 pairs)."""
    core = Core(gemma, ChatContext(gemma, n_ctx=1024), SHORT)
    out = core.submit(f'/contrast terse "{TERSE}" "{VERBOSE}" --n 8 --no-calibrate')
    out = core.run_job(out, None, None) if out.job is not None else out
    assert not out.errors, out.errors
    yield core.steering.vectors["terse"]
    core.ctx.close()


def test_the_model_is_what_the_file_says(gemma) -> None:
    """The model's shape as llama.cpp built it is the one its GGUF metadata states."""
    assert gemma.metadata("general.architecture") == "gemma3"
    assert gemma.n_layer == int(gemma.metadata("gemma3.block_count")) == 18
    assert gemma.n_embd == int(gemma.metadata("gemma3.embedding_length")) == 640
    assert gemma.metadata("tokenizer.chat_template") is None  # a base model: no template


def test_gemma_template_renders_gemma_turns(gemma) -> None:
    """llama.cpp's `gemma` format: a system prompt joins the first user turn, the assistant
    is 'model', and the prompt ends opening the model's turn; BOS is added once."""
    messages = [
        {"role": "system", "content": "Be brief."},
        *user("Hi"),
        {"role": "assistant", "content": "Hello!"},
        *user("Bye"),
    ]
    assert gemma.render_chat(messages) == (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    tokens = gemma.chat_tokens(user("Hi"))
    bos = gemma.tokenize("<bos>")[0]
    assert tokens[0] == bos and tokens.count(bos) == 1
    assert gemma.tokenize("<start_of_turn>")[0] in tokens  # a special token, not text


def test_read_scoped_steering_finds_the_question_in_gemma_turns(gemma) -> None:
    """The `gemma` format has no system turn: the system prompt opens the first user turn,
    and messages-mode steering starts after it, at the question's own text; content mode's
    closing tokens are Gemma's end of turn and model header."""
    ctx = ChatContext(gemma, n_ctx=512)
    try:
        messages = [{"role": "system", "content": "Be brief."}, *user("How is paper made?")]
        prompt = gemma.chat_tokens(messages)
        cut = ctx.system_end(messages)
        assert gemma.detokenize(prompt[:cut]).endswith("Be brief.\n\n")
        assert gemma.detokenize(prompt[cut:]).startswith("How is paper made?")
        bare = gemma.chat_tokens(user("How is paper made?"))
        assert gemma.detokenize(bare[ctx.system_end(user("x")) :]).startswith("How is paper")
        k = ctx.closing_tokens()
        assert prompt[-k:] == gemma.tokenize("<end_of_turn>\n<start_of_turn>model\n")
        assert gemma.detokenize(prompt[cut:-k]) == "How is paper made?"
    finally:
        ctx.close()


def test_chat_needs_the_flag_and_works_with_it(gemma_path) -> None:
    bare = steer("chat", "--plain", "--no-session", "--model", str(gemma_path), stdin="Hi\n")
    assert bare.returncode == 2 and bare.stdout == ""
    assert bare.stderr.count("\n") == 1 and "--chat-template" in bare.stderr, bare.stderr
    args = ["--model", str(gemma_path), "--chat-template", "gemma", "--temperature", "0"]
    proc = steer("chat", "--jsonl", "--no-session", *args, "--max-tokens", "6", stdin="Hi\n")
    assert proc.returncode == 0, proc.stderr
    (reply,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert reply["type"] == "reply" and reply["tokens"] == 6 and reply["text"].strip()


def test_capture_reads_every_block(gemma) -> None:
    """All 18 block outputs arrive, each prompt's own (batched capture = one at a time, up to
    the batch-split rounding: the bounds of test_steering's default-model check), and the
    same prompts give the same activations again."""
    probe = Probe(gemma)
    try:
        prompts = [gemma.chat_tokens(user(q)) for q in ("Hello there", QUESTION, "Name a fruit.")]
        batched = probe.capture(prompts)
        alone = probe.capture(prompts, batch=False)
        again = probe.capture(prompts)
    finally:
        probe.close()
    assert batched.shape == (3, 18, 640) and np.isfinite(batched).all()
    assert np.array_equal(batched, again)
    norms = np.linalg.norm(alone, axis=2) * np.linalg.norm(batched, axis=2)
    rel = np.linalg.norm(batched - alone, axis=2) / np.linalg.norm(alone, axis=2)
    cos = (batched * alone).sum(2) / norms
    assert rel.max() < 0.05 and cos.min() > 0.999, (rel.max(), cos.min())
    assert not np.allclose(batched[0, 17], batched[1, 17])  # prompts are told apart


def test_contrast_builds_a_gemma_vector(terse_gemma, gemma) -> None:
    assert terse_gemma.directions.shape == (18, 640)
    assert not terse_gemma.directions[0].any()  # block 0 can never be steered
    assert np.isfinite(terse_gemma.directions).all() and terse_gemma.directions[1:].any()
    first, last = terse_gemma.recommended_range
    assert 1 <= first <= last <= 17


def test_steer_changes_the_reply(terse_gemma, gemma) -> None:
    core = Core(gemma, ChatContext(gemma, n_ctx=1024), SHORT)
    try:
        core.steering.add(terse_gemma)
        plain = core.ctx.generate(user(QUESTION), SHORT).text
        assert not core.submit("/steer terse 2").errors
        core.ctx.set_control(core.steering.buffer())
        steered = core.ctx.generate(user(QUESTION), SHORT).text
    finally:
        core.ctx.close()
    assert steered != plain


@pytest.mark.parametrize("strength, layers", [(2.0, (1, 5)), (-1.5, (2, 8))])
def test_gemma_vector_steers_llama_cpp_like_steer(
    tmp_path, gemma, terse_gemma, llama_completion, strength, layers
) -> None:
    path = tmp_path / "terse.gguf"
    save_vector(terse_gemma, path, "gemma3")
    assert load_vector(path).directions.shape == (18, 640)
    flags = control_vector_flags(path, strength, layers)
    prompt = gemma.render_chat(user(QUESTION))
    theirs = run_cli(llama_completion, gemma, prompt, 12, flags)
    ctx = ChatContext(gemma, n_ctx=2048)
    try:
        unsteered = ctx.generate(user(QUESTION), SHORT).text
        ctx.set_control(compose([(terse_gemma, strength, layers)], 18, 640))
        ours = ctx.generate(user(QUESTION), SHORT).text
    finally:
        ctx.close()
    assert ours != unsteered  # the vector really does something here
    assert theirs == ours


def test_a_gemma_session_replays_exactly(tmp_path, gemma_path) -> None:
    """Chat, /contrast, /steer and the chat template, recorded; replay --check regenerates
    every reply identically and rebuilds the vector within tolerance."""
    session = tmp_path / "gemma.toml"
    lines = [
        "Name a fruit.",
        f'/contrast terse "{TERSE}" "{VERBOSE}" --n 4 --no-calibrate',
        "/steer terse 2",
        "Name a fruit.",
    ]
    args = ["--model", str(gemma_path), "--chat-template", "gemma", "--temperature", "0"]
    made = steer(
        "chat",
        "--plain",
        "--session",
        str(session),
        *args,
        "--max-tokens",
        "6",
        stdin="\n".join(lines) + "\n",
    )
    assert made.returncode == 0 and "error" not in made.stderr, made.stderr
    text = session.read_text()
    assert "format_version = 3" in text and '[chat_template]\nname = "gemma"' in text
    replayed = steer("replay", "--check", str(session))
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "replay: 2 identical, 0 different" in replayed.stdout
    assert "vector 'terse' rebuilt: matches the stored file" in replayed.stdout
