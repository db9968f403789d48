"""A vector steer saves steers llama.cpp's own CLI exactly as it steers steer.

The binary is llama.cpp's `llama-completion`, built from the very llama.cpp that
llama-cpp-python vendors (tests/tools/build_llama_cli.sh; `make test` builds it once).
"""

from __future__ import annotations

import subprocess

import pytest

from engine import ChatContext, Model, Sampling
from repl.core import Core
from tests.conftest import user
from vectors import bundled_path, compose, save_vector

END = " [end of text]\n"


def run_cli(binary: str, model: Model, prompt: str, n: int, extra: list[str]) -> str:
    cmd = [
        binary,
        "-m",
        str(model.path),
        "-p",
        prompt,
        "-no-cnv",
        "-n",
        str(n),
        "--temp",
        "0",
        "--top-k",
        "1",
        "-s",
        "0",
        "-t",
        "2",
        "-c",
        "2048",
        "-b",
        "512",
        "-ub",
        "512",
        "-fa",
        "off",
        "--no-warmup",
        "--no-display-prompt",
        "--no-escape",
        "-fit",
        "off",
        "--simple-io",
        *extra,
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout.removesuffix("\n\n")
    return text.removesuffix(END)


def control_vector_flags(path, strength: float, layers: tuple[int, int]) -> list[str]:
    """llama.cpp's flags for one saved vector at `strength` on blocks `layers`."""
    return [
        "--control-vector-scaled",
        f"{path}:{strength}",
        "--control-vector-layer-range",
        str(layers[0]),
        str(layers[1]),
    ]


def steer_reply(model: Model, question: str, n: int, buffer) -> str:
    ctx = ChatContext(model, n_ctx=2048)
    ctx.set_control(buffer)
    reply = ctx.generate(user(question), Sampling(temperature=0.0, max_tokens=n))
    ctx.close()
    return reply.text


@pytest.mark.parametrize("strength, layers", [(1.0, (3, 12)), (-0.75, (2, 9))])
def test_saved_vector_steers_llama_cpp_like_steer(
    tmp_path, model: Model, terse, llama_completion, strength, layers
) -> None:
    path = tmp_path / "terse.gguf"
    save_vector(terse, path, "llama")
    question = "Explain how a rainbow forms."
    prompt = model.render_chat(user(question))
    flags = control_vector_flags(path, strength, layers)
    theirs = run_cli(llama_completion, model, prompt, 60, flags)
    buffer = compose([(terse, strength, layers)], model.n_layer, model.n_embd)
    ours = steer_reply(model, question, 60, buffer)
    unsteered = steer_reply(model, question, 60, None)
    assert ours != unsteered  # the vector really does something here
    assert theirs == ours


def test_lora_adapter_steers_llama_cpp_like_project_mode(
    tmp_path, model: Model, llama_completion
) -> None:
    """`/vector lora` writes the file that makes llama-completion --lora-scaled FILE:S write
    what `/steer NAME S --mode project` writes (greedy, same prompt, same batching)."""
    core = Core(model, ChatContext(model, n_ctx=2048), Sampling(temperature=0.0, max_tokens=60))
    core.steering.load(str(bundled_path("terse")), "terse")
    path = tmp_path / "terse-lora.gguf"
    written = core.submit(f"/vector lora terse {path} --layers 9-13 --targets attn_output")
    assert not written.errors and path.is_file()
    question = "Explain how a rainbow forms. Respond tersely, in one short sentence."
    theirs = run_cli(
        llama_completion,
        model,
        model.render_chat(user(question)),
        60,
        ["--lora-scaled", f"{path}:1.5"],
    )
    unsteered = core.answer(user(question), None, core.sampling).text
    steer = core.submit("/steer terse 1.5 --mode project --layers 9-13 --targets attn_output")
    assert not steer.errors
    ours = core.answer(user(question), core.steering.control(), core.sampling).text
    core.ctx.close()
    assert ours != unsteered  # the adapter really does something here
    assert theirs == ours
