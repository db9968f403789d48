"""Session files: round trips, atomic saves, every kind of bad file, vector path safety, locks,
listing. No model needed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repl import session_file as sf
from repl.session_file import (
    Event,
    ModelInfo,
    Session,
    SessionFileError,
    VectorRef,
    from_toml,
    load_session,
    save_session,
    to_toml,
)
from repl.session_list import recent_sessions
from repl.session_lock import SessionLock
from repl.session_paths import resolve_vector_path, vectors_dir_for
from tests.conftest import examples

ROOT = Path(__file__).resolve().parent.parent
SAMPLING = {"temperature": 0.0, "top_p": 0.95, "top_k": 40, "max_tokens": 512}
STEER = [{"name": "terse", "strength": 0.5, "layers": [9, 13]}]


def reply(text: str = "Red, green and blue.", **kw) -> Event:
    fields = dict(tokens=7, finish_reason="stop", steering=[], sampling=SAMPLING, system="")
    return Event("assistant", text, **(fields | kw))


def make_session(**kw) -> Session:
    fields = dict(
        created="2026-11-29T10:00:00+00:00",
        updated="2026-11-29T10:05:00+00:00",
        model=ModelInfo("models/smol.gguf", "SmolLM2", "ab" * 32),
        sampling={**SAMPLING, "seed": 42},
        system="Be brief.",
        vectors=[VectorRef("terse", "chat.vectors/terse.gguf", "cd" * 32)],
        steering=STEER,
        events=[
            Event("user", "Name three colors."),
            reply(),
            Event("command", "/steer terse 0.5 --layers 9-13"),
            Event("user", "Tell me a story."),
            reply(
                "Once upon",
                tokens=2,
                finish_reason="interrupted",
                seed=7,
                steering=STEER,
                sampling={**SAMPLING, "temperature": 0.7, "seed": 7},
                system="Be brief.",
            ),
        ],
    )
    return Session(**(fields | kw))


def error_of(fn, *args) -> str:
    with pytest.raises(SessionFileError) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message, message  # one line, always
    return message


# ---- round trips -----------------------------------------------------------------------------


def test_save_and_load_give_back_the_same_session(tmp_path: Path) -> None:
    session = make_session()
    path = tmp_path / "chat.toml"
    save_session(session, path)
    loaded = load_session(path)
    assert loaded == session
    assert loaded.events[4].interrupted and not loaded.events[1].interrupted
    assert loaded.assistant_turns == 2


def test_the_file_is_readable_toml_with_the_documented_layout(tmp_path: Path) -> None:
    text = to_toml(make_session(system="line one\nline two"))
    doc = tomllib.loads(text)
    assert doc["format_version"] == 2
    assert [e["kind"] for e in doc["events"]] == [
        "user",
        "assistant",
        "command",
        "user",
        "assistant",
    ]
    assert doc["events"][4]["interrupted"] is True
    assert doc["events"][4]["steering"] == STEER
    assert "seed" not in doc["events"][1]  # greedy reply: no seed, and TOML has no null
    assert 'system = """\nline one\nline two"""' in text  # multi-line text stays readable


def test_a_random_seed_is_an_absent_key() -> None:
    session = make_session(sampling={**SAMPLING, "seed": None})
    text = to_toml(session)
    assert "seed" not in tomllib.loads(text)["sampling"]
    assert "seed" not in from_toml(text, "x.toml").sampling


def test_integer_numbers_load_as_floats_where_floats_are_meant() -> None:
    session = make_session(steering=[{"name": "terse", "strength": -1, "layers": (9, 13)}])
    loaded = from_toml(to_toml(session), "x.toml")
    assert loaded.steering == [{"name": "terse", "strength": -1.0, "layers": [9, 13]}]
    assert isinstance(loaded.steering[0]["strength"], float)
    assert isinstance(loaded.sampling["temperature"], float)


# plain random text, and text built from the pieces TOML writers tend to get wrong
tricky = st.sampled_from(["\r\n", "\n", "\r", '"', '"""', "'''", "\\", "\t", "\x00", "\x7f", " "])
texts = st.one_of(
    st.text(max_size=200), st.lists(tricky | st.text(max_size=3), max_size=12).map("".join)
)


