"""Models by name: `--model hf:OWNER/REPO[:QUANT]`, resolved as llama.cpp's `-hf` resolves it.

The file comes from the Hugging Face hub cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, else
`~/.cache/huggingface/hub`), laid out as huggingface_hub lays it out:
`models--OWNER--REPO/refs/main` holds a commit, `snapshots/<commit>/<file>` the files. Online,
the repo's file list comes from the hub and the chosen file is downloaded into that cache
(huggingface_hub does both: authentication, resumable and locked downloads, the Xet store);
with `HF_HUB_OFFLINE=1`, or when the hub cannot be reached, the list is the cached snapshot's,
exactly as llama.cpp falls back to `get_cached_files`.

Which file (llama.cpp's `find_best_model`, vendored common/download.cpp): the first `.gguf`
that is a model (not mmproj / imatrix / a speculative-decoding sidecar) whose path contains
QUANT followed by `.` or `-`, case-insensitively; without QUANT, Q4_K_M, then Q8_0, then the
first model file. Of a split model (`-00001-of-00003.gguf`) the first part is taken and all
parts are fetched; llama.cpp loads the rest beside it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

PREFIX = "hf:"
DEFAULT_TAGS = ("Q4_K_M", "Q8_0")  # llama.cpp's choice when no QUANT is given
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
_SPLIT = re.compile(r"^(.+)-([0-9]{5})-of-([0-9]{5})$", re.IGNORECASE)
_TAG = re.compile(r"[-.]([A-Z0-9_]+)$", re.IGNORECASE)
_SIDECARS = ("mmproj", "imatrix", "mtp-", "eagle3-", "dflash-", "dspark-")
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's reading of a boolean variable


class HfModelError(Exception):
    """A hub reference that cannot be resolved to a file; the message is one line."""


@dataclass(frozen=True)
class HfRef:
    repo: str  # OWNER/REPO
    quant: str  # "" when not given

    def __str__(self) -> str:
        return f"{PREFIX}{self.repo}" + (f":{self.quant}" if self.quant else "")


def is_hf_ref(raw: str | None) -> bool:
    return bool(raw) and raw.startswith(PREFIX)


def parse_ref(raw: str) -> HfRef:
    """`hf:OWNER/REPO[:QUANT]` (the `hf:` prefix optional here)."""
    body = raw.removeprefix(PREFIX)
    repo, _, quant = body.partition(":")
    if not _REPO.fullmatch(repo) or ".." in repo or not re.fullmatch(r"[A-Za-z0-9_]*", quant):
        raise HfModelError(
            f"--model {raw!r}: expected hf:OWNER/REPO[:QUANT], e.g. "
            "hf:ggml-org/gemma-3-270m-it-GGUF:Q8_0"
        )
    return HfRef(repo, quant)


def offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE), read now, as huggingface_hub reads it."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in _TRUE


def cache_dir() -> Path:
    """The hub cache, by huggingface_hub's rules (HF_HUB_CACHE, HF_HOME/hub, XDG, ~)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_folder(cache: Path, repo: str) -> Path:
    return cache / ("models--" + repo.replace("/", "--"))


def split_info(path: str) -> tuple[str, str, int, int]:
    """(prefix, QUANT tag upper-cased, part index, part count) of a GGUF file name."""
    prefix = path.removesuffix(".gguf")
    index = count = 1
    m = _SPLIT.match(prefix)
    if m:
        prefix, index, count = m.group(1), int(m.group(2)), int(m.group(3))
    tag = _TAG.search(prefix)
    return prefix, tag.group(1).upper() if tag else "", index, count


