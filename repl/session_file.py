"""Session files: a conversation, its model, settings, vectors and steering, as TOML.

This is the pure file layer: reading, validating, writing, locking and listing session files.
It knows nothing of the engine or the front ends, so it can be tested without a model and
reused by `steer replay`. The format is documented in docs/session-format.md.

Every error a user can cause is a SessionFileError whose message is one line: the file, the
line when known, what is wrong and how to fix it. Files are written with tomli-w and read with
tomllib; every write is atomic, so a crash leaves either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import re
import stat
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from time import sleep
from typing import Any, NoReturn

import tomli_w

FORMAT_VERSION = 1
MAX_BYTES = 50 * 1024 * 1024  # far beyond any real chat; refuses to parse a mistaken huge file
EVENT_KINDS = ("user", "assistant", "command")
FINISH_REASONS = ("stop", "length", "interrupted", "context_full")
ASSISTANT_ONLY = (
    "tokens",
    "finish_reason",
    "interrupted",
    "seed",
    "steering",
    "sampling",
    "system",
)
_EXAMPLE_TIME = "2026-11-29T10:00:00+00:00"
FORMAT_DOC = "see docs/session-format.md"
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_AT_END = " (at end of document)"
MAX_DEPTH = 64
_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"[^"\n]*"|'[^'\n]*')[ \t]*"""
# Anchored where a key can start and possessive (++), so it stays linear on any text.
_DEEP_KEY = re.compile(
    rf"(?:^|(?<=[\[{{,]))[ \t]*(?:{_KEY_PART}\.[ \t]*){{{MAX_DEPTH},}}+{_KEY_PART}[=\]]",
    re.MULTILINE,
)
_TOML_POSITION = re.compile(r"^(?P<reason>.*?)\s*\(at line (?P<line>\d+), column (?P<col>\d+)\)$")


class SessionFileError(Exception):
    """A session file that cannot be read, written or used; the message is one line."""


# ---- the data --------------------------------------------------------------------------------


