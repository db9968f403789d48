"""The conversation core with the real model: commands change what the next reply sees."""

from __future__ import annotations

import shlex
import threading

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine import ChatContext, Sampling
from repl.commands import Arg
from repl.core import REGISTRY, Core
from repl.session import detach
from tests.conftest import GREEDY, examples


def chat(core: Core, line: str) -> str:
    outcome = core.submit(line)
    assert outcome.generate, outcome
    done = core.generate()
    assert done.reply is not None, done.errors
    return done.reply.text


def test_message_then_reply_joins_the_transcript(core: Core) -> None:
    text = chat(core, "Name three colors.")
    assert [t.role for t in core.turns] == ["user", "assistant"]
    assert core.turns[1].text == text and core.turns[1].sampling == GREEDY
    assert core.turns[1].steering == []


def test_regen_replaces_the_last_reply_with_the_same_greedy_text(core: Core) -> None:
    first = chat(core, "Name three colors.")
    outcome = core.submit("/regen")
    assert outcome.generate and outcome.transcript_changed
    assert [t.role for t in core.turns] == ["user"]
    again = core.generate().reply.text
    assert again == first and len(core.turns) == 2


def test_undo_takes_back_the_exchange_and_the_next_reply_is_as_if_it_never_was(core, model) -> None:
    chat(core, "Name three colors.")
    chat(core, "Tell me a joke.")
    assert core.submit("/undo").transcript_changed
    assert [t.role for t in core.turns] == ["user", "assistant"]
    after_undo = chat(core, "And three animals?")
    fresh = Core(model, ChatContext(model, n_ctx=1024), GREEDY)
    chat(fresh, "Name three colors.")
    assert chat(fresh, "And three animals?") == after_undo


def test_undo_and_regen_on_empty_conversation_are_errors(core: Core) -> None:
    assert core.submit("/undo").errors == ["nothing to undo: the conversation is empty"]
    assert core.submit("/regen").errors[0].startswith("nothing to regenerate")


def test_clear_forgets_the_conversation(core: Core, model) -> None:
    chat(core, "My name is Ada.")
    core.submit("/clear")
    assert core.turns == []
    cleared = chat(core, "Name three colors.")
    fresh = Core(model, ChatContext(model, n_ctx=1024), GREEDY)
    assert chat(fresh, "Name three colors.") == cleared


def test_system_prompt_is_used_and_can_be_removed(core: Core, model) -> None:
    assert core.submit("/system You are a pirate. Always talk like a pirate.").info == [
        "system prompt set"
    ]
    assert core.messages()[0] == {
        "role": "system",
        "content": "You are a pirate. Always talk like a pirate.",
    }
    pirate = chat(core, "Say hello.")
    plain = Core(model, ChatContext(model, n_ctx=1024), GREEDY)
    assert chat(plain, "Say hello.") != pirate
    core.submit("/system off")
    assert core.system is None
    assert "no system prompt" in core.submit("/system").info[0]


def test_set_changes_sampling_and_validates(core: Core) -> None:
    assert core.submit("/set temperature 0.5").info == ["temperature = 0.5"]
    assert core.submit("/set top_k 7").info == ["top_k = 7"]
    assert core.submit("/set seed 42").info == ["seed = 42"]
    assert core.submit("/set seed random").info == ["seed = random"]
    assert core.submit("/set max_tokens 9").info == ["max_tokens = 9"]
    assert core.submit("/set dry 0.8").info == ["dry = 0.8"]
    assert core.sampling == Sampling(0.5, GREEDY.top_p, 7, 9, None, 0.8)
    assert core.submit("/set dry -1").errors[0].startswith("dry must be in [0, 5], not -1;")
    assert core.submit("/set dry_allowed 3").info == ["dry_allowed = 3"]
    assert core.sampling.dry_allowed == 3
    assert (
        core.submit("/set dry_allowed 0")
        .errors[0]
        .startswith("dry_allowed must be between 1 and 1000, not 0")
    )
    assert "dry_allowed must be a whole number" in core.submit("/set dry_allowed 2.5").errors[0]
    assert "top_p must be in (0, 1], not 0" in core.submit("/set top_p 0").errors[0]
    assert "temperature must be a number" in core.submit("/set temperature hot").errors[0]
    assert "missing value for seed" in core.submit("/set seed").errors[0]
    assert (
        "max_tokens must be below the context size"
        in core.submit("/set max_tokens 99999").errors[0]
    )
    listing = core.submit("/set").info[0]
    assert "temperature = 0.5" in listing and "seed = random" in listing and "dry = 0.8" in listing


def test_max_tokens_setting_applies_to_the_next_reply(core: Core) -> None:
    core.submit("/set max_tokens 3")
    core.submit("Write a long story.")
    assert core.generate().reply.tokens == 3


def test_context_full_takes_the_message_back(model) -> None:
    small = Core(model, ChatContext(model, n_ctx=256), GREEDY)
    small.submit("word " * 400)
    outcome = small.generate()
    assert outcome.reply is None and small.turns == []
    assert "context full" in outcome.errors[0] and "/clear" in outcome.errors[0]


def test_a_failed_regen_keeps_the_transcript_as_it_was(model) -> None:
    small = Core(model, ChatContext(model, n_ctx=256), Sampling(temperature=0.0, max_tokens=8))
    first = chat(small, "Name a color.")
    small.submit("/system " + "word " * 300)  # the conversation no longer fits
    outcome = small.submit("/regen")
    assert outcome.generate
    done = small.generate()
    assert done.reply is None and "context full" in done.errors[0]
    assert "last reply is kept" in done.errors[0]
    assert [(t.role, t.text) for t in small.turns] == [
        ("user", "Name a color."),
        ("assistant", first),
    ]
    small.submit("/system off")
    assert small.submit("/regen").generate and small.generate().reply.text == first


