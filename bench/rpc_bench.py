"""Local against llama.cpp RPC on loopback: decode tokens/s, prompt time, capture time, and the
bytes that cross the network per token (docs/scaling.md).

One `steer rpc-server` is started here (and stopped, by PID). The contenders alternate ABBA in
one run, so a neighbour's load falls on both alike; on a shared 2-core machine the server and
the client also compete for the same cores, which a real second machine would not. Bytes on
the wire are the server's own socket reads and writes (/proc/PID/io rchar and wchar: the
server touches no files while serving).

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


def wire_bytes(pid: int) -> int:
    fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(fields["rchar"]) + int(fields["wchar"])


def decode(model: Model, n: int, pid: int | None) -> tuple[float, float, float | None, str]:
    """(decode tok/s, prompt+first token s, bytes per decoded token, text)."""
    ctx = ChatContext(model, n_ctx=1024)
    try:
        # bytes from the first streamed token (the prompt is done) to the last
        marks: list[int] = []

        def on_token(_piece: str) -> None:
            if pid and not marks:
                marks.append(wire_bytes(pid))

        reply = ctx.generate(STORY, Sampling(temperature=0, max_tokens=n), on_token)
        end = wire_bytes(pid) if pid else 0
    finally:
        ctx.close()
    per_token = (end - marks[0]) / (reply.tokens - 1) if pid and marks else None
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
    server, endpoint = start_server(args.threads)
    try:
        b0 = wire_bytes(server.pid)
        local = Model()
        remote = Model(offload=Offload(rpc=(endpoint,)))
        load_bytes = wire_bytes(server.pid) - b0
        print(
            f"model load over RPC: {load_bytes / 1e6:.1f} MB to the server "
            f"({remote.offloaded}); weights file {local.path.stat().st_size / 1e6:.1f} MB"
        )
        rates: dict[str, list[float]] = {"local": [], "rpc": []}
        ttfts: dict[str, list[float]] = {"local": [], "rpc": []}
        caps: dict[str, list[float]] = {"local": [], "rpc": []}
        per_token: list[float] = []
        texts: dict[str, set[str]] = {"local": set(), "rpc": set()}
        for _ in range(args.rounds):
            for name in ("local", "rpc", "rpc", "local"):  # ABBA
                model = local if name == "local" else remote
                rate, ttft, bpt, text = decode(
                    model, args.tokens, server.pid if name == "rpc" else None
                )
                rates[name].append(rate)
                ttfts[name].append(ttft)
                texts[name].add(text)
                if bpt is not None:
                    per_token.append(bpt)
                caps[name].append(capture_seconds(model))
        ratio = [r / lo for r, lo in zip(rates["rpc"], rates["local"], strict=True)]
        print(
            f"decode tok/s  local {statistics.median(rates['local']):.1f}  "
            f"rpc {statistics.median(rates['rpc']):.1f}  "
            f"(rpc/local median of paired ratios {statistics.median(ratio):.2f})"
        )
        print(
            f"prompt + first token s  local {statistics.median(ttfts['local']):.3f}  "
            f"rpc {statistics.median(ttfts['rpc']):.3f}"
        )
        print(
            f"capture of {len(CAPTURE)} prompts s  local {statistics.median(caps['local']):.2f}  "
            f"rpc {statistics.median(caps['rpc']):.2f}"
        )
        print(f"bytes on the wire per decoded token: {statistics.median(per_token) / 1e3:.1f} kB")
        same = texts["local"] == texts["rpc"] and len(texts["local"]) == 1
        print(f"greedy text identical local vs rpc: {same}")
        remote.close()
        local.close()
    finally:
        if server.poll() is None:
            os.kill(server.pid, signal.SIGTERM)
            server.wait(10)


if __name__ == "__main__":
    main()
