"""The scoreboard's doc update (bench/efficacy_bench.py --update-doc): pure text, no model."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.efficacy_bench import doc_block, update_doc

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


def test_the_doc_has_every_block_the_make_targets_write() -> None:
    """`make efficacy`, `efficacy-dry` and `efficacy-ready` fail at their end without them."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "efficacy.md").read_text("utf-8")
    for block in ("efficacy", "efficacy-dry", "efficacy-fresh-dry", "ready-both", "ready-fresh"):
        assert f"<!-- {block}:begin -->" in text and f"<!-- {block}:end -->" in text, block
