"""/contrast, /steer and /vector through the command core, the plain REPL and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import threading

import numpy as np
import pytest

from engine import ChatContext, default_model_path
from repl.core import Core
from repl.steering import library_dir
from tests.conftest import GREEDY, ROOT, STEER, TERSE, VERBOSE
from vectors import SteeringVector, save_vector


@pytest.fixture
def steered_core(model, steering) -> Core:
    """The session's shared steering, put back as it was afterwards: other vectors removed,
    and the terse vector's provenance restored (/vector save records where it went, which the
    vector view's snapshot in test_app_workbench.py would otherwise show, depending on order)."""
    core = Core(model, ChatContext(model, n_ctx=1024), GREEDY)
    core.steering = steering
    steering.active.clear()
    terse = steering.vectors["terse"]
    meta = dict(terse.meta)
    yield core
    steering.active.clear()
    for name in list(steering.vectors):
        if name != "terse":
            steering.vectors.pop(name)
    steering.vectors["terse"] = terse
    terse.meta.clear()
    terse.meta.update(meta)


def say(core: Core, line: str) -> list[str]:
    outcome = core.submit(line)
    assert not outcome.errors, outcome.errors
    return outcome.lines()


def error(core: Core, line: str) -> str:
    outcome = core.submit(line)
    assert len(outcome.errors) == 1 and "\n" not in outcome.errors[0], outcome
    return outcome.errors[0]


def test_steer_applies_recommendations_adjusts_and_switches_off(steered_core: Core) -> None:
    core = steered_core
    rec = core.steering.vectors["terse"].recommended_range
    assert "terse" in say(core, "/steer")[0] and "off" in say(core, "/steer")[0]
    say(core, "/steer terse")
    assert core.active_steering() == [{"name": "terse", "strength": 1.0, "layers": list(rec)}]
    say(core, "/steer terse -0.5 --layers 2-6")
    assert core.active_steering() == [{"name": "terse", "strength": -0.5, "layers": [2, 6]}]
    assert "ON  -0.5 blocks 2-6" in say(core, "/steer")[0]
    assert core.steering_summary() == "terse -0.5 @2-6"
    say(core, "/steer terse off")
    assert core.active_steering() == []
    say(core, "/steer terse 0.3")
    say(core, "/steer off")
    assert core.active_steering() == []


@pytest.mark.parametrize(
    "line, message",
    [
        ("/steer nope", "no vector named 'nope'"),
        ("/steer terse abc", "strength must be a number, not 'abc'"),
        ("/steer terse nan", "strength must be a finite number"),
        ("/steer terse 1 --layers 0-3", "layers must look like A-B with 1 <= A <= B <= 29"),
        ("/steer terse 1 --layers 5-2", "layers must look like A-B"),
        ("/steer terse 1 --layer 2-3", "unknown option --layer (did you mean --layers?)"),
        ("/steer off 2", "/steer off takes no strength, layers, mode or targets"),
        ("/steer terse off", "'terse' is not active"),
    ],
)
def test_steer_errors_are_one_line(steered_core: Core, line: str, message: str) -> None:
    assert message in error(steered_core, line)


def test_huge_strength_is_allowed_but_warned(steered_core: Core, tmp_path) -> None:
    info = say(steered_core, "/steer terse 25")
    assert any("expect broken text" in line for line in info)
    assert steered_core.steering.active["terse"].strength == 25
    assert not any("warning" in line for line in say(steered_core, "/steer terse 2.5"))
    # a foreign (raw-unit) file is warned about too, on its own scale
    from vectors import SteeringVector, save_vector

    terse = steered_core.steering.vectors["terse"]
    raw = SteeringVector("foreign", terse.directions, {})
    save_vector(raw, tmp_path / "foreign.gguf", "llama")
    say(steered_core, f"/vector load {tmp_path / 'foreign.gguf'}")
    assert steered_core.steering.vectors["foreign"].strength_unit == "raw"
    info = say(steered_core, "/steer foreign -40 --layers 9-13")
    assert any("warning" in line and "raw units" in line for line in info)


def test_each_reply_records_its_steering(steered_core: Core) -> None:
    core = steered_core
    core.submit("Name three colors.")
    core.generate()
    say(core, "/steer terse 0.5 --layers 9-13")
    core.submit("Name three animals.")
    core.generate()
    assert core.turns[1].steering == []
    assert core.turns[3].steering == [{"name": "terse", "strength": 0.5, "layers": [9, 13]}]


