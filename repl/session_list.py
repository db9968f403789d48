"""Listing the sessions in a folder, newest first, for /session list."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from repl.session_data import Session, SessionFileError
from repl.session_file import load_session


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