def utc_now() -> str:
    """The timestamp format of `created` / `updated`: ISO 8601, UTC, whole seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class ModelInfo:
    """The model a session was made with; sha256 lets replay notice a different file."""

    path: str
    name: str
    sha256: str
    extra: dict = field(default_factory=dict)  # unknown keys, written back unchanged


@dataclass
class VectorRef:
    """A vector file the session uses. `path` is relative to the session file's folder, or
    absolute inside the user library; resolve it with resolve_vector_path, never directly."""

    name: str
    path: str
    sha256: str
    extra: dict = field(default_factory=dict)


@dataclass
class Event:
    """One entry of the ordered transcript: a user message, an assistant reply, or a command.

    For "command", `text` is the whole command line as typed, e.g. '/steer terse 0.5'.
    The other fields belong to assistant replies only: what replay needs to make the same reply
    again (sampling, seed, steering, system prompt) and what the user saw (tokens, finish).
    """

    kind: str
    text: str = ""
    tokens: int | None = None
    finish_reason: str | None = None  # stop | length | interrupted | context_full
    seed: int | None = None  # the seed the reply used; None when greedy
    steering: list[dict] | None = None  # [{"name", "strength", "layers": [a, b]}]
    sampling: dict | None = None  # temperature, top_p, top_k, max_tokens, seed (absent = random)
    system: str | None = None  # the system prompt in force ("" when none)
    extra: dict = field(default_factory=dict)

    @property
    def interrupted(self) -> bool:
        return self.finish_reason == "interrupted"


@dataclass(kw_only=True)
class Session:
    """Everything needed to continue or reproduce a conversation."""

    model: ModelInfo
    sampling: dict  # the current settings; "seed" absent or None means a random seed per reply
    system: str = ""  # "" = no system prompt
    vectors: list[VectorRef] = field(default_factory=list)
    steering: list[dict] = field(default_factory=list)  # the steering active now
    events: list[Event] = field(default_factory=list)
    version: int = FORMAT_VERSION
    created: str = field(default_factory=utc_now)
    updated: str = field(default_factory=utc_now)
    extra: dict = field(default_factory=dict)  # unknown top-level keys, kept and written back

    def touch(self) -> None:
        """Mark the session as changed now (recent_sessions orders by `updated`)."""
        self.updated = utc_now()

    @property
    def assistant_turns(self) -> int:
        return sum(1 for e in self.events if e.kind == "assistant")

    def first_user_message(self) -> str:
        return next((e.text for e in self.events if e.kind == "user"), "")


# ---- writing ---------------------------------------------------------------------------------


def to_toml(session: Session) -> str:
    """The session as TOML text. TOML has no null, so None values are left out."""
    doc: dict[str, Any] = {
        "format_version": session.version,
        "created": session.created,
        "updated": session.updated,
        "system": session.system,
    }
    doc["model"] = _with_extra(
        {"path": session.model.path, "name": session.model.name, "sha256": session.model.sha256},
        session.model.extra,
        "model",
    )
    doc["sampling"] = _drop_none(session.sampling)
    doc["vectors"] = [
        _with_extra({"name": v.name, "path": v.path, "sha256": v.sha256}, v.extra, "vectors[]")
        for v in session.vectors
    ]
    doc["steering"] = [_drop_none(s) for s in session.steering]
    doc["events"] = [_event_doc(e) for e in session.events]
    _merge_extra(doc, session.extra, "the session")
    # Multi-line strings keep long replies readable, but tomli-w writes "\r\n" inside them as
    # "\n"; a session holding any "\r\n" is written with escaped one-line strings instead.
    return tomli_w.dumps(doc, multiline_strings=not _has_crlf(doc))


def save_session(session: Session, path: str | os.PathLike[str]) -> None:
    """Write the session atomically: a crash or error at any moment leaves the old file or the
    new one, never a mix. The text is read back first, so a file steer cannot load is never
    written. Does not change `updated`; call session.touch() for that."""
    target = Path(path)
    text = to_toml(session)
    try:
        from_toml(text, "the session in memory")
    except SessionFileError as exc:
        raise SessionFileError(f"not saving {target}: {exc}; nothing was written") from None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise SessionFileError(
            f"cannot save session {target}: {exc.strerror} in {target.parent}; "
            "save it elsewhere with /session save PATH"
        ) from None
    tmp = Path(tmp_name)
    try:
        _write_synced(fd, text.encode("utf-8"))
        os.chmod(tmp, _mode_for(target))
        _test_pause(target)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise SessionFileError(
                f"cannot save session {target}: {exc.strerror}; the previous file is unchanged"
            ) from None
        raise
    _fsync_dir(target.parent)


def _test_pause(target: Path) -> None:
    """Crash tests only (tests/test_crash.py): with STEER_TEST_SAVE_PAUSE=SECONDS, stop between
    writing the temporary file and renaming it, and say so, so a test can kill steer there."""
    pause = os.environ.get("STEER_TEST_SAVE_PAUSE")
    if pause:
        os.write(2, f"steer-test: about to rename {target.name}\n".encode())
        sleep(float(pause))


def remove_stale_temp_files(folder: Path, name: str | None = None) -> None:
    """Remove the temporary files a killed steer left while saving `name` (any file when
    None) in `folder`. Only the holder of the session's lock may call this: nobody else
    writes the session or its vectors folder."""
    pattern = f".{glob_escape(name)}.*.tmp" if name else ".*.tmp"
    with contextlib.suppress(OSError):
        for tmp in folder.glob(pattern):
            with contextlib.suppress(OSError):
                tmp.unlink()


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _event_doc(event: Event) -> dict:
    doc: dict[str, Any] = {"kind": event.kind, "text": event.text}
    if event.kind == "assistant":
        doc["tokens"] = event.tokens
        doc["finish_reason"] = event.finish_reason
        doc["interrupted"] = event.interrupted  # redundant, but what a reader looks for
        doc["seed"] = event.seed
        doc["system"] = event.system
        doc["steering"] = (
            None if event.steering is None else [_drop_none(s) for s in event.steering]
        )
        doc["sampling"] = None if event.sampling is None else _drop_none(event.sampling)
    return _with_extra(_drop_none(doc), event.extra, "events[]")


def _drop_none(table: dict) -> dict:
    return {k: v for k, v in table.items() if v is not None}


def _with_extra(known: dict, extra: dict, what: str) -> dict:
    _merge_extra(known, extra, what)
    return known


def _merge_extra(known: dict, extra: dict, what: str) -> None:
    clash = sorted(set(known) & set(extra))
    if clash:
        raise ValueError(f"extra keys of {what} clash with known fields: {', '.join(clash)}")
    known.update(_drop_none(extra))


def _has_crlf(value: object) -> bool:
    if isinstance(value, str):
        return "\r\n" in value
    if isinstance(value, dict):
        return any(_has_crlf(k) or _has_crlf(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_crlf(v) for v in value)
    return False


def _write_synced(fd: int, data: bytes) -> None:
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is; some platforms cannot open a
    # directory for fsync, and the file itself is already safely on disk there.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _mode_for(target: Path) -> int:
    """Keep an existing file's permissions; new files get the usual rw-r--r--."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        return 0o644


