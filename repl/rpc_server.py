"""`steer rpc-server`: run llama.cpp's rpc-server so another machine's steer can use this one.

The binary is llama.cpp's `ggml-rpc-server`, built by `make install` from the same vendored
llama.cpp and flags as steer's engine (tests/tools/build_llama_cli.sh), so a layer computes the
same numbers on a server as it does locally. llama.cpp's RPC has no authentication and no
encryption: whoever reaches the port can run graphs and read memory it allocated. So the server
listens on loopback unless --allow-remote says otherwise, and then it warns.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import socket
import sys
from pathlib import Path

DEFAULT_PORT = 50052  # llama.cpp's rpc-server default
BINARY_NAMES = ("ggml-rpc-server", "rpc-server")
TOOLS_DIR_FILE = "llama-tools-dir"  # written into the venv by `make install`


class RpcServerError(Exception):
    """The server cannot be started; the message says why and what to do."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def find_binary(explicit: str | None = None) -> Path:
    """--binary, else $STEER_RPC_SERVER, else the tools `make install` built for this venv,
    else ggml-rpc-server / rpc-server on PATH."""
    chosen = explicit or os.environ.get("STEER_RPC_SERVER")
    if chosen:
        path = Path(chosen).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise RpcServerError(f"rpc-server binary not found or not executable: {path}")
        return path
    record = Path(sys.prefix) / TOOLS_DIR_FILE
    if record.is_file():
        for name in BINARY_NAMES:
            path = Path(record.read_text().strip()) / name
            if path.is_file() and os.access(path, os.X_OK):
                return path
    for name in BINARY_NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
    raise RpcServerError(
        "llama.cpp's rpc-server is not built: run 'make install' in the steer checkout "
        "(it builds ggml-rpc-server into ~/.cache/steer), or pass --binary PATH"
    )


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise RpcServerError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port"
            ) from None


def server_command(args: argparse.Namespace) -> list[str]:
    """Check the arguments and build the rpc-server command line."""
    host = "127.0.0.1" if args.host == "localhost" else args.host
    if ":" in host:  # llama.cpp splits "host:port" at the first colon
        raise RpcServerError(
            f"--host {host}: llama.cpp's RPC cannot take an IPv6 address; use an IPv4 address "
            "or a host name"
        )
    if not is_loopback(host) and not args.allow_remote:
        raise RpcServerError(
            f"--host {host} is not loopback, and llama.cpp's RPC has no authentication: "
            "anyone who reaches the port can use this machine; add --allow-remote to serve "
            "it anyway (on a private network only)"
        )
    binary = find_binary(args.binary)
    check_port_free(host, args.port)
    threads = args.threads or os.cpu_count() or 1
    return [str(binary), "-H", host, "-p", str(args.port), "-t", str(threads)]


def run_rpc_server(args: argparse.Namespace) -> int:
    try:
        command = server_command(args)
    except RpcServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    endpoint = f"{command[2]}:{command[4]}"
    if not is_loopback(command[2]):
        print(
            f"warning: serving on {endpoint} with no authentication or encryption: anyone who "
            "can reach it can use this machine's memory and CPU",
            file=sys.stderr,
        )
    print(
        f"steer rpc-server: listening on {endpoint} ({command[6]} threads); use it with "
        f"'steer chat --rpc {endpoint}'; Ctrl+C stops it",
        file=sys.stderr,
        flush=True,
    )
    sys.stdout.flush()
    os.execv(command[0], command)  # the server is this process now: signals reach it directly
    return 0  # pragma: no cover - execv does not return
