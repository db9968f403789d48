"""Steering state of a chat: loaded vectors, which are active, and building new ones.

The maths lives in `vectors/` and the activations come from `engine/`; this module is the
glue that turns prompts into activations and activations into a named vector.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.capture import Probe
from engine.lora import AdapterCache, LoraAdapter
from engine.model import Model
from repl.commands import UsageError
from repl.paths import cache_dir, data_dir, user_path
from vectors import (
    UNIT_MEAN_DIFF,
    SteeringVector,
    build_focus_vector,
    build_vector,
    bundled_path,
    compose,
    load_vector,
    neutral_prompts,
    pairs_sha256,
    parse_range,
)
from vectors.atomic import write_atomic
from vectors.focus import RATIO
from vectors.lora import (
    DEFAULT_TARGETS,
    AdapterError,
    adapter_key,
    build_adapter,
    project_recommendation,
    save_adapter,
)

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
LOUD = 3.0  # |strength| above this (mean-diff units) usually breaks the text


def check_name(name: str) -> str:
    """Vector names double as file names and as words in /vector mix expressions."""
    if not NAME_RE.match(name):
        raise ValueError(
            f"vector name {name!r} must start with a letter or _ and hold only letters, "
            "digits and _ (at most 64)"
        )
    return name


def safe_name(raw: str) -> str:
    """A usable name for a file whose own name is not one ('terse-v2' -> 'terse_v2')."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", raw)[:64] or "vector"
    return name if NAME_RE.match(name) else f"_{name}"[:64]


def library_dir() -> Path:
    path = data_dir() / "vectors"
    path.mkdir(parents=True, exist_ok=True)
    return path


def library_names() -> list[str]:
    return sorted(p.stem for p in library_dir().glob("*.gguf") if NAME_RE.match(p.stem))


MODES = ("add", "project", "prompt", "messages", "content")
READ_MODES = ("prompt", "messages", "content")  # added only while the conversation is read
# what each read mode steers, as /steer's confirmation and /sweep's header say it
READS = {
    "prompt": "the prompt",
    "messages": "the messages (not the system prompt)",
    "content": "the messages' text (not the system prompt or the assistant's header)",
}


@dataclass(frozen=True)
class Active:
    """How one vector steers: its strength, blocks and mode.

    `add` adds strength x the vector to each block's output (a llama.cpp control vector);
    `project` removes strength x the output's component along the vector's unit direction from
    the weights in `targets` of each block (a rank-1 LoRA, vectors/lora.py); `prompt` adds it
    like `add`, but only while the model reads the conversation, not while it writes its reply
    (as ActAdd injects into the prompt; engine/chat.py). Topic vectors need it (docs/efficacy.md):
    added at every written token they make the text loop before the topic shows. `messages`
    is `prompt` without the system prompt: the tokens before the first message's text are
    read unsteered, so the vector turns what is asked rather than who answers (a focus
    vector stayed fluent one step further that way; docs/efficacy.md, "Messages mode").
    `content` is `messages` without the prompt's closing tokens either (the end of the last
    message and the assistant's header): steered, they made a topic vector break off one step
    past its pick; read plain, the replies turn to the topic further up (docs/efficacy.md,
    "Content mode").
    """

    strength: float
    layers: tuple[int, int]
    mode: str = "add"
    targets: tuple[str, ...] = DEFAULT_TARGETS

    def describe(self, name: str) -> dict:
        """The record of this steering in replies, sessions and --jsonl. Add mode keeps the
        old three keys (old readers and sessions stay as they were); project mode adds its
        mode and targets."""
        out = {"name": name, "strength": self.strength, "layers": list(self.layers)}
        if self.mode != "add":
            out["mode"] = self.mode
        if self.mode == "project":
            out["targets"] = list(self.targets)
        return out

    @classmethod
    def from_record(cls, item: dict) -> Active:
        """The inverse of describe() (a record without a mode is add mode)."""
        mode = item.get("mode", "add")
        targets = tuple(item.get("targets") or DEFAULT_TARGETS)
        return cls(float(item["strength"]), tuple(item["layers"]), mode, targets)


