"""Session data: the conversation, its model, settings, vectors and steering, in memory.

The TOML format is in `repl/session_file.py` (reading, writing) and `repl/session_validate.py`
(checking a parsed file); the format is documented in docs/session-format.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

FORMAT_VERSION = 3  # the newest version this steer reads (see docs/session-format.md)
# 2: the model is found by sha256, file name and package; path optional.
# 3: a [chat_template] chosen instead of the model's own. Written only by sessions that have
#    one (older steers would replay them with the wrong template); others are still 2.
BASE_VERSION = 2
EVENT_KINDS = ("user", "assistant", "command")
FINISH_REASONS = ("stop", "length", "interrupted", "context_full")
ASSISTANT_ONLY = (
    "tokens",
    "finish_reason",
    "interrupted",
    "seed",
    "steering",
    "sampling",
    "system",
)
FORMAT_DOC = "see docs/session-format.md"


class SessionFileError(Exception):
    """A session file that cannot be read, written or used; the message is one line."""


def utc_now() -> str:
    """The timestamp format of `created` / `updated`: ISO 8601, UTC, whole seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class ModelInfo:
    """The model a session was made with, recorded so that any machine can find it again
    (repl/model_lookup.py): sha256 is what identifies it; never a path inside a checkout."""

    path: str | None  # a user's own model file ("~/..." under home); None for a bundled one
    name: str
    sha256: str
    file: str | None = None  # the file's name, looked for in the user's model folders
    package: str | None = None  # the Python package that bundles it (the default model)
    hf: str | None = None  # a Hugging Face reference, "hf:OWNER/REPO[:QUANT]" (repl/hf_models.py)
    extra: dict = field(default_factory=dict)  # unknown keys, written back unchanged


@dataclass
class VectorRef:
    """A vector file the session uses. `path` is relative to the session file's folder, or
    absolute inside the user library; resolve it with resolve_vector_path, never directly."""

    name: str
    path: str
    sha256: str
    extra: dict = field(default_factory=dict)


@dataclass
class Event:
    """One entry of the ordered transcript: a user message, an assistant reply, or a command.

    For "command", `text` is the whole command line as typed, e.g. '/steer terse 0.5'.
    The other fields belong to assistant replies only: what replay needs to make the same reply
    again (sampling, seed, steering, system prompt) and what the user saw (tokens, finish).
    """

    kind: str
    text: str = ""
    tokens: int | None = None
    finish_reason: str | None = None  # stop | length | interrupted | context_full
    seed: int | None = None  # the seed the reply used; None when greedy
    steering: list[dict] | None = None  # [{"name", "strength", "layers": [a, b]}]
    sampling: dict | None = None  # temperature, top_p, top_k, max_tokens, seed (absent = random)
    system: str | None = None  # the system prompt in force ("" when none)
    extra: dict = field(default_factory=dict)

    @property
    def interrupted(self) -> bool:
        return self.finish_reason == "interrupted"


@dataclass(kw_only=True)
class Session:
    """Everything needed to continue or reproduce a conversation."""

    model: ModelInfo
    sampling: dict  # the current settings; "seed" absent or None means a random seed per reply
    system: str = ""  # "" = no system prompt
    vectors: list[VectorRef] = field(default_factory=list)
    steering: list[dict] = field(default_factory=list)  # the steering active now
    events: list[Event] = field(default_factory=list)
    # the chat template chosen instead of the model's own: {"name": built-in} or
    # {"jinja": text, "file": its file name}; None = the model's own template
    chat_template: dict | None = None
    version: int = BASE_VERSION
    created: str = field(default_factory=utc_now)
    updated: str = field(default_factory=utc_now)
    extra: dict = field(default_factory=dict)  # unknown top-level keys, kept and written back

    def touch(self) -> None:
        """Mark the session as changed now (recent_sessions orders by `updated`)."""
        self.updated = utc_now()

    @property
    def assistant_turns(self) -> int:
        return sum(1 for e in self.events if e.kind == "assistant")

    def first_user_message(self) -> str:
        return next((e.text for e in self.events if e.kind == "user"), "")
