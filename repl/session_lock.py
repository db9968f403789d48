"""One steer at a time per session file: an advisory lock beside it."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from repl.session_data import SessionFileError


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
