"""Headless paths never import Textual: scripts and CI must not pay for (or depend on) it."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

CHECK = """
import sys
import repl.cli, repl.plain, repl.core, repl.chat_commands
from repl.cli import main
sys.stdin = open(sys.argv[1])
try:
    main(["chat", "--plain", "--temperature", "0", "--max-tokens", "4"])
finally:
    loaded = sorted(m for m in sys.modules if m.split(".")[0] == "textual")
    print("TEXTUAL", loaded, file=sys.stderr)
"""


def test_plain_repl_never_imports_textual(tmp_path) -> None:
    stdin = tmp_path / "in.txt"
    stdin.write_text("Hello\n/help\n")
    proc = subprocess.run(
        [sys.executable, "-c", CHECK, str(stdin)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "TEXTUAL []" in proc.stderr


def test_vectors_and_engine_respect_the_arrows() -> None:
    for package, banned in (
        ("vectors", ("llama_cpp", "textual", "prompt_toolkit", "repl", "engine")),
        ("engine", ("textual", "prompt_toolkit", "repl", "vectors")),
    ):
        for path in (ROOT / package).rglob("*.py"):
            for line in path.read_text().splitlines():
                words = line.split()
                if words[:1] in (["import"], ["from"]) and len(words) > 1:
                    assert words[1].split(".")[0] not in banned, f"{path}: {line}"
