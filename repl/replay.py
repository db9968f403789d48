"""Replay a session: run its events again against the model and check every reply.

Replay writes nothing: commands that would touch files (`/vector save`, `/vector rm`'s library
delete) only change the replay's own state, vectors come from the session's own references,
and a `/contrast` is rebuilt in memory and compared with the stored vector.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from engine.chat import ChatContext, Sampling
from engine.model import Model
from engine.offload import LOCAL, Offload
from repl.commands import UsageError
from repl.core import Core, Turn
from repl.session import sampling_from
from repl.session_file import Event, Session, SessionFileError
from repl.session_paths import resolve_vector_path
from repl.steering import Active, check_name, file_sha256, library_dir
from vectors import load_vector

VECTOR_TOLERANCE = 0.05  # relative norm difference allowed between rebuilt and stored vectors
# The commands replay runs, by registered name. A session file may come from someone else, so
# anything else it holds (/vector save, /session save, /replay, ...) is skipped, never run:
# replay must not write files or start another replay.
REPLAYED = ("set", "system", "steer", "contrast", "vector mix", "undo", "clear", "regen")


class ReplayError(Exception):
    """The session cannot be replayed; the message says why in one line."""


@dataclass
class TurnResult:
    index: int  # 1-based number of the assistant reply
    identical: bool
    recorded: str
    replayed: str
    diff: str = ""


@dataclass
class ReplayReport:
    turns: list[TurnResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def identical(self) -> int:
        return sum(t.identical for t in self.turns)

    @property
    def different(self) -> int:
        return len(self.turns) - self.identical

    def summary(self) -> str:
        return f"replay: {self.identical} identical, {self.different} different"


def word_diff(old: str, new: str, width: int = 160) -> str:
    """The first place two texts part, word by word: '… same words [-old-] {+new+} …'."""
    a, b = old.split(), new.split()
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag != "equal":
            before = " ".join(a[max(0, i1 - 4) : i1])
            gone = " ".join(a[i1 : min(i2, i1 + 12)])
            came = " ".join(b[j1 : min(j2, j1 + 12)])
            text = f"… {before} [-{gone}-] {{+{came}+}} …"
            return text if len(text) <= width else text[: width - 1] + "…"
    return "(same words, different spacing)"


def _made_names(session: Session) -> set[str]:
    """Names of the vectors the session's own commands build, mix or load."""
    from repl.core import REGISTRY

    names = set()
    for event in session.events:
        if event.kind != "command":
            continue
        try:
            command, args = REGISTRY.parse(event.text)
        except UsageError:
            continue  # replay skips it with a note
        if command.name == "contrast":
            names.add(args["name"])
        elif command.name == "vector mix":
            names.add(args["new"])
        elif command.name == "vector load":
            names.add(_loaded_name(args))
    return names


def _loaded_name(args: dict) -> str:
    """The name `/vector load PATH [NAME]` gives the vector: NAME, else the file's stem."""
    return args["name"] or Path(str(args["path"])).stem


def preflight(session: Session, path: Path, steer: dict[str, float] | None = None) -> None:
    """What can be checked before a model loads or a /contrast is rebuilt: every vector file
    the session lists is there and inside its folder or the library, and each --steer name is
    a vector the session has. A wrong session fails in a moment, not after a minute's work.
    Callers run it before they load a model (`steer replay`) or start the job (`/replay`)."""
    for ref in session.vectors:
        resolve_vector_path(path, ref, library_dir())  # SessionFileError names what is wrong
    known = {ref.name for ref in session.vectors} | _made_names(session)
    for name in steer or {}:
        if name not in known:
            have = ", ".join(sorted(known)) or "none"
            raise ReplayError(f"--steer {name}: no such vector in this session (it has: {have})")