@settings(max_examples=examples(300), deadline=None)
@given(
    user=texts,
    answer=texts,
    system=texts,
    command=texts,
    temperature=st.floats(min_value=0, max_value=5, allow_nan=False),
    top_p=st.floats(min_value=1e-9, max_value=1.0),
    top_k=st.integers(min_value=0, max_value=2**40),
    max_tokens=st.integers(min_value=1, max_value=2**31),
    seed=st.one_of(st.none(), st.integers(min_value=0, max_value=2**63 - 1)),
    strength=st.floats(allow_nan=False, allow_infinity=False),
    tokens=st.integers(min_value=0, max_value=2**63 - 1),
)
def test_any_text_and_numbers_round_trip_exactly(
    user, answer, system, command, temperature, top_p, top_k, max_tokens, seed, strength, tokens
) -> None:
    sampling = {
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "max_tokens": max_tokens,
    }
    if seed is not None:
        sampling["seed"] = seed
    steering = [{"name": "terse", "strength": strength, "layers": [1, 30]}]
    session = make_session(
        system=system,
        sampling=sampling,
        steering=steering,
        events=[
            Event("user", user),
            Event("command", "/" + command),
            reply(
                answer,
                tokens=tokens,
                seed=seed,
                steering=steering,
                sampling=sampling,
                system=system,
            ),
        ],
    )
    loaded = from_toml(to_toml(session), "x.toml")
    assert loaded == session
    assert loaded.events[0].text == user  # == on floats/strs: bit-exact, not approximately


@pytest.mark.parametrize(
    "text",
    [
        "a\r\nb",
        "\r",
        "tab\there ",
        "nul\x00 del\x7f",
        '"""',
        "'''",
        "\\",
        "✓ 漢字 \U0001f600",
        "trailing  \n  ",
        "\n",
        "\u2028\u2029",
        "\ufeffbom",
    ],
)
def test_awkward_text_survives_a_save(tmp_path: Path, text: str) -> None:
    session = make_session(events=[Event("user", text), reply(text)])
    save_session(session, tmp_path / "s.toml")
    assert load_session(tmp_path / "s.toml").events[0].text == text


def test_a_thousand_event_session_round_trips(tmp_path: Path) -> None:
    events = []
    for i in range(500):
        events += [
            Event("user", f"question {i}\nsecond line"),
            reply(f"answer {i}", tokens=i, seed=i, steering=STEER),
        ]
    session = make_session(events=events)
    save_session(session, tmp_path / "big.toml")
    loaded = load_session(tmp_path / "big.toml")
    assert len(loaded.events) == 1000
    assert loaded == session
    assert loaded.events[999].seed == 499 and loaded.events[998].text.startswith("question 499")


def test_the_documented_example_is_exactly_what_steer_writes() -> None:
    doc = (ROOT / "docs" / "session-format.md").read_text(encoding="utf-8")
    example = re.search(r"```toml\n(.*?)```", doc, re.S).group(1)
    session = from_toml(example, "docs/session-format.md")
    assert to_toml(session) == example
    assert {e.kind for e in session.events} == {"user", "assistant", "command"}
    assert any(e.interrupted for e in session.events)


# ---- unknown keys ----------------------------------------------------------------------------


def test_unknown_keys_survive_load_and_save(tmp_path: Path) -> None:
    text = to_toml(make_session())
    text = 'future_flag = true\nnotes = "keep me"\n' + text
    text += textwrap.dedent("""
        [plugin]
        colour = "blue"
        nested = { deep = [1, 2] }
        """)
    doc = tomllib.loads(text)
    doc["model"]["quant"] = "Q4_1"
    doc["sampling"]["min_p"] = 0.05
    doc["events"][0]["lang"] = "en"
    doc["steering"][0]["note"] = "from replay"
    path = tmp_path / "chat.toml"
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")

    session = load_session(path)
    assert session.extra == {
        "future_flag": True,
        "notes": "keep me",
        "plugin": {"colour": "blue", "nested": {"deep": [1, 2]}},
    }
    assert session.model.extra == {"quant": "Q4_1"}
    assert session.events[0].extra == {"lang": "en"}
    save_session(session, path)
    again = tomllib.loads(path.read_text(encoding="utf-8"))
    for key in ("future_flag", "notes", "plugin"):
        assert again[key] == doc[key]
    assert again["model"]["quant"] == "Q4_1"
    assert again["sampling"]["min_p"] == 0.05
    assert again["events"][0]["lang"] == "en"
    assert again["steering"][0]["note"] == "from replay"


def test_extra_keys_may_not_shadow_known_ones() -> None:
    with pytest.raises(ValueError, match="events"):
        to_toml(make_session(extra={"events": []}))


# ---- atomic saves ----------------------------------------------------------------------------


def test_a_failed_rename_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "chat.toml"
    save_session(make_session(system="old"), path)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sf.os, "replace", broken_replace)
    message = error_of(save_session, make_session(system="new"), path)
    assert "No space left on device" in message and str(path) in message
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.toml"]


