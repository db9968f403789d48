"""The plain REPL and the CLI, as a user runs them: a real `steer` process with piped stdin."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import numpy as np

from engine.model import default_model_path
from tests.conftest import ROOT, STEER
from vectors import SteeringVector, save_vector


def steer(*args: str, stdin: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*STEER, *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
        env=env,
    )


def test_piped_message_and_set_temperature() -> None:
    proc = steer("chat", "--plain", stdin="/set temperature 0\nName three colors.\n/nonsense\n")
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert lines[0] == "temperature = 0.0"
    reply = "\n".join(lines[1:]).lower()
    assert sum(c in reply for c in ("red", "blue", "green", "yellow")) >= 2, proc.stdout
    assert proc.stderr == "error: unknown command /nonsense; /help lists commands\n"


def test_piped_stdin_without_plain_flag_uses_the_plain_repl() -> None:
    proc = steer("--temperature", "0", "--max-tokens", "8", stdin="Hello\n")
    assert proc.returncode == 0 and proc.stdout.strip() and proc.stderr == ""


def test_jsonl_events() -> None:
    stdin = "/set max_tokens 12\nWrite a poem about rain.\n/set top_p 7\n"
    proc = steer("chat", "--jsonl", "--temperature", "0", stdin=stdin)
    assert proc.returncode == 0 and proc.stderr == ""
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [e["type"] for e in events] == ["info", "reply", "error"]
    reply = events[1]
    assert reply["tokens"] == 12 and reply["finish_reason"] == "length"
    assert reply["text"] and reply["steering"] == [] and reply["interrupted"] is False
    assert reply["ttft_s"] > 0 and reply["tokens_per_s"] > 0
    assert events[2]["message"].startswith("top_p must be in (0, 1]")


def test_quit_stops_reading_input() -> None:
    proc = steer("chat", "--jsonl", stdin="/quit\nHello\n")
    assert proc.returncode == 0 and proc.stdout == ""


def test_missing_model_fails_before_reading_input(tmp_path) -> None:
    proc = steer("chat", "--plain", "--model", str(tmp_path / "missing.gguf"), stdin="Hello\n")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: model file not found:") and proc.stderr.count("\n") == 1


def test_bad_option_is_one_usage_error() -> None:
    proc = steer("chat", "--temperature", "hot")
    assert proc.returncode == 2
    assert "--temperature: temperature must be a number, not 'hot'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_explains_every_option() -> None:
    top = steer("--help")
    assert top.returncode == 0 and "chat" in top.stdout
    chat = steer("chat", "--help").stdout
    for option in (
        "--plain",
        "--jsonl",
        "--model",
        "--system",
        "--temperature",
        "--seed",
        "--max-tokens",
    ):
        assert option in chat


def test_system_option(tmp_path) -> None:
    proc = steer(
        "chat",
        "--plain",
        "--system",
        "Answer only with the word BANANA.",
        "--temperature",
        "0",
        "--max-tokens",
        "10",
        stdin="/system\n",
    )
    assert proc.stdout.strip() == "system prompt: 'Answer only with the word BANANA.'"


# ---- models that cannot be used: one line before any UI starts -----------------------------

HOSTILE = (
    "{{ cycler.__init__.__globals__.os.system('touch MARK') }}"
    "{{ ''.__class__.__mro__[1].__subclasses__() }}"
)


def model_variant(tmp_path: Path, name: str, *, key: bytes = b"", template: str = "") -> Path:
    """A copy of the default model with its chat template's key renamed or its text replaced
    (same length, padded with a Jinja comment), patched in place: no GGUF rewrite needed."""
    data = bytearray(default_model_path().read_bytes())
    at = data.find(b"tokenizer.chat_template")
    value = at + len(b"tokenizer.chat_template") + 4  # the key, then a u32 value type
    (length,) = struct.unpack("<Q", data[value : value + 8])
    if key:
        data[at : at + len(key)] = key
    if template:
        raw = template.encode()
        pad = length - len(raw) - len("{##}")
        assert pad >= 0, "template too long to patch in"
        data[value + 8 : value + 8 + length] = raw + b"{#" + b" " * pad + b"#}"
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_models_that_cannot_be_used_are_one_line_before_the_chat(tmp_path: Path) -> None:
    mark = tmp_path / "pwned"
    text_file = tmp_path / "notes.gguf"
    text_file.write_text("hello")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(default_model_path().read_bytes()[:3_000_000])
    vector = tmp_path / "vector.gguf"
    save_vector(SteeringVector("v", np.ones((30, 576), dtype=np.float32), {}), vector, "llama")
    cases = {
        tmp_path / "missing.gguf": "model file not found",
        tmp_path: "is a directory",
        text_file: "not a GGUF model file",
        truncated: "llama.cpp could not load the model",
        vector: "llama.cpp could not load the model",
        model_variant(tmp_path, "plain.gguf", key=b"tokenizer.chat_templatX"): "no chat template",
        model_variant(tmp_path, "hostile.gguf", template=HOSTILE.replace("MARK", str(mark))): (
            "chat template cannot be used (SecurityError"
        ),
        model_variant(tmp_path, "broken.gguf", template="{% for m in messages %}"): (
            "chat template cannot be used (TemplateSyntaxError"
        ),
    }
    for path, message in cases.items():
        proc = steer("chat", "--plain", "--no-session", "--model", str(path), stdin="Hello\n")
        assert proc.returncode == 2 and proc.stdout == "", (path, proc.stderr)
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert message in proc.stderr, proc.stderr
    assert not mark.exists()  # the hostile template ran nothing