# ---- reading ---------------------------------------------------------------------------------


def load_session(path: str | os.PathLike[str]) -> Session:
    """Read and validate a session file; any problem is a SessionFileError."""
    where = str(path)
    return from_toml(_decode(where, _read_bytes(where)), where)


def from_toml(text: str, where: str) -> Session:
    """Parse and validate session TOML; `where` names the file in error messages."""
    if not text.strip():
        raise SessionFileError(f"{where}: empty session file; delete it or start a new session")
    _check_nesting(where, text)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SessionFileError(_syntax_message(where, text, exc)) from None
    except RecursionError:  # arrays or inline tables nested hundreds deep
        raise SessionFileError(_too_deep(where)) from None
    if not doc:
        raise SessionFileError(
            f"{where}: empty session file (no keys, only comments); "
            "delete it or start a new session"
        )
    return _session(_Fields(where), doc)


def _check_nesting(where: str, text: str) -> None:
    """Refuse absurdly long dotted keys before tomllib sees them: its memory grows with the
    square of their depth (a 200 KB file of `a.b.b.b...` takes gigabytes)."""
    if _DEEP_KEY.search(text):
        raise SessionFileError(_too_deep(where))


def _too_deep(where: str) -> str:
    return (
        f"{where}: tables or arrays nested more than {MAX_DEPTH} deep; a session file is "
        f"never nested like that, so this is not one ({FORMAT_DOC})"
    )