def test_a_crash_while_writing_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "chat.toml"
    save_session(make_session(system="old"), path)
    before = path.read_bytes()

    def half_then_die(tmp: Path, data: bytes) -> None:
        tmp.write_bytes(data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(sf, "_write_bytes", half_then_die)
    with pytest.raises(KeyboardInterrupt):
        save_session(make_session(system="new"), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.toml"]


def test_save_fsyncs_the_file_and_its_folder(tmp_path, monkeypatch) -> None:
    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append("dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file")
        real(fd)

    monkeypatch.setattr(sf.os, "fsync", spy)
    save_session(make_session(), tmp_path / "chat.toml")
    assert synced == ["file", "dir"]


def test_an_invalid_session_is_never_written(tmp_path: Path) -> None:
    path = tmp_path / "chat.toml"
    bad = make_session(events=[Event("assistant", "no tokens", finish_reason="stop")])
    message = error_of(save_session, bad, path)
    assert "tokens is missing" in message and "nothing was written" in message
    assert list(tmp_path.iterdir()) == []


def test_save_keeps_the_permissions_of_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "chat.toml"
    save_session(make_session(), path)
    assert path.stat().st_mode & 0o777 == 0o644
    path.chmod(0o600)
    save_session(make_session(system="again"), path)
    assert path.stat().st_mode & 0o777 == 0o600


def test_save_into_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    message = error_of(save_session, make_session(), tmp_path / "nope" / "chat.toml")
    assert "cannot save session" in message and "nope" in message


_KILL_WRITER = """
import sys
from repl.session_file import Event, ModelInfo, Session, save_session
model = ModelInfo("m.gguf", "m", "0" * 64)
sampling = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "max_tokens": 8}
sessions = [Session(model=model, sampling=sampling, created="2026-01-01T00:00:00+00:00",
                    updated="2026-01-01T00:00:00+00:00",
                    events=[Event("user", tag * 200_000)]) for tag in "ab"]
print("ready", flush=True)
i = 0
while True:
    save_session(sessions[i % 2], sys.argv[1])
    i += 1
"""


@pytest.mark.parametrize("delay", [0.05, 0.13, 0.31])
def test_a_kill_at_any_moment_leaves_a_whole_file(tmp_path: Path, delay: float) -> None:
    path = tmp_path / "chat.toml"
    save_session(make_session(), path)
    child = subprocess.Popen(
        [sys.executable, "-c", _KILL_WRITER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline() == "ready\n"
    try:
        child.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL  # killed mid-loop, not dead of an error
    text = load_session(path).first_user_message()
    assert text in ("a" * 200_000, "b" * 200_000, "Name three colors.")


# ---- bad files -------------------------------------------------------------------------------


def write(tmp_path: Path, content: str | bytes, name: str = "bad.toml") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_a_missing_file(tmp_path: Path) -> None:
    message = error_of(load_session, tmp_path / "gone.toml")
    assert "gone.toml does not exist" in message


def test_a_directory(tmp_path: Path) -> None:
    assert "is a directory" in error_of(load_session, tmp_path)


def test_malformed_toml_names_the_file_and_the_line(tmp_path: Path) -> None:
    lines = to_toml(make_session()).splitlines()
    lines[6] = "name = = broken"
    path = write(tmp_path, "\n".join(lines))
    message = error_of(load_session, path)
    assert message.startswith(f"{path}, line 7, column ")
    assert "not valid TOML" in message


def test_malformed_toml_at_the_end_of_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'format_version = 1\nsystem = "unterminated')
    message = error_of(load_session, path)
    assert message.startswith(f"{path}, line 2, column ")


def test_malformed_toml_line_numbers_from_the_exception() -> None:
    # Python 3.14's TOMLDecodeError carries lineno/colno; older ones only the message text.
    exc = tomllib.TOMLDecodeError("Invalid value")
    exc.lineno, exc.colno, exc.msg = 41, 3, "Invalid value"
    assert sf._syntax_message("x.toml", "", exc).startswith("x.toml, line 41, column 3:")


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, b'format_version = 1\n\nsystem = "caf\xe9"\n')
    message = error_of(load_session, path)
    assert message.startswith(f"{path}, line 3: not UTF-8")


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, b"\xef\xbb\xbf" + to_toml(make_session()).encode())
    assert load_session(path) == make_session()


@pytest.mark.parametrize("content", ["", "   \n\n", "# only a comment\n"])
def test_an_empty_session(tmp_path: Path, content: str) -> None:
    path = write(tmp_path, content)
    assert f"{path}: empty session file" in error_of(load_session, path)


def test_a_file_over_50_mb_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.toml"
    with path.open("wb") as f:
        f.truncate(sf.MAX_BYTES + 1)  # sparse: costs no disk
    message = error_of(load_session, path)
    assert "huge.toml is 50.0 MB" in message and "up to 50 MB" in message


def one_line_error(path: Path) -> str:
    message = error_of(load_session, path)
    assert message.startswith(str(path)) and "\n" not in message
    return message


def test_every_truncation_of_a_real_session_is_a_session_or_one_error(tmp_path: Path) -> None:
    """A file cut short (a copy interrupted, a disk that filled up under another tool)."""
    full = to_toml(make_session(events=[Event("user", "Hi"), reply(), Event("command", "/undo")]))
    data = full.encode()
    path = tmp_path / "cut.toml"
    loaded = 0
    for end in range(len(data)):
        path.write_bytes(data[:end])
        try:
            load_session(path)
            loaded += 1
        except SessionFileError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(path))
    assert loaded < len(data) // 2  # most cuts are caught, not silently half-loaded


