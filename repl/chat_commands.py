"""The conversation commands: /help /system /set /regen /undo /clear /quit."""

from __future__ import annotations

from typing import Any

from repl.commands import Arg, Outcome, UsageError, parse_float
from repl.core import REGISTRY, Core

KEYS_HELP = """Keys (Textual app): Enter sends · Ctrl+J inserts a newline · Tab completes ·
Esc stops a reply or a job · Ctrl+P opens the command palette · Ctrl+Q quits.
Steering rack (Textual app): Ctrl+R focuses it · Ctrl+B shows or hides it · Up/Down select a
vector · Left/Right (or -/+) nudge its strength by 0.1, Shift for 0.5 · Space switches it on
or off · R resets it to its recommendation · Esc goes back to typing. Each change is recorded
like the /steer command it stands for and applies from the next reply.
After /compare: 1 keeps the unsteered reply, 2 the steered one, 0 neither (or /pick).
After /sweep: Up/Down show each row's reply, Enter applies that strength.
Keys (plain REPL): Enter sends · Tab completes · Ctrl+C stops a reply or a job · Ctrl+D exits.
A message that starts with '/' is typed as '//...'."""


@REGISTRY.command(
    "help",
    "list the commands, or explain one",
    Arg("command", "command", optional=True, help="a command name, with or without '/'"),
)
def cmd_help(core: Core, args: dict[str, Any]) -> Outcome:
    name = args["command"]
    registry = core.registry
    if name in registry.topics:
        return Outcome.say(registry.topics[name])
    if name in registry.commands:
        return Outcome.say(registry.commands[name].help)
    if name:  # a group such as 'vector'
        return Outcome.say(
            "\n\n".join(registry.commands[f"{name} {s}"].help for s in registry.subcommands(name))
        )
    width = max(len(c.usage) for c in registry.commands.values())
    lines = [f"{c.usage:<{width}}  {c.summary}" for _, c in sorted(registry.commands.items())]
    return Outcome.say("\n".join([*lines, "", "/help keys lists the keys of both front ends."]))


REGISTRY.topics["keys"] = KEYS_HELP


@REGISTRY.command(
    "system",
    "show or set the system prompt ('off' removes it)",
    Arg("text", "text", optional=True, help="the new system prompt; quotes are optional"),
    details="The whole conversation is answered under the new prompt from the next reply on.",
)
def cmd_system(core: Core, args: dict[str, Any]) -> Outcome:
    text = args["text"]
    if text is None:
        return Outcome.say(f"system prompt: {core.system!r}" if core.system else "no system prompt")
    core.system = None if text == "off" else text
    return Outcome.done("system prompt removed" if core.system is None else "system prompt set")


def _float_in(lo: float, hi: float, lo_open: bool = False):
    def check(key: str, raw: str) -> float:
        value = parse_float(key, raw)
        if not (lo < value <= hi if lo_open else lo <= value <= hi):
            bracket = "(" if lo_open else "["
            raise UsageError(f"{key} must be in {bracket}{lo:g}, {hi:g}], not {raw}")
        return value

    return check


def _int_in(lo: int, hi: int):
    def check(key: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise UsageError(f"{key} must be a whole number, not {raw!r}") from None
        if not lo <= value <= hi:
            raise UsageError(f"{key} must be between {lo} and {hi}, not {raw}")
        return value

    return check


def _seed(key: str, raw: str) -> int | None:
    if raw in ("random", "none"):
        return None
    return _int_in(0, 2**31 - 1)(key, raw)


SETTINGS = {
    "temperature": (_float_in(0.0, 5.0), "0 = greedy: exact and reproducible"),
    "top_p": (_float_in(0.0, 1.0, lo_open=True), "nucleus sampling mass, (0, 1]"),
    "top_k": (_int_in(0, 100_000), "sample among the k likeliest tokens (0 = all)"),
    "max_tokens": (_int_in(1, 1_000_000), "longest reply, in tokens"),
    "seed": (_seed, "sampling seed, or 'random' for a new one each reply"),
    "dry": (_float_in(0.0, 5.0), "DRY penalty on a reply repeating itself, 0 = off (try 0.8)"),
    "dry_allowed": (_int_in(1, 1000), "tokens a repeat may run before DRY penalises it (try 3)"),
}


@REGISTRY.command(
    "set",
    "show the sampling settings, or change one",
    Arg("key", "choice", tuple(SETTINGS), optional=True, help=", ".join(SETTINGS)),
    Arg("value", optional=True, help="the new value"),
)
def cmd_set(core: Core, args: dict[str, Any]) -> Outcome:
    key, raw = args["key"], args["value"]
    if key is None:
        s = core.sampling
        rows = [
            f"{k} = {getattr(s, k) if getattr(s, k) is not None else 'random'}" for k in SETTINGS
        ]
        return Outcome.say("\n".join(rows))
    if raw is None:
        raise UsageError(f"missing value for {key} ({SETTINGS[key][1]})")
    value = SETTINGS[key][0](key, raw)
    if key == "max_tokens" and value >= core.ctx.n_ctx:
        raise UsageError(f"max_tokens must be below the context size {core.ctx.n_ctx}")
    core.set_sampling(**{key: value})
    return Outcome.done(f"{key} = {value if value is not None else 'random'}")


@REGISTRY.command("regen", "answer the last message again")
def cmd_regen(core: Core, args: dict[str, Any]) -> Outcome:
    if not core.turns:
        return Outcome.error("nothing to regenerate: the conversation is empty")
    # what to put back if the new reply cannot be made
    core.regen_backup = [core.turns.pop()] if core.turns[-1].role == "assistant" else []
    return Outcome(generate=True, transcript_changed=True, changed=True)


@REGISTRY.command("undo", "take back the last message and its reply")
def cmd_undo(core: Core, args: dict[str, Any]) -> Outcome:
    if not core.pop_last_exchange():
        return Outcome.error("nothing to undo: the conversation is empty")
    return Outcome(info=["last exchange removed"], transcript_changed=True, changed=True)


@REGISTRY.command("clear", "start the conversation over (system prompt and settings stay)")
def cmd_clear(core: Core, args: dict[str, Any]) -> Outcome:
    core.turns.clear()
    return Outcome(info=["conversation cleared"], transcript_changed=True, changed=True)


@REGISTRY.command("quit", "leave steer")
def cmd_quit(core: Core, args: dict[str, Any]) -> Outcome:
    return Outcome(quit=True)
