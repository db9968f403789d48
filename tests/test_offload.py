"""--rpc and --gpu-layers without a server: parsing, refusals, and the model parameters."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from engine import Model, ModelLoadError, Offload
from engine.offload import (
    ALL_LAYERS,
    OffloadError,
    check_server,
    parse_endpoints,
    parse_gpu_layers,
    rpc_supported,
)
from tests.conftest import ROOT, STEER


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def steer(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*STEER, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_endpoints_parse_as_llama_cpp_takes_them() -> None:
    assert parse_endpoints("127.0.0.1:50052") == ("127.0.0.1:50052",)
    assert parse_endpoints("a:1, b.lan:65535") == ("a:1", "b.lan:65535")
    for bad in ("", "host", ":80", "h:", "h:0", "h:65536", "h:x", "h:1,", "::1:80", "a:1,a:1"):
        with pytest.raises(OffloadError, match="--rpc"):
            parse_endpoints(bad)


def test_gpu_layers_and_their_defaults() -> None:
    assert parse_gpu_layers("all") == ALL_LAYERS
    assert parse_gpu_layers("12") == 12
    for bad in ("-1", "x", "1.5", ""):
        with pytest.raises(OffloadError, match="--gpu-layers"):
            parse_gpu_layers(bad)
    assert Offload().n_gpu_layers == 0  # local: everything on the CPU, as before
    assert Offload(rpc=("h:1",)).n_gpu_layers == ALL_LAYERS  # --rpc alone: every layer
    assert Offload(rpc=("h:1",), gpu_layers=10).n_gpu_layers == 10
    assert Offload(gpu_layers=ALL_LAYERS).describe() == "all layers offloaded to the GPU"


def test_gpu_layers_reach_the_model_parameters(model: Model) -> None:
    """No GPU here: the value must still arrive in llama_model_params, and llama.cpp reads it
    (its own log line counts the layers it could offload: none without a device)."""
    assert model.params.n_gpu_layers == 0
    gpu = Model(model.path, offload=Offload(gpu_layers=7))
    try:
        assert gpu.params.n_gpu_layers == 7
        # llama.cpp's own count (an RPC build reports offload support even with no device)
        assert gpu.offloaded == f"offloaded 7/{gpu.n_layer + 1} layers to GPU"
        assert gpu.n_devices == 0  # so the 7 layers stay on the CPU
    finally:
        gpu.close()


def test_gpu_layers_without_a_gpu_says_so() -> None:
    proc = steer("chat", "--plain", "--no-session", "--gpu-layers", "all", "--max-tokens", "1")
    assert proc.returncode == 0, proc.stderr
    assert "no GPU backend, so every layer runs on the CPU" in proc.stderr


def test_this_build_has_rpc() -> None:
    assert rpc_supported(), "the wheel was built without -DGGML_RPC=ON"


def test_a_server_that_is_down_is_one_line_not_an_abort(tmp_path) -> None:
    port = free_port()
    proc = steer("chat", "--plain", "--no-session", "--rpc", f"127.0.0.1:{port}")
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert f"cannot reach RPC server 127.0.0.1:{port}" in line and "steer rpc-server" in line
    with pytest.raises(ModelLoadError, match="cannot reach RPC server"):
        Model(offload=Offload(rpc=(f"127.0.0.1:{port}",)))


def test_a_busy_or_silent_server_times_out_with_a_reason() -> None:
    """An rpc-server serves one client at a time; a second one waits in its backlog. A socket
    that accepts and never answers stands in for it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        endpoint = f"127.0.0.1:{listener.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(OffloadError, match="one client at a time"):
            check_server(endpoint, timeout=0.5)
        assert time.monotonic() - t0 < 5


def test_something_else_on_the_port_is_not_taken_for_a_server() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        endpoint = f"127.0.0.1:{listener.getsockname()[1]}"
        import threading

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(64)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" + bytes(16))

        threading.Thread(target=answer, daemon=True).start()
        with pytest.raises(OffloadError, match="not a llama.cpp RPC server"):
            check_server(endpoint, timeout=5)


def test_bad_flags_are_refused_by_the_parser() -> None:
    proc = steer("chat", "--plain", "--rpc", "nohost")
    assert proc.returncode == 2 and "--rpc" in proc.stderr and "HOST:PORT" in proc.stderr
    proc = steer("replay", "x.toml", "--gpu-layers", "many")
    assert proc.returncode == 2 and "--gpu-layers" in proc.stderr


def test_rpc_server_refuses_a_public_address_without_allow_remote() -> None:
    proc = steer("rpc-server", "--host", "0.0.0.0", "--port", str(free_port()))
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "no authentication" in line and "--allow-remote" in line


def test_rpc_server_refuses_an_ipv6_host() -> None:
    proc = steer("rpc-server", "--host", "::1", "--port", str(free_port()))
    assert proc.returncode == 2
    assert "cannot take an IPv6 address" in one_line_error(proc)


def test_rpc_server_refuses_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = steer("rpc-server", "--port", str(port))
    assert proc.returncode == 2
    assert "pick another --port" in one_line_error(proc)


def test_rpc_server_without_a_binary_says_how_to_get_one(tmp_path) -> None:
    proc = steer("rpc-server", "--binary", str(tmp_path / "none"), "--port", str(free_port()))
    assert proc.returncode == 2
    assert "rpc-server binary not found" in one_line_error(proc)


def test_capture_copies_wanted_rows_in_runs() -> None:
    """Capture copies only the rows it averages (each prompt's last K tokens), one
    ggml_backend_tensor_get per run of consecutive rows: over RPC the rest never travel."""
    from engine.capture import _runs

    assert _runs([]) == []
    assert _runs([4]) == [(4, 5)]
    assert _runs([9, 3, 4, 5, 10, 20]) == [(3, 6), (9, 11), (20, 21)]