@settings(
    max_examples=examples(200),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.binary(min_size=1, max_size=2000))
def test_binary_garbage_is_one_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "garbage.toml"
    path.write_bytes(data)
    try:
        load_session(path)
    except SessionFileError as exc:
        assert "\n" not in str(exc)


def test_random_bytes_from_the_os_are_one_error(tmp_path: Path) -> None:
    path = tmp_path / "random.toml"
    path.write_bytes(os.urandom(1 << 20))
    assert "not UTF-8 text" in one_line_error(path)


@pytest.mark.parametrize(
    "doc",
    [
        "a = " + "[" * 3000 + "]" * 3000,
        "a = " + "{b = " * 3000 + "1" + "}" * 3000,
        "a" + ".b" * 100_000 + " = 1",  # tomllib alone would need gigabytes for this one
        "[a" + '."b"' * 200 + "]\nx = 1",
        "x = { " + "b." * 70 + "c = 1 }",
    ],
)
def test_deeply_nested_tables_are_refused_quickly(tmp_path: Path, doc: str) -> None:
    path = write(tmp_path, doc)
    start = time.monotonic()
    assert "nested more than 64 deep" in one_line_error(path)
    assert time.monotonic() - start < 2.0


def test_nesting_a_real_session_never_has_is_fine_in_extra_keys(tmp_path: Path) -> None:
    doc = tomllib.loads(to_toml(make_session()))
    doc["x"] = {"a": {"b": {"c": [[[1]]]}}}
    path = write(tmp_path, tomli_w.dumps(doc))
    assert load_session(path).extra == {"x": {"a": {"b": {"c": [[[1]]]}}}}


def test_text_that_merely_looks_deep_is_not_refused(tmp_path: Path) -> None:
    looks = "a." * 200 + " = and [" + "x." * 100 + "]\n" + ("word." * 70 + "= 1\n")
    session = make_session(events=[Event("user", looks), reply("." * 5000 + "=")])
    save_session(session, tmp_path / "ok.toml")
    assert load_session(tmp_path / "ok.toml").events[0].text == looks


def test_huge_strings_and_a_10_mb_session_load_and_save(tmp_path: Path) -> None:
    big = "é" * 3_000_000 + "\n<|im_end|>\x00\x1b"  # 6 MB of UTF-8 in one message
    events = [Event("user", big), reply("ok " * 1_000_000)]
    session = make_session(events=events, system="s" * 100_000)
    path = tmp_path / "big.toml"
    start = time.monotonic()
    save_session(session, path)
    again = load_session(path)
    assert path.stat().st_size > 9_000_000
    assert again.events[0].text == big and again.system == session.system
    assert time.monotonic() - start < 20


def test_a_10_mb_file_of_nonsense_is_one_error(tmp_path: Path) -> None:
    path = write(tmp_path, "format_version = 1\n" + "x" * 10_000_000)
    assert "not valid TOML" in one_line_error(path)
    path = write(tmp_path, "[[events]]\n" * 1_000_000)  # 11 MB of valid TOML
    assert "format_version is missing" in one_line_error(path)


def test_a_newer_format_version(tmp_path: Path) -> None:
    path = write(
        tmp_path, to_toml(make_session()).replace("format_version = 2", "format_version = 4")
    )
    message = error_of(load_session, path)
    assert "made by a newer steer: version 4, this steer reads 3" in message
    assert str(path) in message


@pytest.mark.parametrize(
    "template", [{"name": "gemma"}, {"jinja": "{{ messages }}\n", "file": "t.jinja"}]
)
def test_a_chosen_chat_template_round_trips_as_version_3(tmp_path: Path, template) -> None:
    """Only a session with a chosen template is version 3 (a steer reading 2 would replay it
    with the model's own template); every other session stays version 2."""
    session = make_session(chat_template=template)
    text = to_toml(session)
    assert tomllib.loads(text)["format_version"] == 3
    assert tomllib.loads(text)["chat_template"] == template
    path = tmp_path / "t.toml"
    save_session(session, path)
    loaded = load_session(path)
    assert loaded.chat_template == template and loaded.version == 3
    assert tomllib.loads(to_toml(make_session()))["format_version"] == 2
    assert load_session(write(tmp_path, to_toml(make_session()), "v2.toml")).chat_template is None


