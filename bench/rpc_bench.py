"""Local against llama.cpp RPC on loopback: decode tokens/s, prompt time, capture time, and the
bytes that cross the network per token (docs/scaling.md).

Two `steer rpc-server`s are started here (and stopped, by PID): one for the timings, one
behind a byte-counting TCP proxy in this process for what crosses the network (an rpc-server
serves one client at a time, so the two cannot share one). The contenders alternate ABBA in
one run, so a neighbour's load falls on both alike; on a shared 2-core machine the server and
the client also compete for the same cores, which a real second machine would not.

    .venv/bin/python bench/rpc_bench.py [--rounds 3] [--tokens 64]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import ChatContext, Model, Offload, Sampling  # noqa: E402
from engine.capture import Probe  # noqa: E402

STORY = [{"role": "user", "content": "Write a long story about a dragon."}]
CAPTURE = [f"Tell me about the number {i}." for i in range(8)]


def start_server(threads: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "repl.cli",
            "rpc-server",
            "--port",
            str(port),
            "--threads",
            str(threads),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "passive")},
    )
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("rpc-server did not start")


class CountingProxy:
    """Forwards 127.0.0.1:port to an rpc-server and counts the bytes each way."""

    def __init__(self, target: str) -> None:
        host, _, port = target.partition(":")
        self.target = (host, int(port))
        self.up = self.down = 0  # client -> server, server -> client
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def total(self) -> int:
        return self.up + self.down

    def _serve(self) -> None:
        while True:
            client, _ = self.listener.accept()
            server = socket.create_connection(self.target)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pipe, args=(client, server, "up"), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, "down"), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, way: str) -> None:
        try:
            while data := src.recv(1 << 20):
                setattr(self, way, getattr(self, way) + len(data))
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)  # pass the end on (close would not wake the other pipe)
        except OSError:
            pass


def decode(model: Model, n: int, proxy: CountingProxy | None = None):
    """(decode tok/s, prompt + first token s, bytes per decoded token, text)."""
    ctx = ChatContext(model, n_ctx=1024)
    marks: list[int] = []

    def on_token(_piece: str) -> None:  # from the first token on, the prompt is done
        if proxy is not None and not marks:
            marks.append(proxy.total)

    try:
        reply = ctx.generate(STORY, Sampling(temperature=0, max_tokens=n), on_token)
    finally:
        ctx.close()
    per_token = (proxy.total - marks[0]) / (reply.tokens - 1) if marks else None
    return reply.tokens_per_s, reply.ttft_s, per_token, reply.text


def capture_seconds(model: Model) -> float:
    probe = Probe(model)
    try:
        prompts = [model.chat_tokens([{"role": "user", "content": p}]) for p in CAPTURE]
        t0 = time.perf_counter()
        probe.capture(prompts)
        return time.perf_counter() - t0
    finally:
        probe.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    servers = [start_server(args.threads) for _ in range(2)]
    try:
        run(args, servers[0][1], CountingProxy(servers[1][1]))
    finally:
        for proc, _ in servers:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(10)


def run(args: argparse.Namespace, endpoint: str, proxy: CountingProxy) -> None:
    local = Model()
    remote = Model(offload=Offload(rpc=(endpoint,)))
    print(f"model {local.name}: {local.path.stat().st_size / 1e6:.1f} MB file, {remote.offloaded}")
    # what crosses the network, through the proxy: the load, then per decoded token
    for label, layers in (("all layers", None), ("blocks only, output layer local", local.n_layer)):
        before = proxy.total
        metered = Model(offload=Offload(rpc=(proxy.endpoint,), gpu_layers=layers))
        loaded = proxy.total - before
        _, _, per_token, text = decode(metered, args.tokens, proxy)
        metered.close()
        print(f"  {label}: load {loaded / 1e6:.1f} MB; per decoded token {per_token / 1e3:.1f} kB")
    rates: dict[str, list[float]] = {"local": [], "rpc": []}
    ttfts: dict[str, list[float]] = {"local": [], "rpc": []}
    caps: dict[str, list[float]] = {"local": [], "rpc": []}
    texts: dict[str, set[str]] = {"local": set(), "rpc": set()}
    for _ in range(args.rounds):
        for name in ("local", "rpc", "rpc", "local"):  # ABBA
            model = local if name == "local" else remote
            rate, ttft, _, text = decode(model, args.tokens)
            rates[name].append(rate)
            ttfts[name].append(ttft)
            texts[name].add(text)
            caps[name].append(capture_seconds(model))
    ratio = [r / lo for r, lo in zip(rates["rpc"], rates["local"], strict=True)]
    cap_ratio = [r / lo for r, lo in zip(caps["rpc"], caps["local"], strict=True)]
    med = statistics.median
    print(
        f"decode tok/s ({args.tokens} tokens): local {med(rates['local']):.1f}, "
        f"rpc {med(rates['rpc']):.1f}; rpc/local paired {med(ratio):.2f} "
        f"(range {min(ratio):.2f}-{max(ratio):.2f}, {len(ratio)} pairs)"
    )
    print(f"prompt + first token s: local {med(ttfts['local']):.3f}, rpc {med(ttfts['rpc']):.3f}")
    print(
        f"capture of {len(CAPTURE)} prompts s: local {med(caps['local']):.2f}, "
        f"rpc {med(caps['rpc']):.2f}; rpc/local paired {med(cap_ratio):.2f}"
    )
    same = texts["local"] == texts["rpc"] and len(texts["local"]) == 1
    print(f"greedy text identical local vs rpc: {same}")
    remote.close()
    local.close()


if __name__ == "__main__":
    main()
