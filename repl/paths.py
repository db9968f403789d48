"""Where steer keeps the user's things: history now, vectors and sessions later."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def data_dir() -> Path:
    """The user data directory; STEER_DATA_DIR overrides it (tests, portable installs)."""
    override = os.environ.get("STEER_DATA_DIR")
    path = (
        Path(override) if override else Path(platformdirs.user_data_dir("steer", appauthor=False))
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Where steer keeps what it can rebuild (projection adapters). STEER_CACHE_DIR overrides
    it; with STEER_DATA_DIR set (tests, portable installs) it sits inside that folder."""
    override = os.environ.get("STEER_CACHE_DIR")
    if override:
        path = Path(override)
    elif os.environ.get("STEER_DATA_DIR"):
        path = data_dir() / "cache"
    else:
        path = Path(platformdirs.user_cache_dir("steer", appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def history_file() -> Path:
    return data_dir() / "history"


class PathError(ValueError):
    """A path the user typed that cannot even be spelled out; the message is one line."""


def user_path(raw: str | os.PathLike[str]) -> Path:
    """A path as the user means it: '~' and '~user' expanded. '~nosuchuser/x' (or '~' with no
    home folder) is a PathError saying so, never a RuntimeError from deep inside a command."""
    try:
        return Path(raw).expanduser()
    except RuntimeError:
        head = str(raw).split("/", 1)[0]
        reason = f"there is no user {head[1:]!r}" if len(head) > 1 else "there is no home folder"
        raise PathError(
            f"cannot expand {head!r} in {str(raw)!r}: {reason}; write the path in full "
            f"(./{raw} for a file named so)"
        ) from None