@pytest.mark.parametrize(
    "table, expected",
    [
        ('name = "gemma"\njinja = "x"', "needs exactly one of name"),
        ('file = "t.jinja"', "needs exactly one of name"),
        ("name = 3", "chat_template.name must be a string, got integer"),
        ('jinja = ["x"]', "chat_template.jinja must be a string, got array"),
    ],
)
def test_a_bad_chat_template_is_one_line(tmp_path: Path, table: str, expected: str) -> None:
    text = to_toml(make_session()) + f"\n[chat_template]\n{table}\n"
    assert expected in one_line_error(write(tmp_path, text))


def test_a_hub_model_reference_round_trips(tmp_path: Path) -> None:
    model = ModelInfo(None, "smol", "ab" * 32, file="smol-Q4_K_M.gguf", hf="hf:o/r:Q4_K_M")
    path = tmp_path / "hf.toml"
    save_session(make_session(model=model), path)
    assert load_session(path).model == model
    assert 'hf = "hf:o/r:Q4_K_M"' in path.read_text()


def test_the_version_is_checked_before_anything_else() -> None:
    # a future format may change every other field: the version message must win
    message = error_of(from_toml, "format_version = 7\nevents = 3\n", "f.toml")
    assert "newer steer: version 7" in message


def mutate(change) -> str:
    doc = tomllib.loads(to_toml(make_session()))
    change(doc)
    return tomli_w.dumps(doc)


def _set(path: str, value):
    def change(doc):
        *parents, last = re.findall(r"\w+", path)
        node = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is _DELETE:
            del node[int(last) if last.isdigit() else last]
        else:
            node[int(last) if last.isdigit() else last] = value

    return change


_DELETE = object()

BAD_FIELDS = [
    ("events.1.tokens", "12", "events[1].tokens must be an integer, got string ('12')"),
    ("events.1.tokens", True, "events[1].tokens must be an integer, got boolean"),
    ("events.1.tokens", -1, "events[1].tokens must be at least 0"),
    ("events.1.finish_reason", "done", "events[1].finish_reason must be one of stop, length"),
    ("events.1.interrupted", True, "events[1].interrupted = true contradicts finish_reason"),
    ("events.1.sampling.top_k", 1.5, "events[1].sampling.top_k must be an integer, got float"),
    ("events.1.steering", "terse", "events[1].steering must be an array of tables"),
    ("events.4.steering.0.layers", [9], "events[4].steering[0].layers must be an array of two"),
    ("events.4.steering.0.layers", [13, 9], "first <= last"),
    ("events.4.steering.0.strength", "strong", "events[4].steering[0].strength must be a number"),
    ("events.0.kind", "robot", "events[0].kind must be one of user, assistant, command"),
    ("events.0.text", ["hi"], "events[0].text must be a string, got array"),
    ("events.0.tokens", 3, "events[0].tokens is only for assistant events"),
    ("events.2.text", "steer terse", "events[2].text of a command must start with '/'"),
    ("events.3", "hello", "events[3] must be a table, got string"),
    ("events", {"kind": "user"}, "events must be an array of tables, got table"),
    ("sampling.temperature", "hot", "sampling.temperature must be a number, got string"),
    ("sampling.temperature", -0.5, "sampling.temperature must be at least 0"),
    ("sampling.temperature", float("nan"), "sampling.temperature must be a finite number"),
    ("sampling.top_p", 0.0, "sampling.top_p must be in (0, 1]"),
    ("sampling.max_tokens", 0, "sampling.max_tokens must be at least 1"),
    ("sampling.seed", "42", "sampling.seed must be an integer, got string"),
    ("sampling.dry", -0.5, "sampling.dry must be at least 0"),
    ("sampling.dry_allowed", 0, "sampling.dry_allowed must be at least 1"),
    ("events.1.sampling.dry", "on", "events[1].sampling.dry must be a number, got string"),
    ("model", "smol.gguf", "model must be a table, got string"),
    ("model.sha256", "abc", "model.sha256 must be a sha256 digest"),
    ("model.path", "", "model.path must be a non-empty one-line string"),
    ("vectors.0.path", 5, "vectors[0].path must be a string, got integer"),
    ("vectors.0.sha256", 5, "vectors[0].sha256 must be a string, got integer"),
    ("steering.0.name", "verbose", "steering[0] steers with 'verbose', which is not among"),
    ("system", False, "system must be a string, got boolean"),
    ("created", "yesterday", "created must be an ISO 8601 time"),
    ("updated", 20261129, "updated must be a string, got integer"),
    ("format_version", "1", "format_version must be an integer, got string"),
    ("format_version", 0, "format_version must be 1 to 3, got 0"),
]


@pytest.mark.parametrize(("where", "value", "expected"), BAD_FIELDS)
def test_a_wrong_field_is_named(tmp_path: Path, where: str, value, expected: str) -> None:
    path = write(tmp_path, mutate(_set(where, value)))
    message = error_of(load_session, path)
    assert message.startswith(f"{path}: ")
    assert expected in message


