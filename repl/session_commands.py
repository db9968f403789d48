"""/session save, load, new and list."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from repl.commands import Arg, Outcome
from repl.core import REGISTRY, Core
from repl.session import Recorder, attach, sessions_dir, switch_to, vectors_dir_for
from repl.session_file import SessionFileError
from repl.session_list import recent_sessions
from vectors import VectorFileError


@REGISTRY.command(
    "session save",
    "save the session (to PATH: go on recording there)",
    Arg("path", "path", optional=True, help="a .toml file (default: the current session file)"),
    options=(
        Arg(
            "--bundle",
            "flag",
            help="copy every vector beside the session, so the folder can be shared",
        ),
    ),
)
def cmd_session_save(core: Core, args: dict[str, Any]) -> Outcome:
    if core.recorder is None and args["path"] is None:
        return Outcome.error("this chat is not recorded (--no-session): give a PATH")
    old = core.recorder
    try:
        target = None if args["path"] is None else _toml_path(args["path"])
        if target is not None and not (old is not None and _same_file(target, old.path)):
            core.recorder = _recorder_at(core, target)  # the current one stays until this saves
        if args["bundle"]:
            _bundle(core)
        core.recorder.save()
    except (SessionFileError, OSError, ValueError) as exc:
        if core.recorder is not old:  # the recording stays where it was
            core.recorder.close()
            core.recorder = old
        return Outcome.error(f"could not save the session: {exc}")
    if old is not None and old is not core.recorder:
        old.close()
    return Outcome.say(f"session saved to {core.recorder.path}")


def _toml_path(path: Path) -> Path:
    if path.is_dir() or not path.name:
        raise SessionFileError(f"{path} is a folder: give a file name, e.g. {path / 'chat.toml'}")
    return path if path.suffix == ".toml" else path.with_suffix(".toml")


def _recorder_at(core: Core, path: Path) -> Recorder:
    """A recorder for the same session at another file; the current one is not touched."""
    if not path.parent.is_dir():
        raise SessionFileError(f"folder {path.parent} does not exist")
    old = core.recorder
    return Recorder(
        core,
        path,
        created=old.created if old else None,
        events=old.events if old else None,
        extra=old.extra if old else None,
    )


def _bundle(core: Core) -> None:
    """Copy each vector into '<session>.vectors/' and point the vector at the copy."""
    folder = vectors_dir_for(core.recorder.path)
    folder.mkdir(parents=True, exist_ok=True)
    for name, vec in core.steering.vectors.items():
        target = folder / f"{name}.gguf"
        source = vec.meta.get("saved_to") or vec.meta.get("source")
        if source and Path(source).is_file() and Path(source).resolve() != target.resolve():
            shutil.copyfile(source, target)
            vec.meta["saved_to"] = str(target)


@REGISTRY.command(
    "session load",
    "switch to another session file",
    Arg("path", "path", help="a session .toml file"),
)
def cmd_session_load(core: Core, args: dict[str, Any]) -> Outcome:
    path = args["path"]
    if not path.is_file():
        return Outcome.error(f"no session file at {path}; the current session goes on")
    if core.recorder is not None and _same_file(path, core.recorder.path):
        return Outcome.say(f"{path} is the current session already")
    try:
        lines = switch_to(core, path)
    except (SessionFileError, VectorFileError, ValueError) as exc:
        return Outcome.error(f"{exc}; the current session goes on")
    return Outcome(info=lines, transcript_changed=True)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


@REGISTRY.command("session new", "start a new conversation in a new session file")
def cmd_session_new(core: Core, args: dict[str, Any]) -> Outcome:
    old = core.recorder
    try:  # the new file first: if it cannot be made, the current session goes on untouched
        lines = attach(core, None)
    except (OSError, SessionFileError) as exc:
        core.recorder = old
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        return Outcome.error(f"cannot start a new session ({reason}); the current one goes on")
    if old is not None:
        old.close()
    core.turns.clear()
    core.ctx.reset()
    return Outcome(info=lines, transcript_changed=True)


@REGISTRY.command("session list", "recent sessions in the user data directory")
def cmd_session_list(core: Core, args: dict[str, Any]) -> Outcome:
    rows = recent_sessions(sessions_dir())
    if not rows:
        return Outcome.say(f"no sessions yet in {sessions_dir()}")
    lines = [
        f"{updated[:16]}  {turns:>3} replies  {first!r}  {path}"
        for path, updated, first, turns in rows
    ]
    return Outcome.say("\n".join(lines))


@REGISTRY.command(
    "replay",
    "re-run a session file against the model and check every reply",
    Arg("path", "path", help="a session .toml file"),
)
def cmd_replay(core: Core, args: dict[str, Any]) -> Outcome:
    from repl.replay import Replayer, ReplayError, preflight
    from repl.session import template_warning
    from repl.session_file import load_session

    path = args["path"]
    try:
        session = load_session(path)
        preflight(session, Path(path))
    except SessionFileError as exc:
        return Outcome.error(str(exc))
    replies = sum(e.kind == "assistant" for e in session.events)

    def job(on_progress, cancel) -> Outcome:
        lines = []
        if session.model.sha256 != core.steering.model_sha256():
            lines.append(
                "warning: the session was made with another model file; replies may differ"
            )
        differs = template_warning(session, core.model)
        if differs:
            lines.append(f"warning: {differs}")

        def on_turn(turn) -> None:
            lines.append(
                f"turn {turn.index}: {'identical' if turn.identical else 'different'}"
                + (f"  {turn.diff}" if turn.diff else "")
            )
            if on_progress is not None:
                on_progress(turn.index, replies)

        try:
            report = Replayer(core.model, session, path).run(on_turn, cancel)
        except (ReplayError, VectorFileError, SessionFileError, ValueError) as exc:
            return Outcome(info=lines, errors=[str(exc)])
        return Outcome(info=[*lines, *report.notes, report.summary()])

    return Outcome(job=job, job_label=f"replaying {path.name}", job_total=replies)
