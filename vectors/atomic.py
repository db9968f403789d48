"""Atomic file replacement, the one way steer writes a file the user keeps.

A crash, a full disk or an error at any moment leaves either the old file or the new one under
the real name, never a mix: the new content goes to a hidden temporary file beside the target
(".NAME.*.tmp", which a later steer may clear), is fsynced, takes the old file's permissions,
and is renamed over the target; then the folder is fsynced so the rename itself is durable.

Stdlib only, so both `vectors/` (GGUF files) and `repl/` (sessions) can use it.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

TEST_PAUSE_ENV = "STEER_TEST_SAVE_PAUSE"


class TempFileError(OSError):
    """The temporary file could not even be created (the folder is missing or not writable),
    as opposed to failing part-way through writing it."""


def write_atomic(target: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """Replace `target` with what `write(tmp_path)` writes to a fresh temporary path.

    OSErrors propagate (TempFileError when the temporary file cannot be made); whatever goes
    wrong, the temporary file is removed and `target` is untouched.
    """
    target = Path(target)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise TempFileError(exc.errno, exc.strerror, exc.filename) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        fsync_file(tmp)
        os.chmod(tmp, mode_for(target))
        _test_pause(target)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(directory: Path) -> None:
    """Make a rename durable. Some platforms cannot open a folder for fsync; the file itself
    is already on disk there, so that is not an error."""
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


def mode_for(target: Path) -> int:
    """Keep an existing file's permissions; new files get the usual rw-r--r--."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        return 0o644


def _test_pause(target: Path) -> None:
    """Crash tests only (tests/test_crash.py): with STEER_TEST_SAVE_PAUSE=SECONDS, stop between
    writing the temporary file and renaming it, and say so, so a test can kill steer there."""
    pause = os.environ.get(TEST_PAUSE_ENV)
    if pause:
        os.write(2, f"steer-test: about to rename {target.name}\n".encode())
        time.sleep(float(pause))