MISSING = [
    "format_version",
    "created",
    "updated",
    "model",
    "sampling",
    "model.sha256",
    "sampling.top_p",
    "vectors.0.path",
    "steering.0.layers",
    "events.0.kind",
    "events.0.text",
    "events.1.tokens",
    "events.1.finish_reason",
    "events.1.sampling",
    "events.1.steering",
    "events.1.system",
]


@pytest.mark.parametrize("where", MISSING)
def test_a_missing_required_field_is_named(tmp_path: Path, where: str) -> None:
    path = write(tmp_path, mutate(_set(where, _DELETE)))
    name = re.sub(r"\.(\d+)", r"[\1]", where)
    assert f"{path}: {name} is missing; add it" in error_of(load_session, path)


def test_optional_fields_may_be_left_out() -> None:
    doc = tomllib.loads(to_toml(make_session(steering=[])))
    for key in ("system", "vectors", "steering", "events"):
        del doc[key]
    del doc["sampling"]["seed"]
    session = from_toml(tomli_w.dumps(doc), "x.toml")
    assert (session.system, session.vectors, session.steering, session.events) == ("", [], [], [])


def test_a_toml_date_time_is_accepted_for_the_timestamps() -> None:
    text = to_toml(make_session()).replace(
        'created = "2026-11-29T10:00:00+00:00"', "created = 2026-11-29T10:00:00Z"
    )
    assert from_toml(text, "x.toml").created == "2026-11-29T10:00:00+00:00"


def test_duplicate_names_are_refused() -> None:
    two = [VectorRef("terse", "a.gguf", "cd" * 32), VectorRef("terse", "b.gguf", "cd" * 32)]
    assert "used by two vectors" in error_of(from_toml, to_toml(make_session(vectors=two)), "x")
    twice = STEER + STEER
    assert "steered twice" in error_of(from_toml, to_toml(make_session(steering=twice)), "x")


toml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node, prefix=()):
    yield prefix
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, child in items:
        yield from _paths(child, (*prefix, key))


_EXAMPLE_DOC = tomllib.loads(to_toml(make_session()))
_EXAMPLE_PATHS = list(_paths(_EXAMPLE_DOC))[1:]


def _strip_none(value):
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_none(v) for v in value if v is not None]
    return value


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(where=st.sampled_from(_EXAMPLE_PATHS), value=toml_values)
def test_any_damaged_value_gives_a_session_error_or_a_session(where, value) -> None:
    import copy

    doc = copy.deepcopy(_EXAMPLE_DOC)
    node = doc
    for part in where[:-1]:
        node = node[part]
    node[where[-1]] = _strip_none(value) if value is not None else "null"
    try:
        session = from_toml(tomli_w.dumps(doc), "fuzz.toml")
    except SessionFileError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("fuzz.toml")
    else:
        assert from_toml(to_toml(session), "again.toml") == session


