"""The scoreboard's doc update (bench/efficacy_bench.py --update-doc): pure text, no model."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from bench.efficacy_bench import (
    arguments,
    block_concepts,
    check_doc,
    chosen,
    decoding,
    doc_block,
    run_block,
    update_doc,
)

ROOT = Path(__file__).resolve().parent.parent

DOC = "# page\n\nbefore\n<!-- ready-both:begin -->\nold table\n<!-- ready-both:end -->\nafter\n"


def test_only_the_named_block_is_rewritten(tmp_path: Path) -> None:
    doc = tmp_path / "efficacy.md"
    doc.write_text(DOC, "utf-8")
    update_doc(doc, ["new table", "| a | b |"], "ready-both")
    assert doc.read_text("utf-8") == DOC.replace("old table", "new table\n| a | b |")
    assert [p.name for p in tmp_path.iterdir()] == ["efficacy.md"]  # no temporary file left


def test_a_doc_without_the_block_is_left_as_it_was(tmp_path: Path) -> None:
    doc = tmp_path / "efficacy.md"
    doc.write_text(DOC, "utf-8")
    with pytest.raises(SystemExit, match="no <!-- efficacy:begin --> ... <!-- efficacy:end -->"):
        update_doc(doc, ["new table"], "efficacy")
    assert doc.read_text("utf-8") == DOC


@pytest.mark.parametrize(
    ("ready", "questions", "dry", "block"),
    [
        (False, "both", 0.0, "efficacy"),
        (False, "both", 0.8, "efficacy-dry"),
        (False, "fresh", 0.8, "efficacy-fresh-dry"),
        (True, "both", 0.0, "ready-both"),
        (True, "fresh", 0.8, "ready-fresh-dry"),
    ],
)
def test_each_run_writes_a_block_of_its_own(ready, questions, dry, block) -> None:
    assert doc_block(ready, questions, dry) == block


def test_a_sampled_run_writes_a_block_for_its_temperature_and_seed() -> None:
    assert doc_block(False, "both", 0.0, 0.7, 1) == "efficacy-t0.7-s1"
    assert doc_block(False, "fresh", 0.8, 0.7, 2) == "efficacy-fresh-dry-t0.7-s2"
    assert doc_block(False, "both", 0.0, 0.0, 2) == "efficacy"  # greedy: the seed is unused


def test_a_run_with_another_dry_allowed_length_writes_a_block_of_its_own() -> None:
    assert doc_block(True, "both", 0.8, dry_allowed=3) == "ready-both-dry3"
    assert doc_block(True, "fresh", 0.8, dry_allowed=2) == "ready-fresh-dry"  # llama.cpp's
    assert doc_block(True, "both", 0.0, dry_allowed=3) == "ready-both"  # no DRY, no length
    assert decoding(0.0, 1, 0.8, 3) == "greedy with DRY 0.8 (allowed length 3)"
    assert decoding(0.0, 1, 0.8) == "greedy with DRY 0.8"


TABLE = (
    "<!-- efficacy-dry:begin -->\nMade by ...\n\n"
    "| concept | marker | condition | marker value | tokens | NLL/token | NLL x | rep3 |\n"
    "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |\n"
    "| sea | sea words/100 | unsteered | 0.19 | 137.0 | 0.79 | 1.00 | 0.090 |\n"
    "| sea | sea words/100 | prompt | 6.16 | 120.9 | 1.33 | 1.69 | 0.080 |\n"
    "| food | food words/100 | unsteered | 0.26 | 137.0 | 0.79 | 1.00 | 0.090 |\n\n"
    "- sea (topic): PASS: ...\n<!-- efficacy-dry:end -->\n"
)


def test_a_run_that_would_drop_rows_is_refused_before_it_starts(tmp_path: Path) -> None:
    """The block is rewritten whole: a subset run would drop the other concepts' rows."""
    doc = tmp_path / "efficacy.md"
    doc.write_text(TABLE, "utf-8")
    assert block_concepts(doc, "efficacy-dry") == {"sea", "food"}
    with pytest.raises(SystemExit, match="the efficacy-dry block also holds food, which this"):
        check_doc(doc, "efficacy-dry", ["sea"])
    check_doc(doc, "efficacy-dry", ["food", "sea"])  # all of them, in any order: allowed
    check_doc(doc, "efficacy-dry", ["sea", "food", "space"])  # and more (a concept added since)
    empty = tmp_path / "empty.md"
    empty.write_text("<!-- efficacy-dry:begin -->\n<!-- efficacy-dry:end -->\n", "utf-8")
    check_doc(empty, "efficacy-dry", ["sea"])  # a new block takes any run


def makefile_runs() -> list[list[str]]:
    """The arguments of every efficacy_bench run in the Makefile that updates the doc."""
    text = (ROOT / "Makefile").read_text()
    variables = dict(re.findall(r"^(\w+) := (\S+)$", text, re.M))
    runs = []
    for line in text.splitlines():
        if "bench/efficacy_bench.py" in line and "--update-doc" in line:
            line = re.sub(r"\$\((\w+)\)", lambda m: variables.get(m[1], m[0]), line)
            runs.append(shlex.split(line.split("bench/efficacy_bench.py", 1)[1]))
    return runs


def test_each_block_holds_the_concepts_its_make_target_measures() -> None:
    """Every block a make target writes is there (`make efficacy`, `efficacy-dry`,
    `efficacy-sampled`, `efficacy-ready` and `efficacy-ready-dry` would fail at their end
    without it), with the rows of what the target measures: fewer is out of date (a
    ready-made vector added since, or a partial run)."""
    runs = [arguments().parse_args(argv) for argv in makefile_runs()]
    blocks = {run_block(args) for args in runs}
    assert {"efficacy", "efficacy-dry", "ready-both", "efficacy-dry-t0.7-s2"} <= blocks
    assert {"ready-fresh-dry", "ready-fresh-dry3"} <= blocks
    assert len(blocks) == len(runs) == 13  # each run a block of its own
    for args in runs:
        held = block_concepts(ROOT / "docs" / "efficacy.md", run_block(args))
        assert held == {c.name for c in chosen(args)}, run_block(args)
