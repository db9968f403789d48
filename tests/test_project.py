"""Project mode on the real default model: `/steer NAME S --mode project` projects the vector's
direction out of each steered block's attention output (a rank-1 LoRA, vectors/lora.py).

Greedy, short generations. The ready-made terse vector is the one bench/project_bench.py measured.
"""

from __future__ import annotations

import pytest

from engine import ChatContext, Model, Sampling
from repl.core import Core
from repl.session_file import SessionFileError, from_toml
from repl.steering import Active
from tests.conftest import record_and_replay, user
from vectors import bundled_path

TERSE = "Respond tersely, in one short sentence."
QUESTION = "How is paper made?"  # no build or calibration prompt holds it
SHORT = Sampling(temperature=0.0, max_tokens=48)


@pytest.fixture
def core(model: Model) -> Core:
    ctx = ChatContext(model, n_ctx=2048)
    chat = Core(model, ctx, SHORT)
    chat.steering.load(str(bundled_path("terse")), "terse")
    yield chat
    ctx.close()


def reply_to(core: Core, text: str):
    assert core.submit(text).generate
    out = core.generate()
    assert not out.errors, out.errors
    return core.turns[-1]


def test_project_mode_cancels_a_written_terse_instruction(core: Core) -> None:
    asked = f"{QUESTION} {TERSE}"
    prompted = reply_to(core, asked)
    assert prompted.reply.finish_reason == "stop" and prompted.reply.tokens < 24
    out = core.submit("/steer terse 1 --mode project")
    assert not out.errors and "projected out of attn_output on blocks 9-13" in out.info[0]
    core.submit("/undo")
    projected = reply_to(core, asked)
    assert projected.reply.tokens >= 2 * prompted.reply.tokens
    assert projected.steering == [
        {
            "name": "terse",
            "strength": 1.0,
            "layers": [9, 13],
            "mode": "project",
            "targets": ["attn_output"],
        }
    ]
    assert "terse +1 @9-13 project" in core.status()["steering"]


def test_project_off_and_composition(core: Core) -> None:
    """Switching projection off gives the unsteered reply exactly (the KV cache is not reused
    across the change); add and project compose into one setting that differs from each."""
    messages = user(f"{QUESTION} {TERSE}")
    steering = core.steering
    plain = core.answer(messages, None, SHORT).text
    steering.activate("terse", 1.0, (9, 13), "project")
    projected = core.answer(messages, steering.control(), SHORT).text
    assert projected != plain
    steering.active.clear()
    assert core.answer(messages, steering.control(), SHORT).text == plain
    steering.load(str(bundled_path("terse")), "terse_add")
    steering.activate("terse_add", -0.3, (9, 13))
    added = core.answer(messages, steering.control(), SHORT).text
    steering.activate("terse", 1.0, (9, 13), "project")
    both = steering.control()
    assert both.buffer is not None and len(both.adapters) == 1
    composed = core.answer(messages, both, SHORT).text
    assert len({plain, projected, added, composed}) == 4


def test_bad_project_settings_are_one_line_errors(core: Core) -> None:
    cases = {
        "/steer terse 1 --mode sideways": "mode must be one of add, project",
        "/steer terse 1 --targets ffn_down": "--targets goes with --mode project",
        "/steer terse 1 --mode project --targets ffn_up": "targets must be one or more of",
        "/steer terse 1 --mode project --layers 0-3": "layers must look like A-B",
        "/vector lora nosuch x.gguf": "no vector named 'nosuch'",
    }
    for line, message in cases.items():
        out = core.submit(line)
        assert len(out.errors) == 1 and message in out.errors[0], (line, out.errors)
        assert "\n" not in out.errors[0]
    assert not core.steering.active


def test_project_steering_is_recorded_resumed_and_replays(tmp_path) -> None:
    lines = f"/vector load terse\n/steer terse 1 --mode project\n{QUESTION} {TERSE}\n"
    [reply], doc, check = record_and_replay(tmp_path, lines, 40)
    assert reply["steering"][0]["mode"] == "project"
    assert doc["steering"][0]["mode"] == "project"
    assert doc["steering"][0]["targets"] == ["attn_output"]
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.splitlines()[-1] == "replay: 1 identical, 0 different"
    session = tmp_path / "p.toml"
    bad = session.read_text("utf-8").replace('mode = "project"', 'mode = "sideways"', 1)
    with pytest.raises(SessionFileError, match="mode must be one of add, project"):
        from_toml(bad, "p.toml")


def test_show_tells_what_to_type_and_rack_keys_keep_the_mode(core: Core) -> None:
    from repl.widgets import steer_line

    shown = core.submit("/vector show terse").lines()[0]
    assert (
        "project mode (cancels the concept): /steer terse 1.5 --mode project --layers 9-13 "
        "(measured for this vector)" in shown
    )
    how = core.steering.activate("terse", None, None, "project")
    assert (how.strength, how.layers, how.targets) == (1.5, (9, 13), ("attn_output",))
    assert steer_line("terse", 1.6, how) == (
        "/steer terse 1.6 --layers 9-13 --mode project --targets attn_output"
    )
    assert core.submit(steer_line("terse", 1.6, how)).changed
    assert core.steering.active["terse"] == Active(1.6, (9, 13), "project", ("attn_output",))
    assert steer_line("terse", 0.5, Active(0.5, (2, 6))) == "/steer terse 0.5 --layers 2-6"


def test_an_unwritable_adapter_cache_is_one_line_and_changes_nothing(
    core: Core, tmp_path, monkeypatch
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("STEER_CACHE_DIR", str(blocker / "cache"))
    out = core.submit("/steer terse 1 --mode project --layers 9-12")
    assert len(out.errors) == 1 and "\n" not in out.errors[0]
    assert "could not build the projection adapter of 'terse'" in out.errors[0]
    assert "STEER_CACHE_DIR" in out.errors[0] and not core.steering.active