# ---- vector paths ----------------------------------------------------------------------------


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(session file, user library, a folder outside both), with a vector file in each."""
    session_dir, library, outside = (tmp_path / d for d in ("sessions", "library", "outside"))
    for d in (session_dir / "chat.vectors", library, outside):
        d.mkdir(parents=True)
    (session_dir / "chat.vectors" / "terse.gguf").write_bytes(b"GGUF")
    (session_dir / "beside.gguf").write_bytes(b"GGUF")
    (library / "kind.gguf").write_bytes(b"GGUF")
    (outside / "secret.gguf").write_bytes(b"GGUF")
    return session_dir / "chat.toml", library, outside


def ref(path: str) -> VectorRef:
    return VectorRef("v", path, "0" * 64)


def test_relative_paths_inside_the_session_folder_resolve(folders) -> None:
    session, library, _ = folders
    got = resolve_vector_path(session, ref("chat.vectors/terse.gguf"), library)
    assert got == (session.parent / "chat.vectors" / "terse.gguf").resolve()
    assert resolve_vector_path(session, ref("beside.gguf"), library).name == "beside.gguf"
    # a '..' that comes back inside is still inside
    back = resolve_vector_path(session, ref("../sessions/beside.gguf"), library)
    assert back.name == "beside.gguf"


def test_a_relative_session_path_resolves_against_its_own_folder(folders, monkeypatch) -> None:
    session, library, _ = folders
    monkeypatch.chdir(session.parent.parent)
    got = resolve_vector_path(Path("sessions/chat.toml"), ref("beside.gguf"), library)
    assert got == (session.parent / "beside.gguf").resolve()


def test_absolute_paths_inside_the_library_resolve(folders) -> None:
    session, library, _ = folders
    got = resolve_vector_path(session, ref(str(library / "kind.gguf")), library)
    assert got == (library / "kind.gguf").resolve()


@pytest.mark.parametrize(
    "path",
    [
        "../outside/secret.gguf",
        "../../../../../../etc/passwd",
        "chat.vectors/../../outside/secret.gguf",
    ],
)
def test_dot_dot_out_of_the_folder_is_refused(folders, path: str) -> None:
    session, library, _ = folders
    message = error_of(resolve_vector_path, session, ref(path), library)
    assert "points outside the session's folder and the user library: refused" in message


def test_absolute_paths_outside_the_library_are_refused(folders) -> None:
    session, library, outside = folders
    for path in (outside / "secret.gguf", session.parent / "beside.gguf", Path("/etc/passwd")):
        message = error_of(resolve_vector_path, session, ref(str(path)), library)
        assert "points outside the user library: refused" in message


def test_a_symlink_inside_the_folder_pointing_outside_is_refused(folders) -> None:
    session, library, outside = folders
    (session.parent / "link.gguf").symlink_to(outside / "secret.gguf")
    (session.parent / "linkdir").symlink_to(outside)
    for path in ("link.gguf", "linkdir/secret.gguf"):
        assert "refused" in error_of(resolve_vector_path, session, ref(path), library)


def test_a_symlink_into_the_library_is_allowed(folders) -> None:
    session, library, _ = folders
    (session.parent / "lib.gguf").symlink_to(library / "kind.gguf")
    got = resolve_vector_path(session, ref("lib.gguf"), library)
    assert got == (library / "kind.gguf").resolve()


def test_no_library_means_only_the_session_folder(folders) -> None:
    session, library, _ = folders
    assert resolve_vector_path(session, ref("beside.gguf"), None).name == "beside.gguf"
    assert "refused" in error_of(
        resolve_vector_path, session, ref(str(library / "kind.gguf")), None
    )


def test_a_missing_vector_file_is_named(folders) -> None:
    session, library, _ = folders
    message = error_of(
        resolve_vector_path, session, VectorRef("gone", "gone.gguf", "0" * 64), library
    )
    assert "vector 'gone'" in message and "gone.gguf" in message and "missing" in message


def test_a_symlink_loop_is_an_error_not_a_crash(folders) -> None:
    session, library, _ = folders
    (session.parent / "loop.gguf").symlink_to(session.parent / "loop.gguf")
    assert "vector 'v'" in error_of(resolve_vector_path, session, ref("loop.gguf"), library)


def test_the_vectors_folder_sits_beside_the_session() -> None:
    assert vectors_dir_for(Path("/s/chat.toml")) == Path("/s/chat.vectors")
    assert vectors_dir_for("/s/my.chat.toml") == Path("/s/my.chat.vectors")
    assert vectors_dir_for("/s/chat") == Path("/s/chat.vectors")
    assert vectors_dir_for("/s/x.vectors") != Path("/s/x.vectors")


# ---- locks -----------------------------------------------------------------------------------


def test_a_second_lock_on_the_same_session_fails_with_the_pid(tmp_path: Path) -> None:
    path = tmp_path / "chat.toml"
    first, second = SessionLock(path), SessionLock(path)
    first.acquire()
    assert (tmp_path / "chat.toml.lock").read_text().strip() == str(os.getpid())
    message = error_of(second.acquire)
    assert message == (
        f"session {path} is open in another steer (pid {os.getpid()}); "
        "close it there or use another file"
    )
    assert not second.held
    first.release()
    assert not (tmp_path / "chat.toml.lock").exists()
    with second:
        assert second.held
        assert "is open in another steer" in error_of(SessionLock(path).acquire)
    assert not second.held


def test_acquire_twice_on_one_lock_is_harmless(tmp_path: Path) -> None:
    lock = SessionLock(tmp_path / "chat.toml")
    lock.acquire()
    lock.acquire()
    lock.release()
    lock.release()
    SessionLock(tmp_path / "chat.toml").acquire()


def test_a_lock_file_removed_while_waiting_is_not_trusted(tmp_path: Path, monkeypatch) -> None:
    # B opens the lock file, then its owner A releases (removing the file) before B locks the
    # now nameless file. B must notice and lock the file that is there now, or a third steer
    # could lock a fresh file and two would hold the session at once.
    path = tmp_path / "chat.toml"
    a, b = SessionLock(path), SessionLock(path)
    a.acquire()
    real_open = SessionLock._open

    def open_then_owner_leaves(self: SessionLock) -> int:
        fd = real_open(self)
        if a.held:
            a.release()
        return fd

    monkeypatch.setattr(SessionLock, "_open", open_then_owner_leaves)
    b.acquire()
    assert (tmp_path / "chat.toml.lock").read_text().strip() == str(os.getpid())
    assert "is open in another steer" in error_of(SessionLock(path).acquire)
    b.release()


def test_locks_on_different_sessions_are_independent(tmp_path: Path) -> None:
    with SessionLock(tmp_path / "a.toml"), SessionLock(tmp_path / "b.toml"):
        pass


_HOLD_LOCK = """
import sys, time
from repl.session_lock import SessionLock
SessionLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_a_lock_left_by_a_killed_process_is_free(tmp_path: Path) -> None:
    path = tmp_path / "chat.toml"
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline() == "locked\n"
        assert f"(pid {child.pid})" in error_of(SessionLock(path).acquire)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    assert (tmp_path / "chat.toml.lock").exists()  # left behind, but no longer held
    with SessionLock(path) as lock:
        assert lock.held
        assert (tmp_path / "chat.toml.lock").read_text().strip() == str(os.getpid())


