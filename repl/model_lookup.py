"""Which model file a session means, recorded portably and found again on any machine.

A session names its model by sha256 and file name, and the bundled default model by the
package that ships it, never by a path inside one checkout's virtualenv: a session made here
must resume and replay on a machine where steer lives elsewhere. A path is kept only for a
user's own model file, written "~/..." under the home folder.

A model taken from the Hugging Face cache (`--model hf:OWNER/REPO[:QUANT]`, or a path inside
that cache) is recorded by its hub reference (`hf`), never by the cache path.

On load the model is looked for by sha256: the recorded path, the hub reference (resolved
through the Hugging Face cache, repl/hf_models.py), the package that bundles it, the bundled
default model, and the user's model folders (<data dir>/models and the folders in
STEER_MODEL_PATH). `--model PATH` overrides all of them.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from engine.model import DEFAULT_MODEL_PACKAGE, ModelLoadError, default_model_path
from repl import hf_models
from repl.paths import data_dir, user_path
from repl.session_data import ModelInfo
from repl.steering import file_sha256

MODEL_PATH_ENV = "STEER_MODEL_PATH"


class ModelNotFound(Exception):
    """No file on this machine is the session's model; the message is one line."""


def model_arg_path(raw: str) -> Path:
    """The file a --model value means: a path, or a hub reference hf:OWNER/REPO[:QUANT]
    resolved through the Hugging Face cache (raises HfModelError, PathError: one line)."""
    if hf_models.is_hf_ref(raw):
        return hf_models.resolve(raw)
    return user_path(raw)


def describe_model(path: Path, name: str, sha256: str) -> ModelInfo:
    """What a session records of the model file at `path`."""
    path = Path(path)
    try:
        bundled = path.resolve() == default_model_path().resolve()
    except ModelLoadError:
        bundled = False
    if bundled:
        return ModelInfo(None, name, sha256, file=path.name, package=DEFAULT_MODEL_PACKAGE)
    hub = hf_models.describe(path)
    if hub is not None:
        return ModelInfo(None, name, sha256, file=path.name, hf=hub[0])
    return ModelInfo(_portable(path), name, sha256, file=path.name)


def _portable(path: Path) -> str:
    """An absolute path, written from '~' when it lies under the home folder."""
    path = path.absolute()
    try:
        home = Path.home()
    except RuntimeError:
        return str(path)
    return f"~/{path.relative_to(home)}" if path.is_relative_to(home) else str(path)


def model_folders() -> list[Path]:
    """The user's model folders: <data dir>/models, then those in STEER_MODEL_PATH."""
    folders = [data_dir() / "models"]
    for entry in os.environ.get(MODEL_PATH_ENV, "").split(os.pathsep):
        if entry.strip():
            folders.append(Path(entry).expanduser())
    return folders


def find_model(info: ModelInfo) -> tuple[Path, str]:
    """The file that is the recorded model, and a warning ("" when it is exactly that file).

    Only a file with the recorded sha256 is taken silently. When none has it, a file that
    stands where the model should be (the recorded path, the package's file, the same name in
    a model folder) is taken with a warning; with nothing there, ModelNotFound.
    """
    stand_ins: list[Path] = []
    for path, can_stand_in in _candidates(info):
        if path in stand_ins or not path.is_file():
            continue
        if file_sha256(path) == info.sha256:
            return path, ""
        if can_stand_in:
            stand_ins.append(path)
    if stand_ins:
        return stand_ins[0], differs_warning(info, stand_ins[0])
    raise ModelNotFound(
        f"model {info.file or info.name} (sha256 {info.sha256[:12]}…) not found: looked in "
        f"{_where_looked(info)}; put it in {model_folders()[0]} or pass --model PATH"
    )


def differs_warning(info: ModelInfo, path: Path) -> str:
    return (
        f"warning: {path.name} is not the model this session was made with "
        f"(sha256 differs from {info.sha256[:12]}…)"
    )


def _candidates(info: ModelInfo) -> Iterator[tuple[Path, bool]]:
    """(path, whether it may stand in for the model when its sha256 differs), in order."""
    recorded = _or_none(lambda: user_path(info.path)) if info.path else None
    if recorded is not None:
        yield recorded, True
    if info.hf:
        hub = _or_none(lambda: hf_models.resolve(info.hf))
        if hub is not None:
            yield hub, True
    if info.package and info.file and _plain_name(info.file):
        folder = _package_folder(info.package)
        if folder is not None:
            yield folder / info.file, True
    bundled = _or_none(default_model_path)
    if bundled is not None:
        yield bundled, False
    name = info.file if info.file and _plain_name(info.file) else Path(info.path or "").name
    if name:
        for folder in model_folders():
            yield folder / name, True


def _or_none(find: Callable[[], Path]) -> Path | None:
    try:
        return find()
    except (ValueError, ModelLoadError, hf_models.HfModelError, OSError):
        return None


def _package_folder(package: str) -> Path | None:
    """The installed package's folder, found without importing it (it may import much)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _plain_name(name: str) -> bool:
    """A file name alone: a session file must not point the lookup at other folders."""
    return name not in ("", ".", "..") and "/" not in name and "\\" not in name


def _where_looked(info: ModelInfo) -> str:
    places = []
    if info.path:
        places.append(info.path)
    if info.hf:
        places.append(f"{info.hf} in the Hugging Face cache")
    if info.package:
        places.append(f"package {info.package}")
    places.append("the bundled model")
    places += [str(folder) for folder in model_folders()]
    return ", ".join(places)
