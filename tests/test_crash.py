"""Attacks on a running steer: kill -9, Ctrl+C, a second steer, a full disk, a read-only folder.

Every test drives the real program (`python -m repl.cli chat --plain`, stdin piped) and then
checks what is on disk: the session file is always a whole version that loads and replays,
and no half-written file is left where steer or the user would take it for a real one.
"""

from __future__ import annotations

import codecs
import os
import queue
import resource
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from repl.session_file import from_toml, load_session
from repl.test_hooks import PAUSE_ENV, PAUSED, SIGINT_ENV
from tests.conftest import ROOT, STEER, TERSE, VERBOSE

CONTRAST = f'/contrast t "{TERSE}" "{VERBOSE}"'


_RUNNING: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_steer_outlives_its_test():
    """A failed test must not leave its steer waiting for input for ever."""
    yield
    while _RUNNING:
        proc = _RUNNING.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


class Steer:
    """A steer process fed line by line, with its output read as it comes."""

    def __init__(
        self,
        session: Path,
        env: dict[str, str],
        *extra: str,
        preexec_fn: Callable[[], None] | None = None,
        wrap: list[str] | None = None,
    ) -> None:
        args = [*STEER, "chat", "--plain", "--temperature", "0", "--session", str(session)]

        def child() -> None:
            # Ctrl+C as in a terminal, whatever this test run inherited: started in the
            # background by a non-interactive shell, it ignores SIGINT, and so would steer
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            if preexec_fn is not None:
                preexec_fn()

        self.proc = subprocess.Popen(
            [*(wrap or []), *args, "--max-tokens", "8", *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
            preexec_fn=child,
        )
        _RUNNING.append(self.proc)
        self.out: queue.Queue[str] = queue.Queue()
        self.err: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._after = {"out": 0, "err": 0}
        self.pumps = [
            threading.Thread(target=self._pump, args=(stream, q), daemon=True)
            for stream, q in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for pump in self.pumps:
            pump.start()

    @staticmethod
    def _pump(stream, q: queue.Queue[str]) -> None:
        """Pass on what the process writes as it comes: whole lines, or the start of a line
        (a reply being streamed) once nothing more is there to read."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while chunk := stream.buffer.read1(1 << 16):
            q.put(decoder.decode(chunk))

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_for(self, text: str, *, stream: str = "out", timeout: float = 120) -> None:
        """Wait until `text` is written, after the place where the last wait found its text."""
        q, seen = (self.out, self.stdout) if stream == "out" else (self.err, self.stderr)
        start = time.monotonic()
        while (found := "".join(seen).find(text, self._after[stream])) < 0:
            left = timeout - (time.monotonic() - start)
            try:
                seen.append(q.get(timeout=max(left, 0.01)))
            except queue.Empty:
                raise AssertionError(f"no {text!r} on std{stream} in {timeout}s: {seen}") from None
        self._after[stream] = found + len(text)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        assert self.proc.returncode == -signal.SIGKILL

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        """Close stdin (end of input) and collect the rest of the output."""
        self.proc.stdin.close()
        self.proc.wait(timeout=timeout)
        for pump in self.pumps:
            pump.join(timeout=30)  # each ends at the end of its stream
        for q, seen in ((self.out, self.stdout), (self.err, self.stderr)):
            while not q.empty():
                seen.append(q.get())
        return self.proc.returncode, "".join(self.stdout), "".join(self.stderr)


def run_steer(session: Path, env: dict, stdin: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*STEER, "chat", "--plain", "--temperature", "0", "--max-tokens", "8", *extra]
        + ["--session", str(session)],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def replay_check(session: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*STEER, "replay", str(session), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def leftovers(*folders: Path) -> list[str]:
    """Temporary or partial files: what a kill may leave, never under a real name."""
    found = []
    for folder in folders:
        if folder.is_dir():
            found += [str(p) for p in folder.rglob("*") if p.name.endswith(".tmp")]
    return found


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """A session with one greedy reply, made by a steer that ended normally (once a module)."""
    folder = tmp_path_factory.mktemp("made")
    session = folder / "chat.toml"
    env = {**os.environ, "STEER_DATA_DIR": str(folder / "data")}
    proc = run_steer(session, env, "Name a color.\n")
    assert proc.returncode == 0, proc.stderr
    return session


@pytest.fixture
def world(made: Path, tmp_path: Path) -> tuple[Path, dict]:
    """A copy of that session in this test's own folder, with its own empty library."""
    env = {**os.environ, "STEER_DATA_DIR": str(tmp_path / "data")}
    session = tmp_path / "chat.toml"
    shutil.copy(made, session)
    return session, env


def assert_intact(session: Path, env: dict, previous: bytes, *, next_kinds=()) -> None:
    """The file on disk is exactly the previous version, or (when the work finished before
    the kill) the next complete one: the previous events plus `next_kinds`. It replays."""
    now = session.read_bytes()
    if now != previous:
        old = [(e.kind, e.text) for e in from_toml(previous.decode(), "previous").events]
        new = load_session(session).events
        assert next_kinds and [(e.kind, e.text) for e in new[: len(old)]] == old
        assert [e.kind for e in new[len(old) :]] == list(next_kinds)
    load_session(session)
    check = replay_check(session, env)
    assert check.returncode == 0, check.stdout + check.stderr


# ---- kill -9 ---------------------------------------------------------------------------------


def test_kill_during_autosave_leaves_the_previous_version(world) -> None:
    session, env = world
    previous = session.read_bytes()
    steer = Steer(session, {**env, "STEER_TEST_SAVE_PAUSE": "60"})
    steer.send("/set top_k 5")
    steer.wait_for("steer-test: about to rename chat.toml", stream="err")
    assert leftovers(session.parent)  # the new version is written, not yet renamed
    second = run_steer(session, env, "Hello\n")  # meanwhile a second steer is refused
    assert second.returncode == 2 and second.stdout == ""
    assert "is open in another steer (pid" in second.stderr and second.stderr.count("\n") == 1
    steer.kill()
    assert_intact(session, env, previous)
    # a new steer opens it at once (the dead one's lock is free) and clears its temp file
    resumed = run_steer(session, env, "/set top_k 5\n")
    assert resumed.returncode == 0 and resumed.stderr == "", resumed.stderr
    assert leftovers(session.parent) == []
    assert load_session(session).events[-1].text == "/set top_k 5"


def test_kills_at_random_moments_of_a_busy_session_leave_whole_files(world) -> None:
    session, env = world
    lines = "".join(f"/set top_k {k}\n/system s{k}\n" for k in range(400))
    for delay in (1.3, 2.1, 2.9):
        steer = Steer(session, env)
        steer.proc.stdin.write(lines)
        steer.proc.stdin.flush()
        time.sleep(delay)
        steer.kill()
        loaded = load_session(session)  # whole, whichever version it is
        assert [e.kind for e in loaded.events][:2] == ["user", "assistant"]
    check = replay_check(session, env)
    assert check.returncode == 0, check.stdout + check.stderr


def test_kill_mid_reply_leaves_the_previous_version(world) -> None:
    session, env = world
    steer = Steer(session, env, "--max-tokens", "400")
    steer.send("/set top_k 5")
    steer.wait_for("top_k = 5")
    previous = session.read_bytes()
    steer.send("Write a long story about a dragon.")
    steer.wait_for(" ")  # the reply is being streamed
    steer.kill()
    assert_intact(session, env, previous, next_kinds=("user", "assistant"))


def test_kill_mid_contrast_keeps_no_vector(world) -> None:
    session, env = world
    steer = Steer(session, {**env, PAUSE_ENV: "5"})  # held after 4 of 48 prompts
    steer.send("/set top_k 5")
    steer.wait_for("top_k = 5")
    previous = session.read_bytes()
    steer.send(CONTRAST)
    steer.wait_for(PAUSED, stream="err")
    steer.kill()
    assert_intact(session, env, previous)
    library = Path(env["STEER_DATA_DIR"]) / "vectors"
    assert not (session.parent / "chat.vectors").exists()
    assert not library.exists() or list(library.iterdir()) == []


def test_kill_while_saving_a_vector_leaves_no_vector_in_the_library(world) -> None:
    session, env = world
    steer = Steer(session, {**env, "STEER_TEST_SAVE_PAUSE": "60"})
    steer.send(CONTRAST + " --n 2 --no-calibrate")
    steer.wait_for("about to rename t.gguf", stream="err")  # kept beside the session
    steer.kill()
    load_session(session)
    steer = Steer(session, env)  # resume: the built vector never reached the session
    steer.send("/vector list")
    steer.send("/steer")
    code, out, err = steer.finish()
    assert code == 0 and err == "", err
    assert "library" in out and "nothing else" in out and "no vectors loaded" in out
    assert leftovers(session.parent) == []


def test_kill_while_saving_to_the_library(world) -> None:
    session, env = world
    steer = Steer(session, env)
    steer.send(CONTRAST + " --n 2 --no-calibrate")
    steer.wait_for("apply it:")
    steer.proc.stdin.close()
    steer.proc.wait(timeout=60)
    library = Path(env["STEER_DATA_DIR"]) / "vectors"
    steer = Steer(session, {**env, "STEER_TEST_SAVE_PAUSE": "60"})
    steer.send("/vector save t")
    steer.wait_for("about to rename t.gguf", stream="err")
    steer.kill()
    assert [p.name for p in library.glob("*.gguf")] == []  # only a hidden .t.gguf.*.tmp
    proc = run_steer(session, env, "/vector load t lib_t\n")
    assert proc.returncode == 0 and "does not exist" in proc.stderr, proc.stderr


# ---- Ctrl+C ----------------------------------------------------------------------------------


def test_ctrl_c_stops_contrast_and_builds_nothing(world) -> None:
    session, env = world
    steer = Steer(session, {**env, SIGINT_ENV: "3"})  # Ctrl+C after 2 of 48 prompts
    steer.send("/set top_k 5")
    steer.wait_for("top_k = 5")
    steer.send(CONTRAST)
    steer.wait_for("cancelled; nothing was built", stream="err", timeout=60)
    steer.send("/steer")
    steer.send("Name a color.")
    code, out, err = steer.finish()
    assert code == 0 and "no vectors loaded" in out and "Traceback" not in err
    events = load_session(session).events
    assert [e.kind for e in events][-3:] == ["command", "user", "assistant"]
    assert not any(e.text.startswith("/contrast") for e in events)
    assert not (session.parent / "chat.vectors").exists() and leftovers(session.parent) == []


def test_ctrl_c_stops_a_replay_in_the_chat_and_in_the_cli(world) -> None:
    session, env = world
    sample = ROOT / "sample_sessions" / "plain_chat.toml"  # 3 replies
    before = {p: p.stat().st_mtime_ns for p in sample.parent.rglob("*")}
    steer = Steer(session, {**env, SIGINT_ENV: "1"})  # Ctrl+C once the first reply is checked
    steer.send("/set top_k 5")
    steer.wait_for("top_k = 5")
    saved = session.read_bytes()
    steer.send(f"/replay {sample}")
    steer.wait_for("replay cancelled", timeout=120)
    steer.send("/set top_k 6")
    code, out, err = steer.finish()
    assert code == 0 and "top_k = 6" in out and "Traceback" not in err
    assert "turn 1: identical" in out and "turn 2:" not in out
    assert session.read_bytes() != saved and load_session(session).events[-1].text == "/set top_k 6"
    cli = subprocess.run(
        [*STEER, "replay", str(sample), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**env, SIGINT_ENV: "1"},
        timeout=300,
    )
    assert cli.returncode == 130 and "replay cancelled" in cli.stdout, cli.stdout + cli.stderr
    assert "turn 1: identical" in cli.stdout and "turn 2:" not in cli.stdout
    assert "Traceback" not in cli.stderr
    assert {p: p.stat().st_mtime_ns for p in sample.parent.rglob("*")} == before


def test_ctrl_c_between_lines_exits_quietly(world) -> None:
    session, env = world
    steer = Steer(session, env)
    steer.send("/set top_k 5")
    steer.wait_for("top_k = 5")
    steer.proc.send_signal(signal.SIGINT)
    steer.proc.wait(timeout=60)  # on the signal alone: its input is still open
    code, _, err = steer.finish()
    assert code == 130 and "Traceback" not in err, err
    assert load_session(session).events[-1].text == "/set top_k 5"


# ---- full disk, read-only folder ---------------------------------------------------------------


def small_files(limit: int) -> Callable[[], None]:
    """In the child: files may not grow past `limit` bytes, and writing more fails with EFBIG
    (SIGXFSZ ignored) exactly as a full disk fails with ENOSPC. Works as root, needs no mount."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_is_one_error_and_the_chat_goes_on(world) -> None:
    session, env = world
    previous = session.read_bytes()
    steer = Steer(session, env, preexec_fn=small_files(len(previous) + 600))
    steer.send("Tell me about the sea. " * 40)  # the next version no longer fits
    steer.wait_for("autosave to", stream="err")
    steer.send("/undo")
    steer.send("Name a fruit.")
    code, out, err = steer.finish()
    assert code == 0 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line]
    assert errors and all(e.startswith("error: autosave to") for e in errors), err
    assert "File too large" in errors[0] and "/session save PATH" in errors[0]
    assert out.count("\n") >= 2  # both replies were made
    assert_intact(session, env, previous)
    assert leftovers(session.parent) == []


def can_mount_privately() -> bool:
    probe = ["unshare", "--mount", "--propagation", "private", "mount", "--bind", "/tmp", "/tmp"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(not can_mount_privately(), reason="needs unshare/mount (CAP_SYS_ADMIN)")
def test_a_folder_turned_read_only_mid_chat_and_saving_elsewhere(tmp_path) -> None:
    """Root ignores permission bits, so the folder is made truly read-only: steer runs in its
    own mount namespace, where a read-only bind mount covers the folder mid-chat (EROFS).
    The test's own view, and the rest of the machine, are untouched."""
    folder, elsewhere = tmp_path / "ro", tmp_path / "rw"
    folder.mkdir()
    elsewhere.mkdir()
    env = {**os.environ, "STEER_DATA_DIR": str(tmp_path / "data")}
    session = folder / "chat.toml"
    wrap = ["unshare", "--mount", "--propagation", "private"]
    steer = Steer(session, env, wrap=wrap)
    steer.send("/set top_k 5")
    steer.wait_for("top_k = 5")
    previous = session.read_bytes()
    # a read-only bind of the folder on top of itself, seen only by that steer; the lock file
    # it holds open stays below, so the remount is not "busy"
    read_only = f'mount --bind "{folder}" "{folder}" && mount -o remount,ro,bind "{folder}"'
    nsenter = ["nsenter", "-t", str(steer.proc.pid), "-m", "sh", "-c", read_only]
    subprocess.run(nsenter, check=True, timeout=10)
    steer.send("Name a color.")
    steer.wait_for("autosave to", stream="err")
    steer.send(f"/session save {elsewhere / 'elsewhere.toml'}")
    steer.wait_for("session saved to")
    steer.send("Name a fruit.")
    code, out, err = steer.finish()
    assert code == 0 and "Traceback" not in err, err
    assert "Read-only file system" in err and err.count("error:") == 1, err
    assert "/session save PATH" in err
    assert session.read_bytes() == previous
    moved = load_session(elsewhere / "elsewhere.toml")
    assert [e.kind for e in moved.events] == ["command", "user", "assistant", "user", "assistant"]
    assert leftovers(folder, elsewhere) == []