def test_a_lock_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    # (a read-only folder would do, but CI runs as root, which ignores folder permissions)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    assert "cannot create lock file" in error_of(SessionLock(blocker / "c.toml").acquire)


# ---- listing ---------------------------------------------------------------------------------


def test_recent_sessions_newest_first_skipping_garbage(tmp_path: Path) -> None:
    long_question = "Please explain,\n in detail, " + "why " * 30 + "the sky is blue."
    save_session(make_session(updated="2026-11-01T09:00:00+00:00"), tmp_path / "old.toml")
    save_session(
        make_session(
            updated="2026-11-29T11:00:00+01:00",
            events=[
                Event("command", "/system hi"),
                Event("user", long_question),
                reply(),
                Event("user", "more"),
                reply(),
                reply(),
            ],
        ),
        tmp_path / "new.toml",
    )
    save_session(make_session(updated="2026-11-29T10:30:00Z", events=[]), tmp_path / "newest.toml")
    write(tmp_path, "not = [ toml", "broken.toml")
    write(tmp_path, b"\xff\xfe\x00", "binary.toml")
    write(tmp_path, "", "empty.toml")
    write(
        tmp_path,
        to_toml(make_session()).replace("format_version = 2", "format_version = 9"),
        "future.toml",
    )
    (tmp_path / "folder.toml").mkdir()
    save_session(make_session(), tmp_path / "ignored.txt")

    rows = recent_sessions(tmp_path)
    # 11:00+01:00 is 10:00 UTC: earlier than 10:30Z although it sorts later as text
    assert [p.name for p, *_ in rows] == ["newest.toml", "new.toml", "old.toml"]
    path, updated, first, turns = rows[1]
    assert path == tmp_path / "new.toml" and updated == "2026-11-29T11:00:00+01:00"
    assert len(first) <= 60 and first.startswith("Please explain, in detail, why")
    assert first.endswith("…") and "\n" not in first
    assert turns == 3
    assert rows[0][2:] == ("", 0)
    assert rows[2][2:] == ("Name three colors.", 2)
    assert [p.name for p, *_ in recent_sessions(tmp_path, limit=2)] == ["newest.toml", "new.toml"]


def test_recent_sessions_of_a_missing_folder_is_empty(tmp_path: Path) -> None:
    assert recent_sessions(tmp_path / "nothing") == []


# ---- purity ----------------------------------------------------------------------------------


def test_the_module_imports_no_engine_or_front_end() -> None:
    code = (
        "import sys, repl.session_file, repl.session_list, repl.session_lock, repl.session_paths\n"
        "heavy = {'textual', 'prompt_toolkit', 'llama_cpp', 'engine', 'numpy', 'gguf'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'vectors'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.splitlines() == ["[]", "['vectors', 'vectors.atomic']"]


def test_dry_is_kept_and_absent_means_off() -> None:
    """A DRY setting survives a save and a load (so a replay decodes as the turn did); a
    session without one, like every session from before DRY, loads with it off."""
    from engine.chat import Sampling
    from repl.session import sampling_dict, sampling_from

    assert "dry" not in sampling_dict(Sampling(temperature=0.0))
    on = Sampling(temperature=0.0, dry=0.8)
    session = make_session(sampling=sampling_dict(on))
    loaded = from_toml(to_toml(session), "x.toml")
    assert sampling_from(loaded.sampling) == on
    assert sampling_from(make_session().sampling).dry == 0.0


def test_dry_allowed_length_is_kept_and_absent_means_llama_cpps() -> None:
    """/set dry_allowed survives a save and a load; llama.cpp's 2 is written as nothing, so a
    session that never changed it is the same file as before the setting existed."""
    from engine.chat import DRY_ALLOWED, Sampling
    from repl.session import sampling_dict, sampling_from

    assert "dry_allowed" not in sampling_dict(Sampling(temperature=0.0, dry=0.8))
    three = Sampling(temperature=0.0, dry=0.8, dry_allowed=3)
    assert sampling_dict(three)["dry_allowed"] == 3
    loaded = from_toml(to_toml(make_session(sampling=sampling_dict(three))), "x.toml")
    assert sampling_from(loaded.sampling) == three
    assert sampling_from(make_session().sampling).dry_allowed == DRY_ALLOWED == 2