def recommended_mode(vec: SteeringVector) -> str:
    """The mode `/steer NAME` uses when none is given: what the vector's calibration chose."""
    mode = vec.meta.get("recommended_mode")
    return mode if mode in ("add", *READ_MODES) else "add"


@dataclass
class Control:
    """Everything llama.cpp needs for one steering setting: the summed control-vector buffer of
    the add-mode vectors, the projection adapters with their scales, and the buffers of the
    prompt-mode vectors (added only while the conversation is read), of the messages-mode
    ones (the same, but not while the system prompt is read) and of the content-mode ones
    (nor while the prompt's closing tokens are read)."""

    buffer: np.ndarray | None
    adapters: list[tuple[LoraAdapter, float]]
    prompt: np.ndarray | None = None
    messages: np.ndarray | None = None
    content: np.ndarray | None = None

    @property
    def scoped(self) -> bool:
        """Steering that reads the system prompt apart from the messages."""
        return self.messages is not None or self.content is not None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Steering:
    """The vectors a chat knows and the ones that shape its next reply."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.vectors: dict[str, SteeringVector] = {}
        self.active: dict[str, Active] = {}
        self._probe: Probe | None = None
        self._model_sha256: str | None = None
        self._adapters = AdapterCache(model)

    # -- applying -------------------------------------------------------------------------------

    def buffer(
        self, active: dict[str, Active] | None = None, mode: str = "add"
    ) -> np.ndarray | None:
        """The control-vector buffer for llama.cpp of the vectors in `active` (by default the
        vectors now on) that are in `mode` ("add" or a read mode), or None when there
        are none."""
        items = list((self.active if active is None else active).items())
        parts = [(self.vectors[n], a.strength, a.layers) for n, a in items if a.mode == mode]
        if not parts:
            return None
        return compose(parts, self.model.n_layer, self.model.n_embd)

    def control(self, active: dict[str, Active] | None = None) -> Control | None:
        """Both halves of the steering of `active` (by default the vectors now on), or None
        when nothing is active. Projection adapters are built (or taken from the cache) here."""
        items = list((self.active if active is None else active).items())
        if not items:
            return None
        adapters = [
            (self.adapter(n, a.layers, a.targets), a.strength)
            for n, a in items
            if a.mode == "project"
        ]
        chosen = dict(items)
        return Control(
            self.buffer(chosen),
            adapters,
            self.buffer(chosen, "prompt"),
            self.buffer(chosen, "messages"),
            self.buffer(chosen, "content"),
        )

    def adapter(self, name: str, layers: tuple[int, int], targets: tuple[str, ...]) -> LoraAdapter:
        """The projection adapter of vector `name` on `layers` x `targets`, loaded into the
        model. Built on first use and cached on disk per (vector, model, blocks, targets)."""
        try:
            path = self.adapter_path(name, layers, targets)
            if not path.is_file():
                adapter = build_adapter(self.vectors[name], self.model.path, layers, targets)
                save_adapter(adapter, path, {"model_sha256": self.model_sha256()})
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise AdapterError(
                f"could not build the projection adapter of {name!r}{where}: "
                f"{exc.strerror or exc}; set STEER_CACHE_DIR to a writable folder"
            ) from None
        return self._adapters.load(path)

    def write_adapter(
        self, name: str, layers: tuple[int, int], targets: tuple[str, ...], path: Path
    ) -> None:
        """The adapter file for llama.cpp (`/vector lora`): the cached one, copied atomically."""
        self.adapter(name, layers, targets)  # builds it into the cache if needed
        data = self.adapter_path(name, layers, targets).read_bytes()
        write_atomic(path, lambda tmp: tmp.write_bytes(data))

    def adapter_path(self, name: str, layers: tuple[int, int], targets: tuple[str, ...]) -> Path:
        key = adapter_key(self.vectors[name], self.model_sha256(), layers, targets)
        folder = cache_dir() / "adapters"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{name}-{key}.gguf"

    def describe(self) -> list[dict]:
        return [a.describe(n) for n, a in list(self.active.items())]

    def activate(
        self,
        name: str,
        strength: float | None,
        layers: tuple[int, int] | None,
        mode: str | None = "add",
        targets: tuple[str, ...] | None = None,
    ) -> Active:
        """Switch `name` on; what is not given comes from the vector's recommendation for
        the mode (vectors/lora.py project_recommendation for project mode). A mode of None is
        the one the vector's calibration chose (prompt mode for `--method replies`, content
        mode for `--method focus`, unless built with `--mode`; else add)."""
        vec = self.vectors[name]
        mode = mode or recommended_mode(vec)
        rec_strength, rec_layers, rec_targets = self.recommended(vec, mode)
        strength = rec_strength if strength is None else strength
        self.active[name] = Active(
            float(strength), layers or rec_layers, mode, targets or rec_targets
        )
        return self.active[name]

    def recommended(
        self, vec: SteeringVector, mode: str
    ) -> tuple[float, tuple[int, int], tuple[str, ...]]:
        """The strength, blocks and targets `vec` recommends in `mode` (project mode's come
        from vectors/lora.py project_recommendation; targets matter only there)."""
        if mode == "project":
            rec = project_recommendation(vec, self.model.n_layer)
            return rec.strength, rec.layers, rec.targets
        strength = vec.recommended_strength if vec.recommended_strength is not None else 1.0
        return strength, vec.recommended_range or (1, self.model.n_layer - 1), DEFAULT_TARGETS

    # -- keeping --------------------------------------------------------------------------------

    def add(self, vec: SteeringVector) -> None:
        """Keep a vector; an existing name is refused, never silently replaced."""
        self.check_free(vec.name)
        if vec.n_layer != self.model.n_layer or vec.n_embd != self.model.n_embd:
            raise ValueError(
                f"vector {vec.name!r} is {vec.n_layer} blocks x {vec.n_embd}; the model is "
                f"{self.model.n_layer} x {self.model.n_embd}"
            )
        self.vectors[vec.name] = vec

    def load(self, where: str, name: str | None) -> SteeringVector:
        """Load a file, or a bare name from the user library."""
        path = user_path(where)
        if not path.exists() and NAME_RE.match(where):
            path = library_dir() / f"{where}.gguf"
            if not path.exists():
                path = bundled_path(where) or path
        if name is not None:
            check_name(name)
            self.check_free(name)
        vec = load_vector(path, self.model.n_layer, self.model.n_embd, name=name)
        vec.name = name or safe_name(vec.name)
        # Where the file came from and was saved to are facts of this machine, never the
        # file's word: a shared file naming "~/.ssh/id_rsa" must not be copied later.
        vec.meta.pop("saved_to", None)
        vec.meta["source"] = str(path)
        self.add(vec)
        return vec

    def check_free(self, name: str) -> None:
        if name in self.vectors:
            raise ValueError(
                f"a vector named {name!r} is already loaded: give another name, or "
                f"/vector rm {name} first"
            )

    def model_sha256(self) -> str:
        if self._model_sha256 is None:
            self._model_sha256 = file_sha256(self.model.path)
        return self._model_sha256

    # -- building -------------------------------------------------------------------------------

    def probe(self) -> Probe:
        if self._probe is None:
            self._probe = Probe(self.model)
        return self._probe

    def close(self) -> None:
        """Free the probe context now (over RPC it holds buffers on the servers)."""
        if self._probe is not None:
            self._probe.close()
            self._probe = None

    def contrast(
        self,
        name: str,
        pairs: list[tuple[str, str]],
        *,
        method: str,
        chat_format: bool,
        last_k: int,
        provenance: dict,
        replies: list[list[int]] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> SteeringVector:
        """Capture both sides of every pair (common prefixes evaluated once) and build the vector.

        `replies` (token ids per prompt: positives, then negatives) are replies the model
        wrote to the chat-formatted prompts; each prompt is then read over its reply's tokens
        instead of its last `last_k` tokens. Nothing is stored if capture is cancelled or fails.
        """
        self.check_free(name)
        texts = [p for p, _ in pairs] + [n for _, n in pairs]
        if chat_format:
            prompts = [self.model.chat_tokens([{"role": "user", "content": t}]) for t in texts]
        else:
            prompts = [self.model.tokenize(t, add_special=True) for t in texts]
        ks: int | list[int] = last_k
        position = "last prompt token" if last_k == 1 else f"mean of last {last_k} tokens"
        if replies is not None:
            prompts = [p + list(r) for p, r in zip(prompts, replies, strict=True)]
            ks = [max(1, len(r)) for r in replies]
            position = f"mean over each reply the model wrote (up to {max(ks)} tokens)"
        acts = self.probe().capture(prompts, last_k=ks, on_progress=on_progress, cancel=cancel)
        n = len(pairs)
        meta = {
            **provenance,
            "position": position,
            "model_sha256": self.model_sha256(),
            "model_file": self.model.path.name,
            "strength_unit": UNIT_MEAN_DIFF,
        }
        vec = build_vector(name, acts[:n], acts[n:], method=method, meta=meta)
        if replies is not None:
            vec.meta["method"] = f"replies ({method} of the differences)"
        self.add(vec)
        return vec

    def contrast_focus(
        self,
        name: str,
        questions: list[str],
        replies: list[list[int]],
        gains: list[np.ndarray],
        *,
        provenance: dict,
        ratio: float = RATIO,
        on_progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> SteeringVector:
        """Build a focus vector (vectors/focus.py) from the replies the model wrote under each
        instruction (positives, then negatives; `questions` are the bare questions, one per
        pair) and the positive replies' per-token gains. Every reply is read after its bare
        question: the state the vector acts on holds no instruction."""
        self.check_free(name)
        n = len(questions)
        prompts = [
            self.model.chat_tokens([{"role": "user", "content": q}]) + list(r)
            for q, r in zip(questions * 2, replies, strict=True)
        ]
        rows = self.probe().capture_tokens(
            prompts,
            last_k=[max(1, len(r)) for r in replies],
            on_progress=on_progress,
            cancel=cancel,
        )
        meta = {
            **provenance,
            "position": f"every token of each reply the model wrote (up to "
            f"{max(len(r) for r in replies)}), read after the bare question",
            "model_sha256": self.model_sha256(),
            "model_file": self.model.path.name,
        }
        vec = build_focus_vector(name, rows[:n], rows[n:], gains, meta=meta, ratio=ratio)
        self.add(vec)
        return vec


# -- lookups shared by the command modules ---------------------------------------------------


def loaded_names(core, prefix: str = "") -> list[str]:
    return sorted(core.steering.vectors)


def active_names(core, prefix: str = "") -> list[str]:
    return ["off", *sorted(core.steering.vectors)]


def vector_or_error(core, name: str) -> SteeringVector:
    vec = core.steering.vectors.get(name)
    if vec is None:
        known = ", ".join(sorted(core.steering.vectors)) or "none loaded"
        raise UsageError(f"no vector named {name!r} (loaded: {known}); /vector load or /contrast")
    return vec


def parse_layers(core, text: str) -> tuple[int, int]:
    """A '--layers A-B' value checked against the model, or a UsageError saying why not."""
    try:
        return parse_range(text, core.model.n_layer)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def instruction_pairs(positive: str, negative: str, n: int) -> list[tuple[str, str]]:
    """The built-in neutral prompts, each with either instruction appended."""
    prompts = neutral_prompts()
    if not 2 <= n <= len(prompts):
        raise ValueError(
            f"--n must be between 2 and {len(prompts)} (the built-in prompts), not {n}"
        )
    return [(f"{q} {positive}", f"{q} {negative}") for q in prompts[:n]]


def provenance_for(
    positive: str | None,
    negative: str | None,
    pairs: list[tuple[str, str]],
    source: Path | str | None,
) -> dict:
    """What a vector was built from. A pairs file is named by its file name and the hash of
    its pairs, never by its path: the vector file may travel to other machines."""
    if source is None:
        return {"positive": positive, "negative": negative, "prompts": [q for q, _ in pairs]}
    return {"pairs_file": Path(source).name, "pairs_sha256": pairs_sha256(pairs)}