def _is_model(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return path.endswith(".gguf") and not any(s in name for s in _SIDECARS)


def choose_file(files: list[str], quant: str) -> str | None:
    """The file llama.cpp's -hf takes from a repo's file list (see the module docstring)."""
    for tag in [quant] if quant else DEFAULT_TAGS:
        pattern = re.compile(re.escape(tag) + r"[.-]", re.IGNORECASE)
        for f in files:
            if _is_model(f) and pattern.search(f) and _first_part(f):
                return f
    if not quant:
        return next((f for f in files if _is_model(f) and _first_part(f)), None)
    return None


def _first_part(path: str) -> bool:
    _, _, index, count = split_info(path)
    return count <= 1 or index == 1


def split_parts(files: list[str], chosen: str) -> list[str]:
    """All parts of a split model (just `chosen` when it is not split)."""
    prefix, _, _, count = split_info(chosen)
    if count <= 1:
        return [chosen]
    return sorted(f for f in files if split_info(f)[0] == prefix and split_info(f)[3] == count)


def cached_snapshot(cache: Path, repo: str) -> Path | None:
    """The snapshot folder of the cached `main` (else of any cached ref), as llama.cpp reads it."""
    refs = repo_folder(cache, repo) / "refs"
    if not refs.is_dir():
        return None
    names = sorted(p.name for p in refs.iterdir() if p.is_file())
    for name in sorted(names, key=lambda n: n != "main"):
        commit = (refs / name).read_text().strip()
        folder = repo_folder(cache, repo) / "snapshots" / commit
        if re.fullmatch(r"[0-9a-f]{40}", commit) and folder.is_dir():
            return folder
    return None


def cached_files(snapshot: Path) -> list[str]:
    return sorted(
        p.relative_to(snapshot).as_posix()
        for p in snapshot.rglob("*")
        if p.is_file() and p.name.endswith(".gguf")
    )


def resolve(raw: str, *, cache: Path | None = None, offline_mode: bool | None = None) -> Path:
    """The local GGUF file a hub reference means, downloading it first when online."""
    ref = parse_ref(raw)
    cache = cache or cache_dir()
    offline_mode = offline() if offline_mode is None else offline_mode
    if not offline_mode:
        path = _resolve_online(ref, cache)
        if path is not None:
            return path
    return _resolve_cached(ref, cache, offline_mode)


def _resolve_cached(ref: HfRef, cache: Path, offline_mode: bool) -> Path:
    snapshot = cached_snapshot(cache, ref.repo)
    why = "HF_HUB_OFFLINE is set" if offline_mode else "the hub could not be reached"
    if snapshot is None:
        raise HfModelError(
            f"{ref}: not in the Hugging Face cache ({cache}) and {why}; download it there "
            "first (e.g. on a machine online), or pass --model PATH"
        )
    files = cached_files(snapshot)
    chosen = choose_file(files, ref.quant)
    if chosen is None:
        raise HfModelError(_no_match(ref, files, "cached"))
    missing = [p for p in split_parts(files, chosen) if not (snapshot / p).is_file()]
    if missing:
        raise HfModelError(f"{ref}: parts of the split model are not cached: {missing[0]}")
    return snapshot / chosen


def _resolve_online(ref: HfRef, cache: Path) -> Path | None:
    """Download the chosen file(s) into the cache; None when the hub cannot be reached."""
    try:
        from huggingface_hub import HfApi, hf_hub_download
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            OfflineModeIsEnabled,
            RepositoryNotFoundError,
        )
    except ImportError:  # pragma: no cover - a dependency of steer
        return None
    try:
        # one request, not retried: an unreachable hub costs no back-off (list_repo_files
        # retries five times, ~25 s) before the cache is used
        files = [s.rfilename for s in HfApi().model_info(ref.repo).siblings or []]
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise HfModelError(f"{ref}: {type(exc).__name__} on the hub (private or gated?)") from None
    except (OfflineModeIsEnabled, HfHubHTTPError, OSError):
        return None
    except Exception as exc:  # connection errors of the HTTP client in use
        if "connect" in type(exc).__name__.lower() or "timeout" in type(exc).__name__.lower():
            return None
        raise
    chosen = choose_file(files, ref.quant)
    if chosen is None:
        raise HfModelError(_no_match(ref, files, "in the repository"))
    paths = [hf_hub_download(ref.repo, f, cache_dir=cache) for f in split_parts(files, chosen)]
    return Path(paths[split_parts(files, chosen).index(chosen)])


def _no_match(ref: HfRef, files: list[str], where: str) -> str:
    ggufs = [f for f in files if _is_model(f)]
    want = ref.quant or " / ".join(DEFAULT_TAGS)
    shown = ", ".join(ggufs[:6]) + (", …" if len(ggufs) > 6 else "") if ggufs else "none"
    return f"{ref}: no {want} GGUF file {where} (GGUF files: {shown}); name another :QUANT"


def describe(path: Path) -> tuple[str, str] | None:
    """(reference, file inside the repo) when `path` is a file of a hub-cache snapshot:
    the reference names the quantisation the file's name carries, so resolving it again
    picks this file. None for any other path."""
    parts = Path(os.path.abspath(path)).parts
    for i in range(len(parts) - 3, 0, -1):
        if parts[i] == "snapshots" and parts[i - 1].startswith("models--"):
            repo = parts[i - 1].removeprefix("models--").replace("--", "/")
            inner = "/".join(parts[i + 2 :])
            if not _REPO.fullmatch(repo) or not inner:
                return None
            tag = split_info(inner)[1]
            quant = tag if tag and choose_file([inner], tag) == inner else ""
            return str(HfRef(repo, quant)), inner
    return None
