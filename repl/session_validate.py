"""Checking a parsed session file: every field's type and range, one clear line per problem.

A session file may come from anyone, so nothing in it is trusted: each failure is a
SessionFileError naming the file, the field, what was wrong and how to fix it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import date, datetime, time
from typing import Any, NoReturn

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
)

# repl.steering.MODES (not imported: it loads llama.cpp)
_MODES = ("add", "project", "prompt", "messages", "content")
_EXAMPLE_TIME = "2026-11-29T10:00:00+00:00"
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def session_from_doc(where: str, doc: dict) -> Session:
    """The Session a parsed TOML document describes; `where` names the file in errors."""
    return _session(_Fields(where), doc)


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
    "chat_template",
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
        model=f.get(doc, "model", "", lambda n, v: _model(f, n, v, version)),
        sampling=f.get(doc, "sampling", "", lambda n, v: _sampling(f, n, v)),
        vectors=vectors,
        steering=steering,
        events=f.get(doc, "events", "", lambda n, v: _events(f, n, v), []),
        chat_template=f.get(doc, "chat_template", "", lambda n, v: _template(f, n, v), None),
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
        f.fail(f"format_version must be 1 to {FORMAT_VERSION}, got {version}")
    return version


_MODEL_KEYS = ("path", "name", "sha256", "file", "package", "hf")


def _model(f: _Fields, name: str, value: object, version: int) -> ModelInfo:
    """Version 1 files always name a path; later ones a path, a file name or a package."""
    table = f.table(name, value)
    optional = None if version >= 2 else ...
    info = ModelInfo(
        path=f.get(table, "path", "model.", f.word, optional),
        name=f.get(table, "name", "model.", f.string),
        sha256=f.get(table, "sha256", "model.", f.sha256),
        file=f.get(table, "file", "model.", f.word, None),
        package=f.get(table, "package", "model.", f.word, None),
        hf=f.get(table, "hf", "model.", f.word, None),
        extra=_extra(table, _MODEL_KEYS),
    )
    if not (info.path or info.file or info.package or info.hf):
        f.fail("model needs a path, file or package to be found by", f"add one ({FORMAT_DOC})")
    return info


def _template(f: _Fields, name: str, value: object) -> dict:
    """A built-in template's `name`, or a Jinja template's text (`jinja`, `file`): one of."""
    table = f.table(name, value)
    out = dict(table)  # unknown keys stay
    out["name"] = f.get(table, "name", f"{name}.", f.word, None)
    out["jinja"] = f.get(table, "jinja", f"{name}.", f.string, None)
    out["file"] = f.get(table, "file", f"{name}.", f.word, None)
    if (out["name"] is None) == (out["jinja"] is None):
        f.fail(f"{name} needs exactly one of name (a built-in template) and jinja (its text)")
    return {k: v for k, v in out.items() if v is not None}


def _sampling(f: _Fields, name: str, value: object) -> dict:
    """The four settings are required; seed, dry and dry_allowed are optional (absent = a
    random seed each reply, no DRY penalty, llama.cpp's allowed length).
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
    if "dry" in table:  # absent = off
        out["dry"] = f.get(table, "dry", prefix, _at_least(f, 0.0))
    if "dry_allowed" in table:  # absent = llama.cpp's 2
        out["dry_allowed"] = f.get(table, "dry_allowed", prefix, lambda n, v: f.integer(n, v, 1))
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
        mode = f.get(table, "mode", prefix, lambda n, v: f.choice(n, v, _MODES), None)
        if mode is not None:
            entry["mode"] = mode
        if "targets" in table:
            entry["targets"] = f.get(table, "targets", prefix, lambda n, v: _targets(f, n, v))
        if any(e["name"] == entry["name"] for e in entries):
            f.fail(f"{prefix}name {entry['name']!r} is steered twice", "keep one entry")
        entries.append(entry)
    return entries


def _targets(f: _Fields, name: str, value: object) -> list[str]:
    """Project mode's weights: a non-empty array of known targets (vectors/lora.py TARGETS)."""
    known = ("ffn_down", "attn_output")
    if not isinstance(value, list) or not value or any(v not in known for v in value):
        f.wrong(name, f"a non-empty array of {', '.join(repr(k) for k in known)}", value)
    return [str(v) for v in value]


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
