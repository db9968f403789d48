"""llama.cpp RPC end to end on loopback: `steer rpc-server` processes started and stopped here
(by PID), the model's layers on them, and the same greedy text as the local run, plain and
steered, with a vector built over RPC that matches the local one.

An rpc-server serves one client at a time and ggml keeps the connection while a model uses
it, so this process and the `steer` subprocesses each get servers of their own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest

from engine import ChatContext, Model, Offload
from repl.replay import VECTOR_TOLERANCE
from repl.steering import Steering, instruction_pairs
from tests.conftest import GREEDY, ROOT, STEER, TERSE, VERBOSE, user
from vectors import bundled_path

PROMPTS = ["How do plants make food?", "Name three colors."]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One `steer rpc-server` on a free loopback port (steer execs the binary: the PID we hold
    is the server's)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [*STEER, "rpc-server", "--port", str(self.port), "--threads", "2"],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "OMP_WAIT_POLICY": "passive"},
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read().decode()
            try:  # a bare connect and close: the server drops it and accepts the next
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError("rpc-server did not start listening within 60 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc.stderr.close()


@pytest.fixture(scope="module")
def servers() -> Iterator[list[Server]]:
    """Three servers: one for this process, two for the steer subprocesses (split across both)."""
    started: list[Server] = []
    try:
        for _ in range(3):
            started.append(Server())
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def remote(servers) -> Iterator[Model]:
    """The default model with every layer on the first server."""
    model = Model(offload=Offload(rpc=(servers[0].endpoint,)))
    yield model
    model.close()  # before the server stops: ggml aborts on a lost connection


def replies(model: Model, steering: Steering | None = None, prompts=PROMPTS) -> list[str]:
    ctx = ChatContext(model, n_ctx=2048)
    try:
        if steering is not None:
            ctx.set_control(steering.buffer())
        return [ctx.generate(user(p), GREEDY).text for p in prompts]
    finally:
        ctx.close()


@pytest.fixture(scope="module")
def local_replies(model: Model) -> list[str]:
    return replies(model)


def test_every_layer_is_on_the_server(remote: Model) -> None:
    n = remote.n_layer + 1  # the blocks and the output layer
    assert remote.offloaded == f"offloaded {n}/{n} layers to GPU"


def test_greedy_replies_over_rpc_are_the_local_ones(remote: Model, local_replies) -> None:
    assert replies(remote) == local_replies


def build(model: Model) -> Steering:
    """The terse vector from 8 instruction pairs (16 prompts captured)."""
    steering = Steering(model)
    steering.contrast(
        "terse",
        instruction_pairs(TERSE, VERBOSE, 8),
        method="mean",
        chat_format=True,
        last_k=1,
        provenance={"positive": TERSE, "negative": VERBOSE},
    )
    steering.activate("terse", 0.6, (9, 13))
    return steering


def test_a_vector_built_over_rpc_matches_and_steers_like_the_local_one(
    model: Model, remote: Model, local_replies
) -> None:
    here, there = build(model), build(remote)
    try:
        a, b = here.vectors["terse"].directions, there.vectors["terse"].directions
        diff = float(np.linalg.norm(b - a) / np.linalg.norm(a))
        assert diff < VECTOR_TOLERANCE, diff  # the capture tolerance replay uses
        steered = replies(model, here)
        assert steered != local_replies  # the vector does change the replies
        assert replies(remote, there) == steered
    finally:
        here.close()
        there.close()


def test_project_and_prompt_modes_over_rpc_are_the_local_ones(model: Model, remote: Model) -> None:
    """Project mode's LoRA adapters (placed by llama.cpp with the weights they change, here on
    the server) and prompt mode's control vector steer over RPC as they do locally."""
    texts = {}
    for where, m in (("local", model), ("rpc", remote)):
        steering = Steering(m)
        steering.load(str(bundled_path("terse")), "terse")
        ctx = ChatContext(m, n_ctx=2048)
        try:
            for mode, strength in (("project", 1.0), ("prompt", 1.5)):
                steering.active.clear()
                steering.activate("terse", strength, (9, 13), mode)
                control = steering.control()
                ctx.set_adapters(control.adapters)
                ctx.set_control(control.buffer, control.prompt)
                asked = [f"{p} {TERSE}" for p in PROMPTS]
                texts[where, mode] = [ctx.generate(user(q), GREEDY).text for q in asked]
        finally:
            ctx.set_adapters([])
            ctx.close()
            steering.close()
    assert texts["rpc", "project"] == texts["local", "project"]
    assert texts["rpc", "prompt"] == texts["local", "prompt"]
    assert texts["local", "project"] != texts["local", "prompt"]


