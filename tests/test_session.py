"""Sessions on the real model: recording, autosave, resume, the /session commands, the lock."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from engine import ChatContext
from repl.core import Core
from repl.session import attach, detach
from repl.session_file import VectorRef, load_session, save_session
from repl.session_lock import SessionLock
from repl.steering import file_sha256
from tests.conftest import GREEDY, ROOT, STEER, TERSE, VERBOSE
from vectors import save_vector


@pytest.fixture
def recorded(model, tmp_path) -> Core:
    core = Core(model, ChatContext(model, n_ctx=1024), GREEDY)
    attach(core, tmp_path / "chat.toml")
    yield core
    detach(core)


def chat(core: Core, line: str):
    outcome = core.submit(line)
    if outcome.job is not None:
        return core.run_job(outcome)
    if outcome.generate:
        return core.generate()
    return outcome


def test_every_reply_and_state_change_is_autosaved(recorded: Core, tmp_path) -> None:
    path = tmp_path / "chat.toml"
    chat(recorded, "/set top_k 5")
    assert [e.text for e in load_session(path).events] == ["/set top_k 5"]
    chat(recorded, "Name three colors.")
    chat(recorded, "/help")  # changes nothing: not recorded
    events = load_session(path).events
    assert [e.kind for e in events] == ["command", "user", "assistant"]
    reply = events[-1]
    assert reply.text == recorded.turns[-1].text and reply.tokens == recorded.turns[-1].reply.tokens
    assert reply.steering == [] and reply.sampling["top_k"] == 5 and not reply.interrupted


def test_interrupted_reply_is_saved_as_interrupted(recorded: Core, tmp_path) -> None:
    cancel = threading.Event()
    recorded.submit("/set max_tokens 200")
    recorded.submit("Write a long story about a dragon.")
    seen = []

    def stop(text: str) -> None:
        seen.append(text)
        if len(seen) == 3:
            cancel.set()

    recorded.generate(stop, cancel)
    last = load_session(tmp_path / "chat.toml").events[-1]
    assert last.kind == "assistant" and last.interrupted and last.text == "".join(seen)


def test_a_vector_built_in_the_session_is_kept_beside_it(recorded: Core, tmp_path) -> None:
    chat(recorded, f'/contrast quick "{TERSE}" "{VERBOSE}" --n 3 --no-calibrate')
    chat(recorded, "/steer quick 0.5 --layers 9-13")
    session = load_session(tmp_path / "chat.toml")
    [ref] = session.vectors
    assert ref.name == "quick" and not Path(ref.path).is_absolute()
    assert (tmp_path / ref.path).is_file()
    assert session.steering == [{"name": "quick", "strength": 0.5, "layers": [9, 13]}]
    assert [e.text.split()[0] for e in session.events] == ["/contrast", "/steer"]


def test_a_second_steer_on_the_same_session_is_refused(recorded: Core, tmp_path) -> None:
    proc = subprocess.run(
        [*STEER, "chat", "--plain", "--session", str(tmp_path / "chat.toml")],
        input="Hello\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert "is open in another steer" in proc.stderr and proc.stderr.count("\n") == 1


def run_jsonl(session: Path, lines: str, env: dict) -> list[dict]:
    proc = subprocess.run(
        [
            *STEER,
            "chat",
            "--jsonl",
            "--temperature",
            "0",
            "--max-tokens",
            "40",
            "--session",
            str(session),
        ],
        input=lines,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_resume_gives_the_reply_it_would_have_given_without_the_restart(tmp_path) -> None:
    env = {**os.environ, "STEER_DATA_DIR": str(tmp_path / "data")}
    first = (
        f'/contrast t "{TERSE}" "{VERBOSE}" --n 3 --no-calibrate\nTell me about the moon.\n'
        "/steer t 0.5 --layers 9-13\n/system Be kind.\n"
    )
    last = "And the sun?\n"
    run_jsonl(tmp_path / "a.toml", first, env)
    resumed = [e for e in run_jsonl(tmp_path / "a.toml", last, env) if e["type"] == "reply"]
    straight = [
        e for e in run_jsonl(tmp_path / "b.toml", first + last, env) if e["type"] == "reply"
    ]
    assert resumed[-1]["text"] == straight[-1]["text"]
    assert resumed[-1]["steering"] == [{"name": "t", "strength": 0.5, "layers": [9, 13]}]
    assert [e.kind for e in load_session(tmp_path / "a.toml").events] == [
        "command",
        "user",
        "assistant",
        "command",
        "command",
        "user",
        "assistant",
    ]


def test_session_commands(recorded: Core, tmp_path) -> None:
    chat(recorded, f'/contrast quick "{TERSE}" "{VERBOSE}" --n 3 --no-calibrate')
    chat(recorded, "Name three colors.")
    shared = tmp_path / "share"
    shared.mkdir()
    out = chat(recorded, f"/session save {shared / 'copy'} --bundle")
    assert out.info == [f"session saved to {shared / 'copy.toml'}"]
    assert (shared / "copy.vectors" / "quick.gguf").is_file()
    session = load_session(shared / "copy.toml")
    assert session.vectors[0].path == "copy.vectors/quick.gguf"
    assert chat(recorded, "/session new").transcript_changed and recorded.turns == []
    chat(recorded, "Hi")
    listing = chat(recorded, "/session list").info[0]
    assert "1 replies  'Hi'" in listing and str(recorded.recorder.path) in listing
    loaded = chat(recorded, f"/session load {shared / 'copy.toml'}")
    assert not loaded.errors, loaded.errors
    assert [t.role for t in recorded.turns] == ["user", "assistant"]
    assert "quick" in recorded.steering.vectors
    assert "no session file" in chat(recorded, f"/session load {tmp_path / 'nope.toml'}").errors[0]


def test_a_refused_message_or_regen_is_not_left_in_the_session_file(model, tmp_path) -> None:
    core = Core(model, ChatContext(model, n_ctx=256), GREEDY)
    attach(core, tmp_path / "small.toml")
    try:
        chat(core, "/set max_tokens 8")
        chat(core, "Name a color.")
        assert "message not sent" in chat(core, "word " * 400).errors[0]
        chat(core, "/system " + "word " * 300)
        assert "last reply is kept" in chat(core, "/regen").errors[0]
    finally:
        detach(core)
    events = load_session(tmp_path / "small.toml").events
    assert [e.kind for e in events] == ["command", "user", "assistant", "command"]
    assert events[-1].text.startswith("/system")


def test_a_vector_file_cannot_name_what_a_bundle_copies(recorded: Core, tmp_path, terse) -> None:
    """A shared file whose steer.meta says saved_to = a private file: --bundle copies the
    vector the user loaded, never the file it names."""
    secret = tmp_path / "secret.txt"
    secret.write_text("private key")
    shared = copy.deepcopy(terse)
    shared.meta.update(saved_to=str(secret), source=str(secret))
    save_vector(shared, tmp_path / "shared.gguf", "llama")
    assert not chat(recorded, f"/vector load {tmp_path / 'shared.gguf'} gift").errors
    out = tmp_path / "out"
    out.mkdir()
    assert not chat(recorded, f"/session save {out / 'copy.toml'} --bundle").errors
    bundled = out / "copy.vectors" / "gift.gguf"
    assert bundled.read_bytes() == (tmp_path / "shared.gguf").read_bytes()
    assert "private key" not in (out / "copy.toml").read_text()


@pytest.mark.parametrize("name", ["../../evil", "a/b", ".hidden", "x" * 80])
def test_a_session_naming_a_vector_like_a_path_is_refused(tmp_path, name: str) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    shutil.copy(ROOT / "sample_sessions" / "terse_midway.vectors" / "terse.gguf", folder / "t.gguf")
    session = load_session(ROOT / "sample_sessions" / "plain_chat.toml")
    session.vectors = [VectorRef(name, "t.gguf", file_sha256(folder / "t.gguf"))]
    save_session(session, folder / "chat.toml")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    proc = subprocess.run(
        [*STEER, "chat", "--plain", "--session", str(folder / "chat.toml")],
        input="Hello\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: vector name") and proc.stderr.count("\n") == 1
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_session_new_that_cannot_make_its_file_keeps_the_current_one(
    recorded: Core, tmp_path, monkeypatch
) -> None:
    import repl.session

    chat(recorded, "Hi")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setattr(repl.session, "sessions_dir", lambda: blocker / "sessions")
    current = recorded.recorder
    out = chat(recorded, "/session new")
    assert len(out.errors) == 1 and out.errors[0].startswith("cannot start a new session (")
    assert "the current one goes on" in out.errors[0] and "internal error" not in out.errors[0]
    assert recorded.recorder is current and [t.role for t in recorded.turns] == [
        "user",
        "assistant",
    ]
    chat(recorded, "Thanks")  # still recorded where it was
    assert [e.kind for e in load_session(current.path).events][-2:] == ["user", "assistant"]
    assert len(load_session(current.path).events) == 4


def _state(core: Core) -> tuple:
    steering = core.steering
    turns = [(t.role, t.text) for t in core.turns]
    return turns, dict(steering.active), sorted(steering.vectors), core.sampling, core.system


def test_a_session_load_that_fails_keeps_the_current_session_recording(
    recorded: Core, tmp_path
) -> None:
    chat(recorded, f'/contrast quick "{TERSE}" "{VERBOSE}" --n 3 --no-calibrate')
    chat(recorded, "/steer quick 0.5 --layers 9-13")
    chat(recorded, "/system Be brief.")
    chat(recorded, "Name a color.")
    current, before = recorded.recorder, _state(recorded)
    garbage = tmp_path / "garbage.toml"
    garbage.write_text("not = [ toml")
    no_vectors = tmp_path / "elsewhere" / "terse_midway.toml"  # its vector file is missing
    no_vectors.parent.mkdir()
    shutil.copy(ROOT / "sample_sessions" / "terse_midway.toml", no_vectors)
    held = tmp_path / "held.toml"
    shutil.copy(ROOT / "sample_sessions" / "plain_chat.toml", held)
    with SessionLock(held):  # as if another steer had it open
        for bad in ["/etc/passwd", garbage, no_vectors, held, tmp_path / "missing.toml"]:
            out = chat(recorded, f"/session load {bad}")
            assert len(out.errors) == 1 and "\n" not in out.errors[0], out.errors
            assert out.errors[0].endswith("; the current session goes on"), out.errors
            assert recorded.recorder is current and current.lock.held
            assert _state(recorded) == before
    chat(recorded, "/set top_k 7")  # still recorded, where it was
    assert load_session(current.path).events[-1].text == "/set top_k 7"
    assert chat(recorded, f"/session load {current.path}").info == [
        f"{current.path} is the current session already"
    ]


def test_a_session_save_that_fails_keeps_recording_where_it_was(recorded: Core, tmp_path) -> None:
    chat(recorded, "Name a color.")
    current = recorded.recorder
    (tmp_path / "taken.toml").mkdir()  # saving there fails only when the file is written
    out = chat(recorded, f"/session save {tmp_path / 'taken'}")
    assert len(out.errors) == 1 and out.errors[0].startswith("could not save the session:")
    assert recorded.recorder is current and current.lock.held
    assert not (tmp_path / "taken.toml.lock").exists()
    chat(recorded, "/set top_k 8")
    assert load_session(current.path).events[-1].text == "/set top_k 8"
    same = chat(recorded, f"/session save {current.path}")  # its own file: just saved
    assert same.info == [f"session saved to {current.path}"] and recorded.recorder is current