def _read_bytes(where: str) -> bytes:
    try:
        info = os.stat(where)
    except FileNotFoundError:
        raise SessionFileError(
            f"session file {where} does not exist; check the path (/session list shows recent "
            "sessions)"
        ) from None
    except OSError as exc:
        raise SessionFileError(f"cannot read session file {where}: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise SessionFileError(f"{where} is a directory; give the path of a session .toml file")
    if not stat.S_ISREG(info.st_mode):
        raise SessionFileError(f"{where} is not a regular file, so not a session file")
    _check_size(where, info.st_size)
    try:
        with open(where, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise SessionFileError(f"cannot read session file {where}: {exc.strerror}") from None
    _check_size(where, len(data))  # it may have grown since stat
    return data


def _check_size(where: str, size: int) -> None:
    if size > MAX_BYTES:
        raise SessionFileError(
            f"{where} is {size / 2**20:.1f} MB; steer reads session files up to "
            f"{MAX_BYTES // 2**20} MB, so this is not a session file (or start a new session)"
        )


def _decode(where: str, data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SessionFileError(
            f"{where}, line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); "
            "session files are UTF-8 TOML, save it as UTF-8"
        ) from None
    return text.removeprefix("\ufeff")  # a byte-order mark some editors add


def _syntax_message(where: str, text: str, exc: tomllib.TOMLDecodeError) -> str:
    # Python 3.14 gives lineno/colno; 3.11-3.13 only put them in the message.
    message = str(exc.args[0] if exc.args else exc)
    line, col = getattr(exc, "lineno", None), getattr(exc, "colno", None)
    reason = getattr(exc, "msg", None) or message
    match = _TOML_POSITION.match(message)
    if match:
        reason = match["reason"]
        line, col = line or int(match["line"]), col or int(match["col"])
    elif message.endswith(_AT_END):
        reason = message.removesuffix(_AT_END)
        line = text.count("\n") + 1
        col = len(text) - text.rfind("\n")
    at = f", line {line}, column {col}" if line else ""
    reason = reason[:1].lower() + reason[1:]
    return f"{where}{at}: not valid TOML ({reason}); fix the file there ({FORMAT_DOC})"


# ---- validation ------------------------------------------------------------------------------


_TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "float"),
    (str, "string"),
    (list, "array"),
    (dict, "table"),
    (datetime, "date-time"),
    (date, "date"),
    (time, "time"),
)


def _type_name(value: object) -> str:
    return next((name for t, name in _TYPE_NAMES if isinstance(value, t)), type(value).__name__)


class _Fields:
    """Typed access to a parsed TOML table: every failure names the field and the file."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, what: str, fix: str = f"correct it in the file ({FORMAT_DOC})") -> NoReturn:
        raise SessionFileError(f"{self.where}: {what}; {fix}")

    def wrong(self, name: str, expected: str, value: object) -> NoReturn:
        got = _type_name(value)
        short = isinstance(value, int | float | str) and len(repr(value)) < 40
        shown = f" ({value!r})" if short else ""
        self.fail(f"{name} must be {expected}, got {got}{shown}")

    def get(
        self,
        table: dict,
        key: str,
        prefix: str,
        check: Callable[[str, Any], Any],
        default: Any = ...,
    ) -> Any:
        """table[key] checked by `check(name, value)`; `default` ... means required."""
        name = f"{prefix}{key}"
        if key not in table:
            if default is ...:
                self.fail(f"{name} is missing", f"add it ({FORMAT_DOC})")
            return default
        return check(name, table[key])

    def string(self, name: str, value: object) -> str:
        if not isinstance(value, str):
            self.wrong(name, "a string", value)
        return value

    def word(self, name: str, value: object) -> str:
        """A non-empty single-line string: names and paths."""
        text = self.string(name, value)
        if not text or any(c in text for c in "\n\r\x00"):
            self.fail(f"{name} must be a non-empty one-line string, got {text!r}")
        return text

    def integer(self, name: str, value: object, low: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.wrong(name, "an integer", value)
        if low is not None and value < low:
            self.fail(f"{name} must be at least {low}, got {value}")
        return value

    def number(self, name: str, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.wrong(name, "a number", value)
        if not math.isfinite(value):
            self.fail(f"{name} must be a finite number, got {value}")
        return float(value)

    def boolean(self, name: str, value: object) -> bool:
        if not isinstance(value, bool):
            self.wrong(name, "true or false", value)
        return value

    def table(self, name: str, value: object) -> dict:
        if not isinstance(value, dict):
            self.wrong(name, "a table", value)
        return value

    def tables(self, name: str, value: object) -> list[dict]:
        if not isinstance(value, list):
            self.wrong(name, "an array of tables", value)
        for i, item in enumerate(value):
            self.table(f"{name}[{i}]", item)
        return value

    def sha256(self, name: str, value: object) -> str:
        text = self.string(name, value)
        if not _HEX64.fullmatch(text):
            self.fail(f"{name} must be a sha256 digest (64 hex digits), got {text!r}")
        return text.lower()

    def timestamp(self, name: str, value: object) -> str:
        if isinstance(value, datetime):  # a TOML date-time, written by hand
            return value.isoformat()
        text = self.string(name, value)
        try:
            datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{name} must be an ISO 8601 time like {_EXAMPLE_TIME}, got {text!r}")
        return text

    def choice(self, name: str, value: object, choices: tuple[str, ...]) -> str:
        text = self.string(name, value)
        if text not in choices:
            self.fail(f"{name} must be one of {', '.join(choices)}, got {text!r}")
        return text


def _extra(table: dict, known: tuple[str, ...]) -> dict:
    return {k: v for k, v in table.items() if k not in known}


_TOP_KEYS = (
    "format_version",
    "created",
    "updated",
    "system",
    "model",
    "sampling",
    "vectors",
    "steering",
    "events",
)


def _session(f: _Fields, doc: dict) -> Session:
    version = _version(f, doc)
    vectors = f.get(doc, "vectors", "", lambda n, v: _vectors(f, n, v), [])
    steering = f.get(doc, "steering", "", lambda n, v: _steering(f, n, v), [])
    _check_steering_vectors(f, steering, vectors)
    return Session(
        version=version,
        created=f.get(doc, "created", "", f.timestamp),
        updated=f.get(doc, "updated", "", f.timestamp),
        system=f.get(doc, "system", "", f.string, ""),
        model=f.get(doc, "model", "", lambda n, v: _model(f, n, v)),
        sampling=f.get(doc, "sampling", "", lambda n, v: _sampling(f, n, v)),
        vectors=vectors,
        steering=steering,
        events=f.get(doc, "events", "", lambda n, v: _events(f, n, v), []),
        extra=_extra(doc, _TOP_KEYS),
    )


def _version(f: _Fields, doc: dict) -> int:
    version = f.get(doc, "format_version", "", f.integer)
    if version > FORMAT_VERSION:
        f.fail(
            f"made by a newer steer: version {version}, this steer reads {FORMAT_VERSION}",
            "update steer to open it",
        )
    if version < 1:
        f.fail(f"format_version must be {FORMAT_VERSION}, got {version}")
    return version


def _model(f: _Fields, name: str, value: object) -> ModelInfo:
    table = f.table(name, value)
    return ModelInfo(
        path=f.get(table, "path", "model.", f.word),
        name=f.get(table, "name", "model.", f.string),
        sha256=f.get(table, "sha256", "model.", f.sha256),
        extra=_extra(table, ("path", "name", "sha256")),
    )


def _sampling(f: _Fields, name: str, value: object) -> dict:
    """The four settings are required; seed is optional (absent = a random seed each reply).
    Only impossible values are refused here; the chat applies its own limits on restore."""
    table = f.table(name, value)
    prefix = f"{name}."
    out = dict(table)  # unknown keys stay
    out["temperature"] = f.get(table, "temperature", prefix, _at_least(f, 0.0))
    out["top_p"] = f.get(table, "top_p", prefix, _probability(f))
    out["top_k"] = f.get(table, "top_k", prefix, lambda n, v: f.integer(n, v, 0))
    out["max_tokens"] = f.get(table, "max_tokens", prefix, lambda n, v: f.integer(n, v, 1))
    seed = f.get(table, "seed", prefix, lambda n, v: f.integer(n, v, 0), None)
    out.pop("seed", None)
    if seed is not None:
        out["seed"] = seed
    return out


def _at_least(f: _Fields, low: float) -> Callable[[str, Any], float]:
    def check(name: str, value: object) -> float:
        number = f.number(name, value)
        if number < low:
            f.fail(f"{name} must be at least {low:g}, got {number:g}")
        return number

    return check


def _probability(f: _Fields) -> Callable[[str, Any], float]:
    def check(name: str, value: object) -> float:
        number = f.number(name, value)
        if not 0.0 < number <= 1.0:
            f.fail(f"{name} must be in (0, 1], got {number:g}")
        return number

    return check


def _vectors(f: _Fields, name: str, value: object) -> list[VectorRef]:
    refs = []
    for i, table in enumerate(f.tables(name, value)):
        prefix = f"{name}[{i}]."
        ref = VectorRef(
            name=f.get(table, "name", prefix, f.word),
            path=f.get(table, "path", prefix, f.word),
            sha256=f.get(table, "sha256", prefix, f.sha256),
            extra=_extra(table, ("name", "path", "sha256")),
        )
        if any(r.name == ref.name for r in refs):
            f.fail(f"{prefix}name {ref.name!r} is used by two vectors", "rename or remove one")
        refs.append(ref)
    return refs


def _steering(f: _Fields, name: str, value: object) -> list[dict]:
    entries: list[dict] = []
    for i, table in enumerate(f.tables(name, value)):
        prefix = f"{name}[{i}]."
        entry = dict(table)
        entry["name"] = f.get(table, "name", prefix, f.word)
        entry["strength"] = f.get(table, "strength", prefix, f.number)
        entry["layers"] = f.get(table, "layers", prefix, lambda n, v: _layers(f, n, v))
        if any(e["name"] == entry["name"] for e in entries):
            f.fail(f"{prefix}name {entry['name']!r} is steered twice", "keep one entry")
        entries.append(entry)
    return entries


def _layers(f: _Fields, name: str, value: object) -> list[int]:
    if not isinstance(value, list) or len(value) != 2:
        f.wrong(name, "an array of two block numbers [first, last]", value)
    first, last = (f.integer(f"{name}[{i}]", v, 1) for i, v in enumerate(value))
    if first > last:
        f.fail(f"{name} must be [first, last] with first <= last, got [{first}, {last}]")
    return [first, last]


def _check_steering_vectors(f: _Fields, steering: list[dict], vectors: list[VectorRef]) -> None:
    """Active steering must name a vector the session keeps a file of, or resume would fail."""
    known = {v.name for v in vectors}
    for i, entry in enumerate(steering):
        if entry["name"] not in known:
            f.fail(
                f"steering[{i}] steers with {entry['name']!r}, which is not among [[vectors]]",
                "add its [[vectors]] entry or remove the steering",
            )


def _events(f: _Fields, name: str, value: object) -> list[Event]:
    return [_event(f, f"{name}[{i}].", t) for i, t in enumerate(f.tables(name, value))]


def _event(f: _Fields, prefix: str, table: dict) -> Event:
    kind = f.get(table, "kind", prefix, lambda n, v: f.choice(n, v, EVENT_KINDS))
    text = f.get(table, "text", prefix, f.string)
    extra = _extra(table, ("kind", "text", *ASSISTANT_ONLY))
    if kind != "assistant":
        for key in ASSISTANT_ONLY:
            if key in table:
                f.fail(
                    f"{prefix}{key} is only for assistant events, this one is {kind!r}", "remove it"
                )
        if kind == "command" and not text.startswith("/"):
            f.fail(f"{prefix}text of a command must start with '/', got {text[:40]!r}")
        return Event(kind=kind, text=text, extra=extra)
    return _assistant(f, prefix, table, text, extra)


def _assistant(f: _Fields, prefix: str, table: dict, text: str, extra: dict) -> Event:
    event = Event(
        kind="assistant",
        text=text,
        tokens=f.get(table, "tokens", prefix, lambda n, v: f.integer(n, v, 0)),
        finish_reason=f.get(
            table, "finish_reason", prefix, lambda n, v: f.choice(n, v, FINISH_REASONS)
        ),
        seed=f.get(table, "seed", prefix, lambda n, v: f.integer(n, v, 0), None),
        steering=f.get(table, "steering", prefix, lambda n, v: _steering(f, n, v)),
        sampling=f.get(table, "sampling", prefix, lambda n, v: _sampling(f, n, v)),
        system=f.get(table, "system", prefix, f.string),
        extra=extra,
    )
    flag = f.get(table, "interrupted", prefix, f.boolean, None)
    if flag is not None and flag != event.interrupted:
        f.fail(
            f"{prefix}interrupted = {str(flag).lower()} contradicts finish_reason "
            f"{event.finish_reason!r}",
            "make them agree",
        )
    return event


# ---- vector files ----------------------------------------------------------------------------


def vectors_dir_for(session_path: str | os.PathLike[str]) -> Path:
    """Where vectors built in a session and never saved by the user are kept: "<stem>.vectors/"
    beside "<stem>.toml", so no session ever refers to a vector that exists only in memory.
    Only names the folder; the caller creates it when it has something to put there."""
    path = Path(session_path)
    name = f"{path.name}.vectors" if path.suffix == ".vectors" else f"{path.stem}.vectors"
    return path.with_name(name)


def resolve_vector_path(
    session_path: str | os.PathLike[str],
    ref: VectorRef,
    library_dir: str | os.PathLike[str] | None,
) -> Path:
    """The real path of a session's vector file, refusing any that escapes.

    A session file may come from someone else, so it must not make steer read files anywhere:
    a relative path is resolved against the session's folder and, symlinks followed, must stay
    inside that folder or the user library; an absolute path must lie inside the library.
    """
    session = Path(session_path)
    folder = session.absolute().parent.resolve()
    library = Path(library_dir).absolute().resolve() if library_dir is not None else None
    raw = Path(ref.path)
    if raw.is_absolute():
        candidate, roots = raw, [library]
    else:
        candidate, roots = folder / raw, [folder, library]
    try:
        resolved = candidate.resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # symlink loop, NUL byte
        raise SessionFileError(
            f"{session}: vector {ref.name!r} path {ref.path!r} cannot be resolved ({exc})"
        ) from None
    if not any(root is not None and resolved.is_relative_to(root) for root in roots):
        allowed = "the user library"
        if not raw.is_absolute():
            allowed = "the session's folder and " + allowed
        raise SessionFileError(
            f"{session}: vector {ref.name!r} path {ref.path!r} points outside {allowed}: "
            "refused; copy the file beside the session and refer to it by a relative path"
        )
    if not resolved.is_file():
        raise SessionFileError(
            f"{session}: vector {ref.name!r} file {ref.path!r} is missing ({resolved}); "
            "put the file back or remove the vector from the session"
        )
    return resolved


# ---- locking ---------------------------------------------------------------------------------


class SessionLock:
    """Keeps two steer processes from writing the same session file at once.

    An advisory flock on "<session>.lock" beside the file. The kernel drops it when the process
    dies, however it dies, so a crashed steer never leaves a session locked. The lock file
    holds the owner's pid, for the message only.
    """

    def __init__(self, session_path: str | os.PathLike[str]) -> None:
        self.session_path = Path(session_path)
        self.path = self.session_path.with_name(f"{self.session_path.name}.lock")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise SessionFileError naming the process that has it."""
        if self._fd is not None:
            return
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                pid = _read_pid(fd)
                os.close(fd)
                if isinstance(exc, BlockingIOError):
                    raise SessionFileError(
                        f"session {self.session_path} is open in another steer (pid {pid}); "
                        "close it there or use another file"
                    ) from None
                raise SessionFileError(
                    f"cannot lock session {self.session_path}: {exc.strerror}"
                ) from None
            if self._still_linked(fd):
                break
            os.close(fd)  # the owner removed it while we waited: lock the new file instead
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the lock; the lock file goes too (removed while still held, see acquire)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> SessionLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise SessionFileError(
                f"cannot create lock file {self.path}: {exc.strerror}; "
                "the session's folder must be writable"
            ) from None

    def _still_linked(self, fd: int) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            return False


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


# ---- listing ---------------------------------------------------------------------------------


def recent_sessions(
    folder: str | os.PathLike[str], limit: int = 20
) -> list[tuple[Path, str, str, int]]:
    """(path, updated, first user message, assistant turns) of the sessions in `folder`,
    newest first. Files that are not valid sessions are skipped, not reported: a listing
    must not fail because of one bad file."""
    rows = []
    for path, session in _loadable(Path(folder)):
        first = " ".join(session.first_user_message().split())
        rows.append((path, session.updated, _shorten(first, 60), session.assistant_turns))
    rows.sort(key=lambda row: (_instant(row[1]), str(row[0])), reverse=True)
    return rows[:limit]


def _loadable(folder: Path) -> Iterator[tuple[Path, Session]]:
    try:
        paths = sorted(folder.glob("*.toml"))
    except OSError:
        return
    for path in paths:
        with contextlib.suppress(SessionFileError):
            yield path, load_session(path)


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _instant(stamp: str) -> datetime:
    moment = datetime.fromisoformat(stamp)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
