"""One registry of slash commands, shared by every front end.

A command is declared once (name, arguments, help, completion) and both the Textual app and
the plain REPL parse, complete and dispatch through this module, so `/set top_k 5` means
exactly the same thing everywhere.
"""

from __future__ import annotations

import difflib
import io
import math
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from repl.paths import PathError, user_path


class UsageError(Exception):
    """The arguments do not fit the command; the message names what was wrong."""


@dataclass(frozen=True)
class Arg:
    """One positional argument.

    kind: "word" (any single word), "int", "float", "choice" (one of `choices`),
    "command" (a command name), "path" (a file or folder, '~' expanded; a Path), "text" (the
    raw rest of the line, quotes optional) or, for options only, "flag" (no value: present or
    not).
    """

    name: str
    kind: str = "word"
    choices: tuple[str, ...] = ()
    optional: bool = False
    help: str = ""

    @property
    def label(self) -> str:
        return f"[{self.name}]" if self.optional else self.name


@dataclass
class Outcome:
    """What a command (or a chat line) did, for a front end to show and act on."""

    info: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    generate: bool = False  # a reply should now be generated
    transcript_changed: bool = False  # the visible transcript must be redrawn
    quit: bool = False
    changed: bool = False  # the session's state changed: record the command, autosave
    reply: Any = None  # the engine's Reply, when a reply was made
    # long work for the front end to run off the UI thread: job(on_progress, cancel) -> Outcome
    job: Callable[[Callable[[int, int], None], Any], Outcome] | None = None
    job_label: str = ""
    job_total: int = 0
    job_line: str = ""  # the command line that started the job, recorded once it succeeds
    # a structured result (a comparison, a sweep, a vector chart): the app draws it as a
    # widget; headless front ends print view.lines() or emit view.event()
    view: Any = None

    def lines(self) -> list[str]:
        """Everything to tell the user, as text: the view's lines, then the info."""
        return [*(self.view.lines() if self.view is not None else []), *self.info]

    @classmethod
    def error(cls, message: str) -> Outcome:
        return cls(errors=[message])

    @classmethod
    def say(cls, message: str) -> Outcome:
        return cls(info=[message])

    @classmethod
    def done(cls, message: str) -> Outcome:
        """A report of a change to the session's state."""
        return cls(info=[message], changed=True)


Handler = Callable[[Any, dict[str, Any]], Outcome]
Completer = Callable[[Any, str], list[str]]


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    handler: Handler
    args: tuple[Arg, ...] = ()
    details: str = ""
    completers: dict[str, Completer] = field(default_factory=dict)
    options: tuple[Arg, ...] = ()  # named '--x VALUE' arguments, each optional

    @property
    def usage(self) -> str:
        opts = [
            f"[{o.name}]" if o.kind == "flag" else f"[{o.name} {o.name[2:].upper()}]"
            for o in self.options
        ]
        return " ".join([f"/{self.name}", *(a.label for a in self.args), *opts])

    def option(self, word: str) -> Arg | None:
        return next((o for o in self.options if o.name == word), None)

    @property
    def help(self) -> str:
        lines = [f"{self.usage} — {self.summary}"]
        lines += [f"  {a.name}: {a.help}" for a in (*self.args, *self.options) if a.help]
        if self.details:
            lines.append(self.details)
        return "\n".join(lines)


