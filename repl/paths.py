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


def history_file() -> Path:
    return data_dir() / "history"