class Replayer:
    """Executes a session's events on a fresh Core over the given model."""

    def __init__(
        self,
        model: Model,
        session: Session,
        path: Path,
        *,
        steer: dict[str, float] | None = None,
        no_steer: bool = False,
    ) -> None:
        self.session = session
        self.path = path
        self.core = Core(model, ChatContext(model, n_ctx=4096), Sampling(temperature=0.0))
        self.overrides = steer
        self.no_steer = no_steer
        self.report = ReplayReport()
        self._replies = 0
        self._cancel: threading.Event | None = None

    def run(
        self,
        on_turn: Callable[[TurnResult], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> ReplayReport:
        self._cancel = cancel
        for event in self.session.events:
            if self.cancelled:
                break
            if event.kind == "user":
                self.core.turns.append(Turn("user", event.text))
            elif event.kind == "assistant":
                result = self._reply(event)
                if result is not None and on_turn is not None:
                    on_turn(result)
            else:
                self._command(event.text)
        if self.cancelled:
            self.report.notes.append("replay cancelled")
        return self.report

    @property
    def cancelled(self) -> bool:
        """Ctrl+C / Esc: stop at once, mid-reply or mid-/contrast; replay writes nothing."""
        return self._cancel is not None and self._cancel.is_set()

    # -- commands -------------------------------------------------------------------------------

    def _command(self, line: str) -> None:
        try:
            command = self.core.registry.command_name(line)
        except UsageError as exc:  # a newer steer's command, or a tampered file
            self.report.notes.append(f"skipped {line[:60]!r}: {exc}")
            return None
        if command == "vector load":
            return self._load_vector(line)
        if command == "vector rm":  # forget it; the library copy is not the replay's to delete
            name = self._parse(line)["name"]
            self.core.steering.vectors.pop(name, None)
            self.core.steering.active.pop(name, None)
            return None
        if command not in REPLAYED:
            if command not in ("vector save", "help"):
                self.report.notes.append(f"skipped /{command} (replay runs no such command)")
            return None
        if command == "contrast" and self._stored_instead(line):
            return None
        outcome = self.core.submit(self._uncalibrated(command, line))
        if outcome.job is not None:
            outcome = self.core.run_job(outcome, None, self._cancel)
            if self.cancelled:
                return None
            if not outcome.errors and line.startswith("/contrast"):
                self._check_rebuilt(line.split()[1])
        if outcome.errors:
            raise ReplayError(f"{line!r} failed on replay: {outcome.errors[0]}")
        return None

    @property
    def _stored(self) -> set[str]:
        """Names of the vectors the session keeps a file for."""
        return {ref.name for ref in self.session.vectors}

    def _take_stored(self, name: str) -> None:
        """Put the session's own file for `name` in place of any vector of that name."""
        model = self.core.model
        vec = load_vector(self._ref_path(name), model.n_layer, model.n_embd, name=name)
        self.core.steering.vectors.pop(name, None)
        self.core.steering.add(vec)

    def _stored_instead(self, line: str) -> bool:
        """With --no-steer or --steer the replay compares replies, not vectors: a /contrast
        whose vector the session stored takes the stored file (what the session used) instead
        of being rebuilt to be checked against it."""
        if not (self.no_steer or self.overrides is not None):
            return False
        name = self._parse(line)["name"]
        if name not in self._stored:
            return False
        self._take_stored(name)
        self.report.notes.append(f"vector {name!r} taken from the session's file, not rebuilt")
        return True

    def _uncalibrated(self, command: str, line: str) -> str:
        """A /contrast whose vector the session stored is rebuilt only to be compared, then
        replaced by the stored file (calibration included): calibrating it again is waste."""
        if command != "contrast" or "--no-calibrate" in line.split():
            return line
        name = self._parse(line)["name"]
        if name in self._stored:
            return f"{line} --no-calibrate"
        return line

    def _ref_path(self, name: str) -> Path:
        for ref in self.session.vectors:
            if ref.name == name:
                try:
                    return resolve_vector_path(self.path, ref, library_dir())
                except SessionFileError as exc:
                    raise ReplayError(str(exc)) from None
        raise ReplayError(f"the session uses vector {name!r} but lists no file for it")

    def _parse(self, line: str) -> dict:
        try:
            return self.core.registry.parse(line)[1]
        except UsageError as exc:
            raise ReplayError(f"{line[:60]!r}: {exc}") from None

    def _load_vector(self, line: str) -> None:
        """Load from the session's own reference, never from the path typed at the time."""
        args = self._parse(line)
        name = _loaded_name(args)
        if name not in self._stored:
            name = next(
                (
                    r.name
                    for r in self.session.vectors
                    if Path(r.path).stem == Path(args["path"]).stem
                ),
                name,
            )
        try:
            check_name(name)
        except ValueError as exc:
            raise ReplayError(f"{line[:60]!r}: {exc}") from None
        self._take_stored(name)

    def _check_rebuilt(self, name: str) -> None:
        if name not in self._stored:
            self.report.notes.append(f"vector {name!r} rebuilt (no stored file to compare)")
            return
        stored = load_vector(self._ref_path(name))
        rebuilt = self.core.steering.vectors[name].directions
        rel = float(
            np.linalg.norm(rebuilt - stored.directions)
            / max(np.linalg.norm(stored.directions), 1e-12)
        )
        verdict = "matches" if rel <= VECTOR_TOLERANCE else "DIFFERS FROM"
        self.report.notes.append(
            f"vector {name!r} rebuilt: {verdict} the stored file (relative difference {rel:.2e},"
            f" tolerance {VECTOR_TOLERANCE})"
        )
        self.core.steering.vectors[name] = stored  # go on with what the session really used

    # -- replies --------------------------------------------------------------------------------

    def _reply(self, event: Event) -> TurnResult | None:
        core = self.core
        self._replies += 1
        sampling = sampling_from(event.sampling) if event.sampling else core.sampling
        if event.seed is not None:
            sampling = replace(sampling, seed=event.seed)
        if event.interrupted:
            sampling = replace(sampling, max_tokens=max(1, event.tokens or 1))
        core.sampling = sampling
        core.system = event.system or None
        self._apply_steering(event.steering or [])
        if core.turns and core.turns[-1].role == "assistant":  # a /regen's reply follows
            core.turns.pop()
        out = core.generate(None, self._cancel)
        if self.cancelled:
            return None
        if out.reply is None:
            raise ReplayError(f"reply {self._replies} could not be made: {out.errors[0]}")
        replayed = out.reply.text
        core.turns[-1] = Turn("assistant", event.text, out.reply, sampling, event.steering or [])
        same = replayed == event.text
        result = TurnResult(
            self._replies,
            same,
            event.text,
            replayed,
            "" if same else word_diff(event.text, replayed),
        )
        self.report.turns.append(result)
        return result

    def _apply_steering(self, recorded: list[dict]) -> None:
        steering = self.core.steering
        steering.active.clear()
        if self.no_steer:
            return
        if self.overrides is not None:
            for name, strength in self.overrides.items():
                if name not in steering.vectors:
                    raise ReplayError(f"--steer {name}: no such vector in this session")
                steering.activate(name, strength, None)
            return
        for item in recorded:
            if item["name"] not in steering.vectors:
                raise ReplayError(
                    f"reply {self._replies} was steered by {item['name']!r}, "
                    "which the session never loads or builds"
                )
            steering.active[item["name"]] = Active.from_record(item)


def model_for(
    session: Session, model_path: str | None, allow_change: bool, offload: Offload = LOCAL
) -> tuple[Model, str]:
    """Load the model to replay with: --model, else the session's model found by sha256
    (repl/model_lookup.py), with the session's chat template. A different file is a
    warning, and an error unless allowed. offload: where its layers run (--rpc, --gpu-layers)."""
    from repl.hf_models import HfModelError
    from repl.model_lookup import ModelNotFound, differs_warning, find_model, model_arg_path
    from repl.session import session_template

    template = session_template(session)
    if model_path:
        try:
            path = model_arg_path(model_path)
        except HfModelError as exc:
            raise ReplayError(str(exc)) from None
        model = Model(path, template, offload=offload)
        same = file_sha256(model.path) == session.model.sha256
        warning = "" if same else differs_warning(session.model, model.path)
    else:
        try:
            path, warning = find_model(session.model)
        except ModelNotFound as exc:
            raise ReplayError(str(exc)) from None
        model = Model(path, template, offload=offload)
    if warning and not allow_change:
        warning += "; --check fails unless --allow-model-change"
    return model, warning
