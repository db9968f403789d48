"""A chat's session on disk: what is recorded, when it is saved, and how a chat resumes.

`repl/session_file.py` knows the TOML format; this module keeps a `Session` in step with a
live `Core` and restores a `Core` from one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from engine.chat import Reply, Sampling
from repl.core import Core, Turn, pop_last_exchange
from repl.model_lookup import describe_model
from repl.paths import data_dir, user_path
from repl.session_file import (
    Event,
    Session,
    VectorRef,
    remove_stale_temp_files,
    save_session,
)
from repl.session_lock import SessionLock
from repl.session_paths import resolve_vector_path, vectors_dir_for
from repl.steering import Active, check_name, file_sha256, library_dir
from vectors import save_vector


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def sessions_dir() -> Path:
    path = data_dir() / "sessions"
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_session_path() -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = sessions_dir() / f"{stamp}.toml"
    n = 1
    while path.exists():
        n += 1
        path = sessions_dir() / f"{stamp}-{n}.toml"
    return path


OPTIONAL_SAMPLING = ("seed", "dry", "dry_allowed")  # written only when not the default


def sampling_dict(sampling: Sampling) -> dict:
    """Absent means the default: a random seed, no DRY, llama.cpp's allowed length (so files
    from before DRY are as they were)."""
    default = Sampling()
    return {
        k: v
        for k, v in asdict(sampling).items()
        if k not in OPTIONAL_SAMPLING or v != getattr(default, k)
    }


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


class Recorder:
    """Records a Core's events and autosaves them, holding the session file's lock."""

    def __init__(
        self,
        core: Core,
        path: Path,
        *,
        created: str | None = None,
        events: list[Event] | None = None,
        extra: dict | None = None,
    ) -> None:
        self.core = core
        self.path = path
        self.lock = SessionLock(path)
        self.lock.acquire()
        # ours alone now: temporary files here are what a killed steer left mid-save
        remove_stale_temp_files(path.parent, path.name)
        vectors = vectors_dir_for(path)
        if vectors.is_dir():
            remove_stale_temp_files(vectors)
        self.created = created or now()
        self.events: list[Event] = list(events or [])
        self.extra = dict(extra or {})
        self._written: dict[str, Path] = {}

    # -- what happened ----------------------------------------------------------------------------

    def user(self, text: str) -> None:
        self.events.append(Event(kind="user", text=text))

    def command(self, line: str) -> None:
        self.events.append(Event(kind="command", text=line))

    def retract(self, kind: str, prefix: str = "") -> None:
        """Forget the last event if it is of this kind (and starts with prefix): the line it
        records was taken back because no reply could be made for it."""
        last = self.events[-1] if self.events else None
        if last is not None and last.kind == kind and last.text.startswith(prefix):
            self.events.pop()

    def reply(self, turn: Turn) -> None:
        reply = turn.reply
        self.events.append(
            Event(
                kind="assistant",
                text=turn.text,
                tokens=reply.tokens,
                finish_reason=reply.finish_reason,
                seed=reply.seed,
                steering=turn.steering,
                sampling=sampling_dict(turn.sampling),
                system=self.core.system or "",
            )
        )

    # -- saving -----------------------------------------------------------------------------------

    def snapshot(self) -> Session:
        core = self.core
        model = describe_model(core.model.path, core.model.name, core.steering.model_sha256())
        return Session(
            created=self.created,
            updated=now(),
            model=model,
            sampling=sampling_dict(core.sampling),
            system=core.system or "",
            vectors=[self._vector_ref(name) for name in sorted(core.steering.vectors)],
            steering=core.steering.describe(),
            events=list(self.events),
            chat_template=template_record(core.model),
            extra=self.extra,
        )

    def _vector_ref(self, name: str) -> VectorRef:
        """Point at the vector's file if it is in the session folder or the library, else
        keep a copy beside the session, so no autosave refers to a vector only in memory."""
        vec = self.core.steering.vectors[name]
        folder = self.path.parent
        for key in ("saved_to", "source"):
            raw = vec.meta.get(key)
            if (
                raw
                and Path(raw).is_file()
                and (_inside(Path(raw), folder) or _inside(Path(raw), library_dir()))
            ):
                return self._ref(name, Path(raw))
        target = self._written.get(name)
        if target is None:
            target = vectors_dir_for(self.path) / f"{check_name(name)}.gguf"
            target.parent.mkdir(parents=True, exist_ok=True)
            save_vector(vec, target, self.core.model.metadata("general.architecture") or "")
            self._written[name] = target
        return self._ref(name, target)

    def _ref(self, name: str, path: Path) -> VectorRef:
        folder = self.path.parent.resolve()
        resolved = path.resolve()
        shown = resolved.relative_to(folder) if resolved.is_relative_to(folder) else resolved
        return VectorRef(name=name, path=str(shown), sha256=file_sha256(resolved))

    def save(self) -> None:
        save_session(self.snapshot(), self.path)

    def close(self) -> None:
        self.lock.release()


def template_record(model) -> dict | None:
    """What a session records of the chat template chosen instead of the model's own."""
    chosen = getattr(model, "template_override", None)
    if chosen is None:
        return None
    if chosen.name:
        return {"name": chosen.name}
    return {k: v for k, v in (("jinja", chosen.jinja), ("file", chosen.file)) if v is not None}


def session_template(session: Session):
    """The ChatTemplate a session was recorded with (None: the model's own)."""
    from engine.templates import ChatTemplate

    table = session.chat_template
    if not table:
        return None
    return ChatTemplate(name=table.get("name"), jinja=table.get("jinja"), file=table.get("file"))


