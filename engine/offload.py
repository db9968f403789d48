"""Where a model's layers run: this machine's CPU, a local GPU, or llama.cpp `rpc-server`s.

llama-cpp-python 0.3.36 has no high-level RPC option, so this does what llama.cpp's own
`--rpc` does (vendored common/arg.cpp, `add_rpc_devices`): find the "RPC" backend registry,
get its `ggml_backend_rpc_add_server` by proc address, call it per endpoint, and register the
registry it returns, all before the model loads. The model is then given an explicit device
list (`llama_model_params.devices`), so only the servers named for *this* model are used, and a
model loaded later in the same process without `--rpc` stays local.

ggml aborts the process when it cannot reach a server (`GGML_ABORT("Failed to connect ...")`),
so every endpoint is checked here first with a plain socket and the RPC HELLO handshake: a bad
endpoint, a server that is down or busy, or a build without RPC is a one-line OffloadError.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import llama_cpp

# From the vendored ggml/include/ggml-rpc.h and ggml-rpc.cpp (RPC protocol 7.0.0).
RPC_PROTO_MAJOR = 7
RPC_PROTO_MINOR = 0
_RPC_CMD_HELLO = 14
_RPC_CONN_CAPS_SIZE = 24
_HELLO_REPLY_SIZE = 4 + _RPC_CONN_CAPS_SIZE

# enum ggml_backend_dev_type
_DEV_GPU, _DEV_IGPU = 1, 2

ALL_LAYERS = -1  # llama.cpp's n_gpu_layers for "every layer, and the output layer"


class OffloadError(Exception):
    """The requested offload cannot be set up; the message says why and how to fix it."""


@dataclass(frozen=True)
class Offload:
    """Where the layers go. rpc: "HOST:PORT" endpoints; gpu_layers: how many layers leave
    the CPU (None: all of them when there are servers or GPUs asked for, else none)."""

    rpc: tuple[str, ...] = ()
    gpu_layers: int | None = None

    @property
    def n_gpu_layers(self) -> int:
        """The value for llama_model_params.n_gpu_layers."""
        if self.gpu_layers is not None:
            return self.gpu_layers
        return ALL_LAYERS if self.rpc else 0

    def describe(self) -> str:
        """One line for the user: what runs where."""
        n = self.n_gpu_layers
        layers = "all layers" if n < 0 else f"{n} layers"
        if self.rpc:
            return f"{layers} on RPC server{'s' if len(self.rpc) > 1 else ''} {', '.join(self.rpc)}"
        return f"{layers} offloaded to the GPU" if n else "CPU only"


LOCAL = Offload()


def parse_endpoints(text: str) -> tuple[str, ...]:
    """'HOST:PORT[,HOST:PORT...]' as llama.cpp's --rpc takes it (it splits at the first ':',
    so an IPv6 address cannot be written; use a host name)."""
    endpoints = []
    for raw in text.split(","):
        item = raw.strip()
        host, sep, port = item.partition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535 or ":" in port:
            raise OffloadError(
                f"--rpc: expected HOST:PORT[,HOST:PORT...] (port 1-65535), got {item!r}"
            )
        endpoints.append(f"{host}:{int(port)}")
    if len(set(endpoints)) != len(endpoints):
        raise OffloadError(f"--rpc: an endpoint is named twice in {text!r}")
    return tuple(endpoints)


def parse_gpu_layers(text: str) -> int:
    """'all' or a whole number of layers (0 keeps everything on the CPU)."""
    if text == "all":
        return ALL_LAYERS
    if not text.isdigit():
        raise OffloadError(f"--gpu-layers: expected a whole number or 'all', got {text!r}")
    return int(text)


def check_server(endpoint: str, timeout: float = 5.0) -> tuple[int, int, int]:
    """Connect and do the RPC HELLO handshake; the server's protocol version.

    An rpc-server serves one client at a time: while another process uses it, a new connection
    waits in its backlog and the handshake times out, which is said as such.
    """
    host, _, port = endpoint.partition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(
                struct.pack("<BQ", _RPC_CMD_HELLO, _RPC_CONN_CAPS_SIZE) + bytes(_RPC_CONN_CAPS_SIZE)
            )
            reply = _recv_exactly(sock, 8 + _HELLO_REPLY_SIZE)
    except TimeoutError:
        raise OffloadError(
            f"RPC server {endpoint} did not answer within {timeout:g} s; an rpc-server serves "
            "one client at a time: is another steer or llama.cpp using it?"
        ) from None
    except OSError as exc:
        raise OffloadError(
            f"cannot reach RPC server {endpoint} ({exc.strerror or exc}); start one there with "
            "'steer rpc-server --port PORT'"
        ) from None
    (size,) = struct.unpack_from("<Q", reply)
    major, minor, patch = reply[8], reply[9], reply[10]
    if size != _HELLO_REPLY_SIZE:
        raise OffloadError(f"{endpoint} is not a llama.cpp RPC server (bad HELLO reply)")
    if major != RPC_PROTO_MAJOR or minor > RPC_PROTO_MINOR:
        raise OffloadError(
            f"RPC server {endpoint} speaks protocol {major}.{minor}.{patch}; this steer needs "
            f"{RPC_PROTO_MAJOR}.{RPC_PROTO_MINOR}.x: run 'steer rpc-server' from this install"
        )
    return major, minor, patch


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise OSError("the server closed the connection during the handshake")
        data += chunk
    return data


def ggml_library(name: str) -> ctypes.CDLL:
    """The copy of `name` (libggml, libggml-base) that libllama itself loaded.

    libllama links them by soname (libggml.so.0); opening the unversioned symlink instead
    loads a second, separate copy with its own globals (backend registry, abort hook).
    """
    lib = Path(llama_cpp.__file__).parent / "lib"
    versioned = lib / f"{name}.so.0"
    return ctypes.CDLL(str(versioned if versioned.exists() else lib / f"{name}.so"))


class _Ggml:
    """The few ggml backend-registry functions, from the libraries llama_cpp already loaded."""

    def __init__(self) -> None:
        ggml = ggml_library("libggml")
        base = ggml_library("libggml-base")
        p, s, z = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
        self.reg_by_name = _fn(ggml.ggml_backend_reg_by_name, p, [s])
        self.register = _fn(ggml.ggml_backend_register, None, [p])
        self.dev_count = _fn(ggml.ggml_backend_dev_count, z, [])
        self.dev_get = _fn(ggml.ggml_backend_dev_get, p, [z])
        self.proc_address = _fn(base.ggml_backend_reg_get_proc_address, p, [p, s])
        self.reg_dev_count = _fn(base.ggml_backend_reg_dev_count, z, [p])
        self.reg_dev_get = _fn(base.ggml_backend_reg_dev_get, p, [p, z])
        self.reg_name = _fn(base.ggml_backend_reg_name, s, [p])
        self.dev_name = _fn(base.ggml_backend_dev_name, s, [p])
        self.dev_type = _fn(base.ggml_backend_dev_type, ctypes.c_int, [p])
        self.dev_reg = _fn(base.ggml_backend_dev_backend_reg, p, [p])
        self.dev_memory = _fn(
            base.ggml_backend_dev_memory, None, [p, ctypes.POINTER(z), ctypes.POINTER(z)]
        )
        self.set_abort_callback = _fn(base.ggml_set_abort_callback, p, [_ABORT_CALLBACK])


_ABORT_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_char_p)


@_ABORT_CALLBACK
def _on_abort(message: bytes | None) -> None:
    """ggml aborts the process when an RPC server stops answering mid-decode (there is no
    error path back to the caller). Say so in one line, and end without a core dump; the
    session file was saved after the last finished reply."""
    text = " ".join((message or b"").decode("utf-8", "replace").split())
    where, sep, said = text.partition(": ")  # "path/ggml-rpc.cpp:569: Remote RPC server ..."
    text = said if sep and where.rpartition(":")[2].isdigit() else text
    sys.stderr.write(
        f"\nerror: llama.cpp stopped: {text or 'abort'} (did an RPC server stop?); "
        "the session is saved up to the last finished reply\n"
    )
    sys.stderr.flush()
    os._exit(3)


def _fn(f, restype, argtypes):
    f.restype, f.argtypes = restype, argtypes
    return f


_lib: _Ggml | None = None
_servers: dict[str, list[int]] = {}  # endpoint -> its devices, registered once per process
# endpoint -> models loaded on it now. ggml keeps one connection per endpoint while anything
# uses it and reconnects (aborting if it cannot) after; with a model loaded, the connection is
# ours and a probe would wait behind it, so only an unused endpoint is checked again.
_in_use: dict[str, int] = {}


def _ggml() -> _Ggml:
    global _lib
    if _lib is None:
        _lib = _Ggml()
    return _lib


def rpc_supported() -> bool:
    return bool(llama_cpp.llama_supports_rpc())


def rpc_devices(endpoint: str) -> list[int]:
    """The devices one server offers (usually one: its CPU or GPU), registered with ggml."""
    if endpoint in _servers:
        if not _in_use.get(endpoint):
            check_server(endpoint)
        return _servers[endpoint]
    if not rpc_supported():
        raise OffloadError(
            "this llama-cpp-python was built without the RPC backend: rebuild it with "
            "CMAKE_ARGS containing -DGGML_RPC=ON ('make install' does)"
        )
    check_server(endpoint)
    g = _ggml()
    rpc_reg = g.reg_by_name(b"RPC")
    address = g.proc_address(rpc_reg, b"ggml_backend_rpc_add_server") if rpc_reg else None
    if not address:
        raise OffloadError("llama.cpp's RPC backend has no ggml_backend_rpc_add_server")
    add_server = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)(address)
    reg = add_server(endpoint.encode())
    if not reg:
        raise OffloadError(f"RPC server {endpoint} offers no devices")
    g.register(reg)
    g.set_abort_callback(_on_abort)
    devices = [g.reg_dev_get(reg, i) for i in range(g.reg_dev_count(reg))]
    _servers[endpoint] = devices
    return devices


def acquire(offload: Offload) -> None:
    """A model now uses these servers (see _in_use)."""
    for endpoint in offload.rpc:
        _in_use[endpoint] = _in_use.get(endpoint, 0) + 1


def release(offload: Offload) -> None:
    for endpoint in offload.rpc:
        _in_use[endpoint] = max(0, _in_use.get(endpoint, 0) - 1)


def local_gpus() -> list[int]:
    """This machine's GPUs as llama.cpp would pick them (discrete ones, else one integrated),
    leaving out RPC devices: those are used only when named."""
    g = _ggml()
    gpus, igpus = [], []
    for i in range(g.dev_count()):
        dev = g.dev_get(i)
        if g.reg_name(g.dev_reg(dev)) == b"RPC":
            continue
        kind = g.dev_type(dev)
        if kind == _DEV_GPU:
            gpus.append(dev)
        elif kind == _DEV_IGPU and not igpus:
            igpus.append(dev)
    return gpus or igpus


def device_list(offload: Offload) -> list[int]:
    """The model's devices, in llama.cpp's order: RPC servers first (fewer transfers), then
    local GPUs. Empty means the CPU alone."""
    devices = [dev for endpoint in offload.rpc for dev in rpc_devices(endpoint)]
    return devices + local_gpus()


def device_summary(devices: list[int]) -> list[str]:
    """'RPC0 (127.0.0.1:50052, 23.1 of 23.4 GiB free)' per device, for `steer --rpc` output."""
    g = _ggml()
    lines = []
    for dev in devices:
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        g.dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        name = (g.dev_name(dev) or b"?").decode()
        lines.append(f"{name}: {free.value / 2**30:.1f} of {total.value / 2**30:.1f} GiB free")
    return lines