def test_help_lists_every_command_and_explains_one(core: Core) -> None:
    listing = core.submit("/help").info[0]
    for name in REGISTRY.commands:
        assert f"/{name}" in listing
    assert "/help keys" in listing
    keys = core.submit("/help keys").info[0]
    for key in ("Esc", "Ctrl+R", "Ctrl+B", "Space", "/pick", "Ctrl+C"):
        assert key in keys
    assert core.submit("/help /set").info[0].startswith("/set [key] [value]")


def test_slash_slash_sends_a_message_starting_with_slash(core: Core) -> None:
    assert core.submit("//etc/passwd is a file").generate
    assert core.turns[-1].text == "/etc/passwd is a file"


def test_quit(core: Core) -> None:
    assert core.submit("/quit").quit


def test_interrupted_reply_is_kept_and_marked(core: Core) -> None:
    cancel = threading.Event()
    core.submit("/set max_tokens 200")
    core.submit("Write a long story about a dragon.")
    pieces: list[str] = []

    def stop_early(text: str) -> None:
        pieces.append(text)
        if len(pieces) == 3:
            cancel.set()

    reply = core.generate(stop_early, cancel).reply
    assert reply.interrupted and core.turns[-1].interrupted
    assert core.turns[-1].text == "".join(pieces)
    assert chat(core, "Thanks.")  # the conversation goes on


WORDS = st.sampled_from(
    [
        "temperature",
        "top_p",
        "top_k",
        "max_tokens",
        "seed",
        "random",
        "off",
        "0",
        "-1",
        "1e9",
        "nan",
        "inf",
        "0.5",
        '"',
        "'",
        "\\",
        "/",
        "--x",
        "set",
        "help",
    ]
)
LINES = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda name, rest: f"/{name} {rest}",
        st.sampled_from(sorted(REGISTRY.commands) + ["sett", "x", ""]),
        st.lists(st.one_of(WORDS, st.text(max_size=3)), max_size=6).map(" ".join),
    ),
)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> None:
    """Random lines include '/session save 0': keep what they write out of the repository."""
    monkeypatch.chdir(tmp_path)


@settings(
    max_examples=examples(400),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(line=LINES)
@example(line="/session save ~0")  # found by the fuzz: Path.expanduser raised RuntimeError
@example(line="/replay \x00")  # found by the fuzz: a NUL byte reached os.stat
def test_no_input_line_raises(core: Core, in_tmp: None, line: str) -> None:
    outcome = core.submit(line)
    for message in outcome.errors:
        assert message and "\n" not in message and "internal error" not in message
    core.complete(line)
    # keep the transcript valid for the next example
    core.turns.clear()


# ---- every command with arguments drawn from its own specs ----------------------------------

JUNK = ["", "nan", "inf", "-inf", "1e999", "-1", "0", "--", "--n", "../x", "a/b", "é", "\t", "''"]


def value_for(arg: Arg) -> st.SearchStrategy[str]:
    """Plausible and hostile values for one Arg, by its kind."""
    junk = st.sampled_from(JUNK)
    word = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=10)
    if arg.kind == "int":
        good = st.integers(-(10**12), 10**12).map(str)
    elif arg.kind == "float":
        good = st.floats(allow_nan=True, allow_infinity=True).map(repr)
    elif arg.kind == "choice":
        good = st.sampled_from(arg.choices)
    elif arg.kind == "command":
        good = st.sampled_from(REGISTRY.names())
    elif arg.kind == "path":
        good = st.sampled_from(["~0", "~nosuchuser/x", "~/x.toml", "x.toml", "a.gguf", "../x"])
    elif arg.kind == "text":
        return st.one_of(word, junk, st.text(max_size=40))
    else:
        good = st.sampled_from(["terse", "off", "0.5", "x_1", "9-13", "1-99", "a.gguf"])
    return st.one_of(good, junk, word)


@st.composite
def command_lines(draw) -> str:
    cmd = REGISTRY.commands[draw(st.sampled_from(sorted(REGISTRY.commands)))]
    words = []
    for arg in cmd.args:
        if arg.optional and draw(st.booleans()):
            break
        if draw(st.integers(0, 9)) == 0:
            continue  # a required argument left out now and then
        words.append(draw(value_for(arg)))
    for opt in cmd.options:
        if draw(st.booleans()):
            words.append(opt.name)
            if opt.kind != "flag" and draw(st.integers(0, 5)):
                words.append(draw(value_for(opt)))
    if draw(st.integers(0, 7)) == 0:
        words.append(draw(value_for(Arg("extra"))))
    quoted = [shlex.quote(w) if draw(st.integers(0, 3)) else w for w in words]
    return " ".join([f"/{cmd.name}", *quoted])


@settings(
    max_examples=examples(600),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(line=command_lines())
@example(line="/session save ~0")
@example(line="/session load ~nosuchuser/chat.toml")
@example(line="/vector load ~nosuchuser/x.gguf")
@example(line="/contrast x --pairs ~nosuchuser/p.tsv")
def test_every_command_survives_arguments_from_its_own_specs(
    core: Core, terse, in_tmp: None, line: str
) -> None:
    core.steering.vectors = {"terse": terse}
    outcome = core.submit(line)
    for message in outcome.errors:
        assert len(message) > 10 and "\n" not in message, message
        assert "internal error" not in message and "Traceback" not in message, message
    core.complete(line)
    # the session goes on: reset what the line changed, then a command still works
    detach(core)
    core.turns.clear()
    core.steering.active.clear()
    core.regen_backup = None
    core.sampling = GREEDY
    assert core.submit("/set").info
