"""The slash-command core: parsing, errors, completion. Pure logic: no model needed."""

from __future__ import annotations

import pytest

from repl.commands import Arg, Outcome, Registry, UsageError
from repl.core import REGISTRY


def make_registry() -> Registry:
    reg = Registry()

    @reg.command("echo", "say it back", Arg("n", "int"), Arg("text", "text"))
    def echo(core, args):
        return Outcome.say(f"{args['n']}:{args['text']}")

    @reg.command(
        "pick", "choose", Arg("color", "choice", ("red", "green")), Arg("x", "float", optional=True)
    )
    def pick(core, args):
        return Outcome.say(f"{args['color']} {args['x']}")

    return reg


def test_quoted_arguments_are_one_word() -> None:
    cmd, values = REGISTRY.parse('/help "set"')
    assert cmd.name == "help" and values == {"command": "set"}


def test_text_argument_keeps_apostrophes_and_spacing() -> None:
    _, values = REGISTRY.parse("/system You're a pirate,  matey")
    assert values["text"] == "You're a pirate,  matey"


def test_text_argument_fully_quoted_is_unquoted() -> None:
    _, values = REGISTRY.parse("/system 'Be brief.'")
    assert values["text"] == "Be brief."


def test_text_after_typed_arguments() -> None:
    reg = make_registry()
    assert reg.dispatch(None, '/echo 3 "hello there" friend').info == ['3:"hello there" friend']
    assert reg.dispatch(None, "/echo 3 'hi'").info == ["3:hi"]


def test_unknown_command_suggests_the_closest() -> None:
    with pytest.raises(UsageError, match=r"unknown command /hlep; did you mean /help\?"):
        REGISTRY.parse("/hlep")
    with pytest.raises(UsageError, match="/help lists commands"):
        REGISTRY.parse("/zzzzzz")


@pytest.mark.parametrize(
    "line, message",
    [
        ("/echo x hi", "n must be a whole number, not 'x'; usage: /echo n text"),
        ("/echo 3", "missing text; usage: /echo n text"),
        ("/echo", "missing n; usage: /echo n text"),
        ("/pick blue", "color must be one of red, green, not 'blue'"),
        ("/pick red 1 2", "unexpected argument '2'; usage: /pick color [x]"),
        ("/pick red nan-ish", "x must be a number, not 'nan-ish'"),
        ('/pick "red', "no closing quotation in the arguments; usage: /pick color [x]"),
    ],
)
def test_bad_arguments_answer_with_usage(line: str, message: str) -> None:
    outcome = make_registry().dispatch(None, line)
    assert outcome.info == [] and len(outcome.errors) == 1
    assert message in outcome.errors[0]


def test_choice_error_suggests() -> None:
    outcome = REGISTRY.dispatch(None, "/set temprature 0")
    assert "did you mean temperature?" in outcome.errors[0]


def test_every_command_has_help_and_usage() -> None:
    for name, cmd in REGISTRY.commands.items():
        assert cmd.summary and cmd.usage.startswith(f"/{name}")
    assert {"help", "system", "set", "regen", "undo", "clear", "quit"} <= set(REGISTRY.commands)


def test_duplicate_names_are_refused() -> None:
    reg = make_registry()
    with pytest.raises(ValueError):
        reg.command("echo", "again")(lambda c, a: Outcome())


@pytest.mark.parametrize(
    "text, start, expected",
    [
        ("/he", 0, ["/help"]),
        ("/", 0, [f"/{n}" for n in REGISTRY.names()]),
        ("/vector s", 8, ["save", "show"]),
        ("/steer x --l", 9, ["--layers"]),
        ("/set te", 5, ["temperature"]),
        ("/set t", 5, ["temperature", "top_p", "top_k"]),
        ("/set ", 5, ["temperature", "top_p", "top_k", "max_tokens", "seed", "dry", "dry_allowed"]),
        ("/help s", 6, ["session", "set", "steer", "sweep", "system"]),
        ("/help k", 6, ["keys"]),
        ("/set temperature ", 17, []),
        ("hello", 5, []),
        ("/nope x", 7, []),
    ],
)
def test_completion(text: str, start: int, expected: list[str]) -> None:
    got_start, got = REGISTRY.complete(None, text)
    assert got == expected
    if expected:
        assert got_start == start


def test_flag_options_take_no_value() -> None:
    reg = Registry()

    @reg.command("go", "go", Arg("where", optional=True), options=(Arg("--fast", "flag"),))
    def go(core, args):
        return Outcome.say(f"{args['where']} {args['fast']}")

    assert reg.dispatch(None, "/go --fast home").info == ["home True"]
    assert reg.dispatch(None, "/go home").info == ["home False"]
    assert reg.commands["go"].usage == "/go [where] [--fast]"
    assert reg.complete(None, "/go --fast ") == (11, [])


@pytest.mark.parametrize(
    "line", ["/replay a\x00b.toml", "/session save x\x00", "/vector load t\x00", "/system a\x00b"]
)
def test_a_nul_character_is_one_line_error(line: str) -> None:
    """The fuzz found '/replay' crashing on a path with NUL (the OS refuses such paths)."""
    errors = REGISTRY.dispatch(None, line).errors
    assert errors == ["a command cannot contain a NUL character (\\x00); remove it"]


@pytest.mark.parametrize(
    "line",
    [
        "/session save ~0",
        "/session load ~nosuchuser/chat.toml",
        "/replay ~nosuchuser/chat.toml",
        "/vector save t ~nosuchuser/t.gguf",
        "/vector load ~nosuchuser/t.gguf",
        "/contrast x --pairs ~nosuchuser/p.tsv",
        "/contrast x --pairs p.tsv --negative-file ~nosuchuser/n.txt",
    ],
)
def test_a_home_folder_that_does_not_exist_is_one_line_error(line: str) -> None:
    """The fuzz found '/session save ~0' crashing: Path.expanduser raises RuntimeError for an
    unknown user. Every command that takes a path says so in one line instead."""
    errors = REGISTRY.dispatch(None, line).errors
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert "cannot expand '~" in errors[0] and "there is no user" in errors[0], errors
    assert "internal error" not in errors[0]
