"""--model hf:OWNER/REPO[:QUANT]: resolved through the Hugging Face cache as llama.cpp's -hf
resolves it. This machine cannot reach the hub, so each test builds its own cache folder in
huggingface_hub's layout (refs/main -> snapshots/<commit>/<file> -> ../../blobs/<sha256>) and
runs offline (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from repl import hf_models
from repl.hf_models import HfModelError, choose_file, parse_ref, split_parts
from repl.session_file import load_session
from tests.test_plain import model_variant, steer

REPO = "steer-test/SmolLM2-135M-Instruct-GGUF"
FILE = "SmolLM2-135M-Instruct-Q4_1.gguf"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def make_cache(root: Path, files: dict[str, bytes | Path]) -> Path:
    """A hub cache under root/hub holding REPO at COMMIT (refs/main) with these files."""
    repo = root / "hub" / ("models--" + REPO.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "blobs").mkdir()
    for name, content in files.items():
        data = content.read_bytes() if isinstance(content, Path) else content
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = repo / "snapshots" / COMMIT / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return root / "hub"


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory, model) -> Path:
    """The default model with its template's default system prompt changed: a file of its
    own (another sha256), so only the hub cache can provide it."""
    own = model.chat_template
    assert "named SmolLM, trained by Hugging Face" in own
    changed = own.replace("named SmolLM, trained by Hugging Face", "named Smol")
    return model_variant(tmp_path_factory.mktemp("variant"), FILE, template=changed)


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory, hf_model: Path) -> Path:
    root = tmp_path_factory.mktemp("hf")
    make_cache(root, {"mmproj-f16.gguf": b"GGUF not a model", FILE: hf_model})
    return root


def offline_env(hf_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    return {**env, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}


# ---- which file: llama.cpp's find_best_model --------------------------------------------------

FILES = [
    "README.md",
    "mmproj-model-f16.gguf",
    "model-Q8_0.gguf",
    "model-Q4_K_M.gguf",
    "sub/model-q5_k_m-00002-of-00002.gguf",
    "sub/model-q5_k_m-00001-of-00002.gguf",
    "imatrix.gguf",
]


def test_the_quant_rule_is_llama_cpps() -> None:
    assert choose_file(FILES, "") == "model-Q4_K_M.gguf"  # the default tag
    assert choose_file(FILES, "q8_0") == "model-Q8_0.gguf"  # case-insensitive
    first = "sub/model-q5_k_m-00001-of-00002.gguf"
    assert choose_file(FILES, "Q5_K_M") == first  # the first part of a split model
    assert split_parts(FILES, first) == [first, "sub/model-q5_k_m-00002-of-00002.gguf"]
    assert choose_file(FILES, "Q2_K") is None  # a named tag never falls back
    assert choose_file([f for f in FILES if "Q4_K_M" not in f], "") == "model-Q8_0.gguf"
    assert choose_file(["mmproj-f16.gguf", "x-F16.gguf", "imatrix.gguf"], "") == "x-F16.gguf"
    assert choose_file(["model-Q4_K_Mx.gguf"], "Q4_K_M") is None  # the tag must end there


@pytest.mark.parametrize("raw", ["hf:nobody", "hf:a/b/c", "hf:a/b:Q4 K", "hf:../b", "hf:a/.."])
def test_a_malformed_reference_is_one_line(raw: str) -> None:
    with pytest.raises(HfModelError) as info:
        parse_ref(raw)
    assert "hf:OWNER/REPO[:QUANT]" in str(info.value) and "\n" not in str(info.value)


def test_the_cache_is_read_as_huggingface_hub_reads_it(hf_home: Path) -> None:
    from huggingface_hub import try_to_load_from_cache

    cache = hf_home / "hub"
    ours = hf_models.resolve(f"hf:{REPO}", cache=cache, offline_mode=True)
    theirs = try_to_load_from_cache(REPO, FILE, cache_dir=cache)
    assert ours == Path(theirs) and ours.name == FILE  # the mmproj file is passed over
    assert hf_models.describe(ours) == (f"hf:{REPO}:Q4_1", FILE)
    assert hf_models.resolve(f"hf:{REPO}:q4_1", cache=cache, offline_mode=True) == ours
    with pytest.raises(HfModelError, match="no Q8_0 GGUF file cached"):
        hf_models.resolve(f"hf:{REPO}:Q8_0", cache=cache, offline_mode=True)


def test_offline_and_not_cached_is_one_line(tmp_path: Path) -> None:
    env = offline_env(tmp_path)
    proc = steer("chat", "--plain", "--no-session", "--model", "hf:someone/else", env=env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "not in the Hugging Face cache" in proc.stderr
    assert "HF_HUB_OFFLINE is set" in proc.stderr


def test_a_hub_model_chats_records_its_reference_and_replays(
    tmp_path: Path, hf_home: Path, hf_model: Path
) -> None:
    env = offline_env(hf_home)
    session = tmp_path / "hf.toml"
    args = ["--model", f"hf:{REPO}", "--temperature", "0", "--max-tokens", "8"]
    made = steer("chat", "--plain", "--session", str(session), *args, stdin="Hi\n", env=env)
    assert made.returncode == 0 and made.stdout.strip(), made.stderr
    model = load_session(session).model
    digest = hashlib.sha256(hf_model.read_bytes()).hexdigest()
    assert (model.hf, model.file, model.sha256, model.path) == (
        f"hf:{REPO}:Q4_1",
        FILE,
        digest,
        None,  # never the cache path
    )
    # replay finds the model again through the reference, in the cache
    checked = steer("replay", "--check", str(session), env=env)
    assert checked.returncode == 0 and "1 identical" in checked.stdout, checked.stderr
    # with the cache gone, the lookup says where it looked
    shutil.rmtree(hf_home / "hub" / ("models--" + REPO.replace("/", "--")) / "snapshots")
    gone = steer("replay", "--check", str(session), env=env)
    assert gone.returncode == 2 and gone.stderr.count("\n") == 1, gone.stderr
    assert f"hf:{REPO}:Q4_1 in the Hugging Face cache" in gone.stderr


# ---- online: a stand-in hub on loopback ---------------------------------------------------------


class FakeHub:
    """The few endpoints huggingface_hub uses to list a repo and download a file, served on
    127.0.0.1 (HF_ENDPOINT points there); every request is logged."""

    def __init__(self, files: dict[str, bytes]) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        hub = self
        self.files = files
        self.requests: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                hub.serve(self, body=False)

            def do_GET(self) -> None:
                hub.serve(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def serve(self, handler, body: bool) -> None:
        import json

        self.requests.append(f"{handler.command} {handler.path}")
        path = handler.path.split("?")[0]
        headers: dict[str, str] = {}
        prefix = f"/{REPO}/resolve/main/"
        if path == f"/api/models/{REPO}":
            siblings = [{"rfilename": name} for name in self.files]
            info = {"id": REPO, "sha": COMMIT, "siblings": siblings}
            data, headers = json.dumps(info).encode(), {"Content-Type": "application/json"}
        elif path.startswith(prefix) and path[len(prefix) :] in self.files:
            data = self.files[path[len(prefix) :]]
            headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{sha(data)}"'}
        else:
            data = b""
            handler.send_response(404)
        if headers:
            handler.send_response(200)
        for key, value in {**headers, "Content-Length": str(len(data))}.items():
            handler.send_header(key, value)
        handler.end_headers()
        if body:
            handler.wfile.write(data)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_online_it_downloads_into_the_cache_and_offline_it_asks_nothing(tmp_path: Path) -> None:
    """The served "model" is a stub (a real one is 98 MB to serve): llama.cpp then refuses it,
    and its one-line error names the file that was resolved, in the cache."""
    stub = b"GGUF" + bytes(64)
    hub = FakeHub({"README.md": b"hi", "mmproj-f16.gguf": b"GGUF", FILE: stub})
    env = {**offline_env(tmp_path), "HF_ENDPOINT": hub.url}
    del env["HF_HUB_OFFLINE"]
    args = ["chat", "--plain", "--no-session", "--model", f"hf:{REPO}:Q4_1"]
    cached = tmp_path / "hub" / ("models--" + REPO.replace("/", "--")) / "snapshots" / COMMIT
    expected = f"error: llama.cpp could not load the model: {cached / FILE}\n"
    try:
        online = steer(*args, stdin="Hi\n", env=env)
        assert online.stderr == expected
        assert f"GET /{REPO}/resolve/main/{FILE}" in hub.requests  # downloaded: only that file
        assert not any("mmproj" in r or "README" in r for r in hub.requests)
        assert (cached / FILE).read_bytes() == stub
        seen = len(hub.requests)
        offline = steer(*args, stdin="Hi\n", env={**env, "HF_HUB_OFFLINE": "1"})
        assert offline.stderr == expected
        assert len(hub.requests) == seen  # HF_HUB_OFFLINE: not one request
    finally:
        hub.close()
    # the hub gone (connection refused): the cached snapshot, as llama.cpp falls back to it
    assert steer(*args, stdin="Hi\n", env=env).stderr == expected