def test_vector_save_load_list_show_rm(steered_core: Core, tmp_path) -> None:
    core = steered_core
    assert "saved 'terse' to" in say(core, "/vector save terse")[0]
    path = library_dir() / "terse.gguf"
    assert path.is_file()
    say(core, "/vector load terse terse2")  # a bare name reads the user library
    np.testing.assert_array_equal(
        core.steering.vectors["terse2"].directions, core.steering.vectors["terse"].directions
    )
    listing = say(core, "/vector list")[0]
    assert "terse2" in listing and "library" in listing
    shown = say(core, "/vector show terse")[0]
    for part in (
        "norm per block",
        "held-out effect size",
        "suggested: /steer terse 1",
        "model_sha256:",
        "positive: Respond tersely",
    ):
        assert part in shown
    out = tmp_path / "elsewhere.gguf"
    say(core, f"/vector save terse2 {out}")
    assert out.is_file()
    assert say(core, "/vector rm terse2") == ["removed 'terse2' from the session"]
    assert out.is_file()  # files outside the library are never deleted
    say(core, f"/vector load {out}")  # the name recorded in the file comes back
    assert "terse2" in core.steering.vectors
    assert "already loaded" in error(core, f"/vector load {out}")
    say(core, f"/vector load {out} third")
    say(core, "/vector save third")
    assert say(core, "/vector rm third") == ["removed 'third' from the session and library"]
    assert not (library_dir() / "third.gguf").exists()
    assert "no vector named 'third'" in error(core, "/vector rm third")