def test_some_layers_on_the_server_with_gpu_layers(servers, local_replies) -> None:
    part = Model(offload=Offload(rpc=(servers[0].endpoint,), gpu_layers=10))
    try:
        assert part.offloaded == f"offloaded 10/{part.n_layer + 1} layers to GPU"
        assert replies(part, prompts=PROMPTS[:1]) == local_replies[:1]
    finally:
        part.close()


def steer_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*STEER, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "OMP_WAIT_POLICY": "passive"},
    )


def test_steer_chat_split_over_two_servers(servers, local_replies) -> None:
    endpoints = f"{servers[1].endpoint},{servers[2].endpoint}"
    proc = subprocess.run(
        [
            *STEER,
            "chat",
            "--plain",
            "--no-session",
            "--temperature",
            "0",
            "--max-tokens",
            str(GREEDY.max_tokens),
            "--ctx",
            "2048",
            "--rpc",
            endpoints,
        ],
        input=PROMPTS[1] + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == local_replies[1].strip()
    assert f"on RPC servers {servers[1].endpoint}, {servers[2].endpoint}" in proc.stderr


def test_replay_check_over_rpc(servers) -> None:
    proc = steer_cli(
        "replay",
        str(ROOT / "sample_sessions" / "plain_chat.toml"),
        "--check",
        "--rpc",
        servers[1].endpoint,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1].endswith(" identical, 0 different")


def test_vector_build_over_rpc(servers, tmp_path) -> None:
    out = tmp_path / "terse.gguf"
    proc = steer_cli(
        "vector",
        "build",
        "terse",
        "--positive",
        TERSE,
        "--negative",
        VERBOSE,
        "--n",
        "2",
        "--no-calibrate",
        "--out",
        str(out),
        "--rpc",
        servers[2].endpoint,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out.is_file()


def test_the_server_is_ours_to_stop(servers) -> None:
    """Sanity of the fixture: each server is the process we started (steer exec'd it)."""
    for server in servers:
        with open(f"/proc/{server.proc.pid}/comm") as f:
            assert f.read().strip() in ("ggml-rpc-server", "rpc-server")
    assert sys.platform == "linux"


def test_a_server_lost_mid_chat_ends_steer_with_one_line(tmp_path) -> None:
    """ggml cannot recover from a lost server (it aborts); steer says so in one line, exits 3
    without a core dump, and the session file keeps the reply finished before."""
    server = Server()
    session = tmp_path / "lost.toml"
    chat = subprocess.Popen(
        [
            *STEER,
            "chat",
            "--plain",
            "--temperature",
            "0",
            "--max-tokens",
            "8",
            "--session",
            str(session),
            "--rpc",
            server.endpoint,
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        chat.stdin.write(PROMPTS[1] + "\n")
        chat.stdin.flush()
        assert chat.stdout.readline().strip()  # the first reply is arriving
        deadline = time.monotonic() + 120
        while not session.exists() and time.monotonic() < deadline:  # saved once finished
            time.sleep(0.1)
        server.stop()
        with contextlib.suppress(BrokenPipeError):  # steer may be gone already: ggml noticed
            chat.stdin.write("And three more?\n")
            chat.stdin.close()
        assert chat.wait(120) == 3
        errors = [line for line in chat.stderr.read().splitlines() if line.startswith("error")]
        assert len(errors) == 1 and "did an RPC server stop?" in errors[0], errors
        assert "Remote RPC server crashed" in errors[0] and "ggml-rpc.cpp" not in errors[0]
        assert 'kind = "assistant"' in session.read_text()
    finally:
        server.stop()
        if chat.poll() is None:
            chat.kill()
            chat.wait()
