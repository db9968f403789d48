"""Session files: a conversation, its model, settings, vectors and steering, as TOML.

This is the pure file layer: reading and writing session files (the data is in
`repl/session_data.py`, validation in `repl/session_validate.py`, vector paths in
`repl/session_paths.py`, the lock in `repl/session_lock.py`, listing in
`repl/session_list.py`). It knows nothing of the engine or the front ends, so it can be tested
without a model and reused by `steer replay`. The format is documented in
docs/session-format.md.

Every error a user can cause is a SessionFileError whose message is one line: the file, the
line when known, what is wrong and how to fix it. Files are written with tomli-w and read with
tomllib; every write is atomic (vectors/atomic.py), so a crash leaves either the old file or
the new one.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from repl.session_data import (
    ASSISTANT_ONLY,
    EVENT_KINDS,
    FINISH_REASONS,
    FORMAT_DOC,
    FORMAT_VERSION,
    Event,
    ModelInfo,
    Session,
    SessionFileError,
    VectorRef,
    utc_now,
)
from repl.session_validate import session_from_doc
from vectors.atomic import TempFileError, write_atomic

__all__ = [
    "ASSISTANT_ONLY",
    "EVENT_KINDS",
    "FINISH_REASONS",
    "FORMAT_VERSION",
    "Event",
    "ModelInfo",
    "Session",
    "SessionFileError",
    "VectorRef",
    "from_toml",
    "load_session",
    "remove_stale_temp_files",
    "save_session",
    "to_toml",
    "utc_now",
]

MAX_BYTES = 50 * 1024 * 1024  # far beyond any real chat; refuses to parse a mistaken huge file
_AT_END = " (at end of document)"
MAX_DEPTH = 64
_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"[^"\n]*"|'[^'\n]*')[ \t]*"""
# Anchored where a key can start, so it stays linear on any text. No possessive quantifier:
# Python 3.11.2's re (Debian 12's python3) silently never matches `{64,}+`, and tomllib then
# needs gigabytes for the file this guards against.
_DEEP_KEY = re.compile(
    rf"(?:^|(?<=[\[{{,]))[ \t]*(?:{_KEY_PART}\.[ \t]*){{{MAX_DEPTH},}}{_KEY_PART}[=\]]",
    re.MULTILINE,
)
_TOML_POSITION = re.compile(r"^(?P<reason>.*?)\s*\(at line (?P<line>\d+), column (?P<col>\d+)\)$")


# ---- writing ---------------------------------------------------------------------------------


def to_toml(session: Session) -> str:
    """The session as TOML text. TOML has no null, so None values are left out."""
    doc: dict[str, Any] = {
        # a chosen chat template needs a steer that knows it (version 3)
        "format_version": max(session.version, 3) if session.chat_template else session.version,
        "created": session.created,
        "updated": session.updated,
        "system": session.system,
    }
    model = session.model
    doc["model"] = _with_extra(
        _drop_none(
            {
                "name": model.name,
                "file": model.file,
                "package": model.package,
                "hf": model.hf,
                "path": model.path,
                "sha256": model.sha256,
            }
        ),
        model.extra,
        "model",
    )
    if session.chat_template:
        doc["chat_template"] = _drop_none(dict(session.chat_template))
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
    data = text.encode("utf-8")
    try:
        write_atomic(target, lambda tmp: _write_bytes(tmp, data))
    except TempFileError as exc:
        raise SessionFileError(
            f"cannot save session {target}: {exc.strerror} in {target.parent}; "
            "save it elsewhere with /session save PATH"
        ) from None
    except OSError as exc:
        raise SessionFileError(
            f"cannot save session {target}: {exc.strerror}; the previous file is unchanged"
        ) from None


def _write_bytes(tmp: Path, data: bytes) -> None:
    with open(tmp, "wb") as f:
        f.write(data)


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
    return session_from_doc(where, doc)


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