def test_vector_errors_are_one_line(steered_core: Core, tmp_path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF\x03\x00")
    assert str(junk) in error(steered_core, f"/vector load {junk}")
    assert "does not exist" in error(steered_core, f"/vector load {tmp_path / 'missing.gguf'}")
    assert "no vector named 'zzz'" in error(steered_core, "/vector save zzz")
    assert "does not exist" in error(steered_core, f"/vector save terse {tmp_path}/no/such.gguf")
    assert "must start with a letter" in error(steered_core, "/vector mix 9x terse")
    assert "unknown" in error(steered_core, "/vector mix m terse + nothing").lower()


def test_vector_files_of_the_wrong_kind_are_one_line(steered_core: Core, tmp_path) -> None:
    """Through /vector load, as a user meets them: each names the file and what is wrong."""
    model_file = default_model_path()
    assert "is a model (llama), not a control vector" in error(
        steered_core, f"/vector load {model_file}"
    )
    assert "is a directory" in error(steered_core, f"/vector load {tmp_path}")
    cases = {
        "narrow": (np.ones((30, 100), np.float32), "different model"),
        "deep": (np.ones((40, 576), np.float32), "deeper model"),
        "nan": (np.full((30, 576), np.nan, np.float32), "NaN or Inf"),
    }
    for name, (directions, message) in cases.items():
        path = tmp_path / f"{name}.gguf"
        save_vector(SteeringVector(name, directions, {}), path, "llama")
        assert message in error(steered_core, f"/vector load {path}")
    good = tmp_path / "good.gguf"
    save_vector(SteeringVector("good", np.ones((30, 576), np.float32), {}), good, "llama")
    good.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "damaged or truncated" in error(steered_core, f"/vector load {good}")
    assert set(steered_core.steering.vectors) == {"terse"}  # nothing half-loaded


def test_vector_mix_is_exact(steered_core: Core) -> None:
    core = steered_core
    say(core, "/vector mix half terse*0.5 - terse")
    mixed = core.steering.vectors["half"].directions
    terse = core.steering.vectors["terse"].directions
    np.testing.assert_allclose(mixed, -0.5 * terse, rtol=1e-6, atol=1e-6)


def test_contrast_builds_a_vector_and_reports_separation(steered_core: Core) -> None:
    core = steered_core
    outcome = core.submit(
        f'/contrast quick "{TERSE}" "{VERBOSE}" --n 4 --method pca --no-calibrate'
    )
    assert outcome.job is not None and outcome.job_total == 8
    progress = []
    result = core.run_job(
        outcome, lambda done, total: progress.append((done, total)), threading.Event()
    )
    assert progress[-1] == (8, 8)
    assert result.lines()[0] == "built vector 'quick' (pca, 4 pairs)"
    assert any("held-out effect size per block" in line for line in result.lines())
    assert result.lines()[-2].startswith("apply it: /steer quick 1 --layers ")
    assert result.lines()[-1].startswith(
        "or cancel it (project mode): /steer quick 1 --mode project --layers "
    )
    vec = core.steering.vectors["quick"]
    assert vec.meta["method"] == "pca" and len(vec.meta["prompts"]) == 4


def test_contrast_from_a_pairs_file(steered_core: Core, tmp_path) -> None:
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text(
        "Be brief. What is rain?\tBe long-winded. What is rain?\n"
        "Be brief. What is snow?\tBe long-winded. What is snow?\n"
        "Be brief. What is wind?\tBe long-winded. What is wind?\n"
    )
    outcome = steered_core.submit(f"/contrast fromfile --pairs {pairs} --no-calibrate")
    result = steered_core.run_job(outcome)
    assert result.lines()[0] == "built vector 'fromfile' (mean, 3 pairs)"
    assert steered_core.steering.vectors["fromfile"].meta["pairs_sha256"]


@pytest.mark.parametrize(
    "line, message",
    [
        ("/contrast x", "give POSITIVE and NEGATIVE instructions, or --pairs FILE"),
        ('/contrast x "a" "b" --pairs f.tsv', "either instructions or --pairs"),
        ('/contrast 1x "a" "b"', "must start with a letter"),
        ('/contrast x "a" "b" --n 1', "--n must be between 2 and"),
        ('/contrast x "a" "b" --method avg', "must be one of mean, pca"),
        ("/contrast x --pairs /no/such/file.tsv", "/no/such/file.tsv"),
    ],
)
def test_contrast_errors(steered_core: Core, line: str, message: str) -> None:
    assert message in error(steered_core, line)


def test_cancelled_contrast_builds_nothing(steered_core: Core) -> None:
    cancel = threading.Event()
    cancel.set()
    outcome = steered_core.submit(f'/contrast gone "{TERSE}" "{VERBOSE}" --n 40')
    result = steered_core.run_job(outcome, None, cancel)
    assert result.errors == ["/contrast gone cancelled; nothing was built"]
    assert "gone" not in steered_core.steering.vectors


def test_jsonl_reply_reports_its_steering(tmp_path) -> None:
    env = {**os.environ, "STEER_DATA_DIR": str(tmp_path)}
    lines = (
        f'/contrast t "{TERSE}" "{VERBOSE}" --n 4 --no-calibrate\n'
        "/steer t 0.5 --layers 9-13\nName three colors.\n"
    )
    proc = subprocess.run(
        [*STEER, "chat", "--jsonl", "--temperature", "0", "--max-tokens", "20"],
        input=lines,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    reply = [e for e in events if e["type"] == "reply"][0]
    assert reply["steering"] == [{"name": "t", "strength": 0.5, "layers": [9, 13]}]


def test_headless_vector_build_and_show(tmp_path) -> None:
    env = {**os.environ, "STEER_DATA_DIR": str(tmp_path)}
    out = tmp_path / "t.gguf"
    build = subprocess.run(
        [
            *STEER,
            "vector",
            "build",
            "t",
            "--positive",
            TERSE,
            "--negative",
            VERBOSE,
            "--n",
            "4",
            "--no-calibrate",  # the calibrated build: tests/test_calibrate.py
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    assert f"saved 't' to {out}" in build.stdout and out.is_file()
    show = subprocess.run(
        [*STEER, "vector", "show", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert show.returncode == 0 and "held-out pair accuracy" in show.stdout
    assert "suggested: /steer t 1 --layers " in show.stdout and "n_pairs: 4" in show.stdout
    bad = subprocess.run(
        [*STEER, "vector", "show", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1


def test_completion_knows_vectors_and_options(steered_core: Core) -> None:
    assert steered_core.complete("/vector save ") == (13, ["terse"])
    assert steered_core.complete("/steer ") == (7, ["off", "terse"])
    assert steered_core.complete("/steer te") == (7, ["terse"])
    assert steered_core.complete("/contrast x a b --method p") == (25, ["pca"])


@pytest.mark.parametrize(
    "line, changed",
    [
        ("/steer", False),
        ("/steer terse", True),
        ("/steer off", True),
        ("/set", False),
        ("/set top_k 5", True),
        ("/system", False),
        ("/system Be brief.", True),
        ("/help", False),
        ("/vector list", False),
        ("/vector show terse", False),
        ("/vector mix m terse*2", True),
        ("/clear", True),
        ("/steer nope", False),
    ],
)
def test_state_changing_commands_say_so(steered_core: Core, line: str, changed: bool) -> None:
    """What a session must record (and autosave after) is exactly what changed its state."""
    assert steered_core.submit(line).changed is changed