def _words_with_ends(text: str, limit: int | None = None) -> list[tuple[str, int]]:
    """Shell-style words of text (at most `limit`), each with the offset just past it."""
    lexer = shlex.shlex(io.StringIO(text), posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    out: list[tuple[str, int]] = []
    while limit is None or len(out) < limit:
        try:
            word = lexer.get_token()
        except ValueError as exc:  # "No closing quotation" / "No escaped character"
            raise UsageError(f"{str(exc).lower()} in the arguments") from None
        if word is None or word == lexer.eof:
            return out
        out.append((word, lexer.instream.tell()))
    return out


def _rest_text(raw: str) -> str:
    """A free-text argument: the raw text, unquoted only when it is exactly one quoted word."""
    raw = raw.strip()
    if raw[:1] in "\"'":
        try:
            words = shlex.split(raw)
        except ValueError:
            return raw
        if len(words) == 1:
            return words[0]
    return raw


def parse_float(label: str, word: str) -> float:
    """A finite number, or a UsageError naming `label`."""
    try:
        value = float(word)
    except ValueError:
        raise UsageError(f"{label} must be a number, not {word!r}") from None
    if not math.isfinite(value):
        raise UsageError(f"{label} must be a finite number, not {word!r}")
    return value


def _convert(arg: Arg, word: str, registry: Registry) -> Any:
    if arg.kind == "int":
        try:
            return int(word)
        except ValueError:
            raise UsageError(f"{arg.name} must be a whole number, not {word!r}") from None
    if arg.kind == "float":
        return parse_float(arg.name, word)
    if arg.kind == "path":
        try:
            return user_path(word)
        except PathError as exc:
            raise UsageError(f"{arg.name}: {exc}") from None
    if arg.kind == "choice" and word not in arg.choices:
        hint = _closest(word, arg.choices)
        more = f" (did you mean {hint}?)" if hint else ""
        raise UsageError(f"{arg.name} must be one of {', '.join(arg.choices)}, not {word!r}{more}")
    if arg.kind == "command":
        name = word.lstrip("/")
        if name in registry.topics:
            return name
        if name not in registry.commands and not registry.subcommands(name):
            hint = registry.suggest(name)
            raise UsageError(f"no command /{name}" + (f" (did you mean /{hint}?)" if hint else ""))
        return name
    return word


def one_line(message: str) -> str:
    return message.replace("\r", "\\r").replace("\n", "\\n")


def _closest(word: str, options: Sequence[str]) -> str | None:
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return match[0] if match else None


class Registry:
    """All slash commands, by name."""

    def __init__(self) -> None:
        self.commands: dict[str, Command] = {}
        self.topics: dict[str, str] = {}  # /help TOPIC pages that are not commands ("keys")

    def add(self, command: Command) -> Command:
        if command.name in self.commands:
            raise ValueError(f"duplicate command /{command.name}")
        self.commands[command.name] = command
        return command

    def command(
        self,
        name: str,
        summary: str,
        /,
        *args: Arg,
        details: str = "",
        options: tuple[Arg, ...] = (),
        **completers: Completer,
    ):
        """Decorator form of `add`, used where handlers are defined.

        Completers are keyed by argument name; an option's completer by its '--name'
        (pass it as completers={"--name": fn} through `add` when the name is not an identifier).
        """

        def wrap(fn: Handler) -> Handler:
            self.add(Command(name, summary, fn, tuple(args), details, dict(completers), options))
            return fn

        return wrap

    def names(self) -> list[str]:
        """Top-level names: plain commands and command groups ('vector' for '/vector save')."""
        return sorted({n.split(" ")[0] for n in self.commands})

    def subcommands(self, group: str) -> list[str]:
        return sorted(n.split(" ", 1)[1] for n in self.commands if n.startswith(group + " "))

    def suggest(self, name: str) -> str | None:
        return _closest(name, self.names())

    def _resolve(self, body: str) -> tuple[str, str]:
        """Split 'name [sub] rest' into the registered command name and its argument text."""
        name, _, rest = body.partition(" ")
        name = name.strip()
        if name in self.commands:
            return name, rest
        subs = self.subcommands(name)
        if not subs:
            hint = self.suggest(name)
            more = f"; did you mean /{hint}?" if hint else "; /help lists commands"
            raise UsageError(f"unknown command /{name}{more}")
        sub, _, rest = rest.strip().partition(" ")
        if not sub:
            raise UsageError(f"/{name} needs a subcommand: {', '.join(subs)}")
        if sub not in subs:
            hint = _closest(sub, subs)
            more = f"; did you mean /{name} {hint}?" if hint else f"; try {', '.join(subs)}"
            raise UsageError(f"unknown subcommand /{name} {sub}{more}")
        return f"{name} {sub}", rest

    def command_name(self, line: str) -> str:
        """The registered command a '/...' line runs ('vector save'), however it is spaced;
        raises UsageError when it names none."""
        return self._resolve(line.strip()[1:])[0]

    # -- parsing ------------------------------------------------------------------------------

    def parse(self, line: str) -> tuple[Command, dict[str, Any]]:
        """Split '/name args...' into the command and its converted arguments."""
        if "\x00" in line:  # no path, name or setting can hold one; the OS refuses it in paths
            raise UsageError("a command cannot contain a NUL character (\\x00); remove it")
        name, rest = self._resolve(line.strip()[1:])
        cmd = self.commands[name]
        try:
            return cmd, self._bind(cmd, rest)
        except UsageError as exc:
            raise UsageError(f"{exc}; usage: {cmd.usage}") from None

    def _bind(self, cmd: Command, rest: str) -> dict[str, Any]:
        values: dict[str, Any] = {}
        args = list(cmd.args)
        text_arg = args.pop() if args and args[-1].kind == "text" else None
        words = _words_with_ends(rest, len(args) if text_arg else None)
        if cmd.options:
            words = self._take_options(cmd, words, values)
        if text_arg is None and len(words) > len(args):
            extra = " ".join(w for w, _ in words[len(args) :])
            raise UsageError(f"unexpected argument {extra!r}")
        end = 0
        for i, arg in enumerate(args):
            if i < len(words):
                values[arg.name] = _convert(arg, words[i][0], self)
                end = words[i][1]
            elif not arg.optional:
                raise UsageError(f"missing {arg.name}")
            else:
                values[arg.name] = None
        if text_arg is not None:
            text = _rest_text(rest[end:]) if len(words) == len(args) else ""
            if not text and not text_arg.optional:
                raise UsageError(f"missing {text_arg.name}")
            values[text_arg.name] = text or None
        return values

    def _take_options(self, cmd: Command, words, values: dict[str, Any]):
        """Bind '--name VALUE' pairs anywhere in the line; return the positional words."""
        for opt in cmd.options:
            values[opt.name[2:].replace("-", "_")] = False if opt.kind == "flag" else None
        positional = []
        i = 0
        while i < len(words):
            word = words[i][0]
            if word.startswith("--") and len(word) > 2:
                opt = cmd.option(word)
                if opt is None:
                    hint = _closest(word, [o.name for o in cmd.options])
                    raise UsageError(
                        f"unknown option {word}" + (f" (did you mean {hint}?)" if hint else "")
                    )
                if opt.kind == "flag":
                    values[word[2:].replace("-", "_")] = True
                    i += 1
                    continue
                if i + 1 >= len(words):
                    raise UsageError(f"{word} needs a value")
                values[word[2:].replace("-", "_")] = _convert(opt, words[i + 1][0], self)
                i += 2
                continue
            positional.append(words[i])
            i += 1
        return positional

    def dispatch(self, core: Any, line: str) -> Outcome:
        """Run one slash-command line; never raises for anything the user typed, and every
        error is one line (a typed newline inside a path or name is shown escaped)."""
        outcome = self._dispatch(core, line)
        outcome.errors = [one_line(e) for e in outcome.errors]
        return outcome

    def _dispatch(self, core: Any, line: str) -> Outcome:
        try:
            cmd, values = self.parse(line)
        except UsageError as exc:
            return Outcome.error(str(exc))
        try:
            return cmd.handler(core, values)
        except UsageError as exc:
            return Outcome.error(f"{exc}; usage: {cmd.usage}")
        except Exception as exc:  # a bug must not take the session down; say what broke
            return Outcome.error(f"internal error in /{cmd.name}: {type(exc).__name__}: {exc}")

    # -- completion -----------------------------------------------------------------------------

    def complete(self, core: Any, text: str) -> tuple[int, list[str]]:
        """Candidates for the word at the end of `text`, and where that word starts."""
        if not text.startswith("/"):
            return len(text), []
        if " " not in text:
            prefix = text[1:]
            return 0, [f"/{n}" for n in self.names() if n.startswith(prefix)]
        name, _, rest = text[1:].partition(" ")
        if name not in self.commands and self.subcommands(name):
            if " " not in rest:
                subs = self.subcommands(name)
                return len(text) - len(rest), [s for s in subs if s.startswith(rest)]
            sub, _, rest = rest.partition(" ")
            name = f"{name} {sub}"
        cmd = self.commands.get(name)
        if cmd is None:
            return len(text), []
        try:
            words = [w for w, _ in _words_with_ends(rest)]
        except UsageError:
            return len(text), []
        current = (words.pop() if words else "") if rest and not rest[-1].isspace() else ""
        start = len(text) - len(current)
        last = cmd.option(words[-1]) if words else None
        if current.startswith("--") or (last is not None and last.kind != "flag"):
            return start, self._complete_option(cmd, core, words, current)
        index = len([w for i, w in enumerate(words) if not self._is_option_word(cmd, words, i)])
        if index >= len(cmd.args):
            return len(text), []
        arg = cmd.args[index]
        if arg.name in cmd.completers:
            options = cmd.completers[arg.name](core, current)
        elif arg.kind == "choice":
            options = list(arg.choices)
        elif arg.kind == "command":
            options = [*self.names(), *sorted(self.topics)]
        else:
            options = []
        return start, [o for o in options if o.startswith(current)]

    @staticmethod
    def _is_option_word(cmd: Command, words: list[str], i: int) -> bool:
        previous = cmd.option(words[i - 1]) if i > 0 else None
        return cmd.option(words[i]) is not None or (
            previous is not None and previous.kind != "flag"
        )

    def _complete_option(
        self, cmd: Command, core: Any, words: list[str], current: str
    ) -> list[str]:
        if current.startswith("--"):
            return [o.name for o in cmd.options if o.name.startswith(current)]
        opt = cmd.option(words[-1])
        if opt is None:
            return []
        if opt.name in cmd.completers:
            options = cmd.completers[opt.name](core, current)
        else:
            options = list(opt.choices)
        return [o for o in options if o.startswith(current)]
