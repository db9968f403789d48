"""Where a session's vector files are: its own "<stem>.vectors/" folder, and safe resolution
of the paths a (possibly foreign) session file names."""

from __future__ import annotations

import os
from pathlib import Path

from repl.session_data import SessionFileError, VectorRef


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