def template_warning(session: Session, model) -> str:
    """A warning when the session was recorded under another chat template ("" if not)."""
    used = template_record(model)
    recorded = {k: v for k, v in (session.chat_template or {}).items() if k != "file"}
    if recorded == {k: v for k, v in (used or {}).items() if k != "file"}:
        return ""
    return (
        "this session was made with another chat template than the one in use now "
        f"({_template_name(session.chat_template)} against {_template_name(used)}); "
        "replies may differ"
    )


def restore(core: Core, session: Session, path: Path) -> list[str]:
    """Put a session's state into a fresh Core; returns warnings to show the user."""
    warnings = []
    if session.model.sha256 and session.model.sha256 != core.steering.model_sha256():
        warnings.append(
            f"this session was made with another model file ({session.model.name}, "
            f"sha256 {session.model.sha256[:12]}…); replies may differ"
        )
    differs = template_warning(session, core.model)
    if differs:
        warnings.append(differs)
    core.sampling = sampling_from(session.sampling)
    core.system = session.system or None
    for ref in session.vectors:
        vec_path = resolve_vector_path(path, ref, library_dir())
        core.steering.load(str(vec_path), ref.name)
    for item in session.steering:
        core.steering.active[item["name"]] = Active.from_record(item)
    core.turns = turns_from_events(session.events)
    return warnings


def _template_name(table: dict | None) -> str:
    if not table:
        return "the model's own"
    return table.get("name") or f"Jinja file {table.get('file', '(inline)')}"


def sampling_from(table: dict) -> Sampling:
    """Known keys only: the file layer keeps unknown ones for writing back."""
    known = {k: table[k] for k in Sampling.__dataclass_fields__ if k in table}
    return Sampling(**known)


def turns_from_events(events: list[Event]) -> list[Turn]:
    """The transcript the events leave behind (undo, clear and regen taken into account)."""
    turns: list[Turn] = []
    for event in events:
        if event.kind == "user":
            turns.append(Turn("user", event.text))
        elif event.kind == "assistant":
            reply = Reply(
                event.text,
                event.tokens or 0,
                event.finish_reason or "stop",
                0.0,
                0.0,
                0,
                0,
                event.seed,
            )
            sampling = sampling_from(event.sampling) if event.sampling else None
            turns.append(Turn("assistant", event.text, reply, sampling, event.steering or []))
        elif event.text.split()[:1] == ["/clear"]:
            turns.clear()
        elif event.text.split()[:1] == ["/undo"]:
            pop_last_exchange(turns)
        elif event.text.split()[:1] == ["/regen"] and turns and turns[-1].role == "assistant":
            turns.pop()
    return turns


def attach(core: Core, path: Path | None) -> list[str]:
    """Record `core` into `path` (a new file in the user data directory when None), resuming
    it first if the file exists. Returns lines to show the user."""
    from repl.session_file import load_session

    path = user_path(path) if path is not None else new_session_path()
    recorder = Recorder(core, path)
    try:
        lines = (
            _resume(core, recorder, load_session(path))
            if path.exists()
            else [f"session: {path} (autosaved)"]
        )
    except BaseException:
        recorder.close()
        raise
    core.recorder = recorder
    return lines


def switch_to(core: Core, path: Path) -> list[str]:
    """Make the session file at `path` the chat's session, or change nothing at all.

    Everything that can fail (reading the file, its lock, its vectors) is done before the
    current session is let go: a mistyped /session load never costs the chat in front of
    the user its recording. Raises SessionFileError, VectorFileError or ValueError."""
    from repl.session_file import load_session

    session = load_session(path)
    recorder = Recorder(core, path)
    before = _State.of(core)
    try:
        _State.empty(core)
        lines = _resume(core, recorder, session)
    except BaseException:
        before.put_back(core)
        recorder.close()
        raise
    if before.recorder is not None:
        before.recorder.close()
    core.recorder = recorder
    core.regen_backup = None
    core.comparison = None
    core.ctx.reset()
    return lines


def _resume(core: Core, recorder: Recorder, session: Session) -> list[str]:
    lines = restore(core, session, recorder.path)
    recorder.created, recorder.events = session.created, list(session.events)
    recorder.extra = dict(session.extra)
    turns = sum(t.role == "assistant" for t in core.turns)
    return [*lines, f"resumed session {recorder.path} ({turns} replies)"]


@dataclass
class _State:
    """What a session load replaces, kept to put back if the load fails."""

    turns: list[Turn]
    active: dict
    vectors: dict
    sampling: Sampling
    system: str | None
    recorder: Recorder | None

    @classmethod
    def of(cls, core: Core) -> _State:
        steering = core.steering
        return cls(
            list(core.turns),
            dict(steering.active),
            dict(steering.vectors),
            core.sampling,
            core.system,
            core.recorder,
        )

    @staticmethod
    def empty(core: Core) -> None:
        core.turns = []
        core.steering.active.clear()
        core.steering.vectors.clear()

    def put_back(self, core: Core) -> None:
        core.turns = self.turns
        core.steering.active.clear()
        core.steering.active.update(self.active)
        core.steering.vectors.clear()
        core.steering.vectors.update(self.vectors)
        core.sampling = self.sampling
        core.system = self.system
        core.recorder = self.recorder


def detach(core: Core) -> None:
    if core.recorder is not None:
        core.recorder.close()
        core.recorder = None
