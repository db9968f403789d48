"""Prompt-pair files and the built-in neutral prompts (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vectors import load_pairs, neutral_prompts, pairs_sha256


def write(path: Path, text: str | bytes) -> str:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def assert_error(fragment: str, *args: str) -> str:
    with pytest.raises(ValueError) as err:
        load_pairs(*args)
    message = str(err.value)
    assert "\n" not in message and fragment in message, message
    return message


# ---- JSONL -------------------------------------------------------------------------------------


def test_jsonl_pairs_in_order(tmp_path: Path) -> None:
    rows = [
        {"positive": "Be brief.", "negative": "Be thorough.", "note": "ignored"},
        {"positive": "Line one\nline two", "negative": "ünïcode ✓"},
    ]
    text = "\n".join(json.dumps(r) for r in rows[:1]) + "\n\n" + json.dumps(rows[1]) + "\n"
    pairs = load_pairs(write(tmp_path / "p.jsonl", text))
    assert pairs == [("Be brief.", "Be thorough."), ("Line one\nline two", "ünïcode ✓")]


def test_jsonl_is_sniffed_without_the_extension(tmp_path: Path) -> None:
    path = write(tmp_path / "p.txt", '# comment\n{"positive": "a", "negative": "b"}\n')
    assert load_pairs(path) == [("a", "b")]


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ('{"positive": "a", "negative": }', "not valid JSON"),
        ('{"positive": "a"}', '"negative" must be a non-empty string'),
        ('{"positive": 3, "negative": "b"}', '"positive" must be a non-empty string'),
        ('{"positive": "  ", "negative": "b"}', '"positive" must be a non-empty string'),
        ('["a", "b"]', "expected"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path: Path, line: str, fragment: str) -> None:
    path = write(tmp_path / "p.jsonl", '{"positive": "ok", "negative": "ok"}\n\n' + line + "\n")
    message = assert_error(fragment, path)
    assert message.startswith(f"{path}:3:")


# ---- TSV ---------------------------------------------------------------------------------------


def test_tsv_pairs_skip_comments_and_blank_lines(tmp_path: Path) -> None:
    text = "# positive\tnegative\n\nShort.\tLong.\r\nA\\tB\tC\\nD\n"
    pairs = load_pairs(write(tmp_path / "p.tsv", text))
    assert pairs == [("Short.", "Long."), ("A\tB", "C\nD")]


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("no tab here", "found 1 tab-separated fields"),
        ("a\tb\tc", "found 3 tab-separated fields"),
        ("a\t ", "empty positive or negative"),
    ],
)
def test_tsv_errors_name_file_and_line(tmp_path: Path, line: str, fragment: str) -> None:
    path = write(tmp_path / "p.tsv", "ok\tok\n# note\n" + line + "\n")
    message = assert_error(fragment, path)
    assert message.startswith(f"{path}:3:")


def test_empty_pair_file(tmp_path: Path) -> None:
    assert_error("no prompt pairs", write(tmp_path / "p.tsv", "# nothing\n\n"))


def test_missing_pair_file(tmp_path: Path) -> None:
    assert_error("cannot read", str(tmp_path / "absent.tsv"))


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "p.tsv", b"a\tb\n\xff\tc\n")
    assert_error(f"{path}:2: not valid UTF-8", path)


# ---- two files, cvector-generator style ---------------------------------------------------------


def test_two_files_pair_by_line_and_skip_empty_lines_separately(tmp_path: Path) -> None:
    pos = write(tmp_path / "pos.txt", "first\n\nsecond\n# not a comment here\n")
    neg = write(tmp_path / "neg.txt", "\n\nuno\ndos\ntres")
    assert load_pairs(pos, neg) == [
        ("first", "uno"),
        ("second", "dos"),
        ("# not a comment here", "tres"),
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (r"a\nb", "a\nb"),
        (r"tab\there", "tab\there"),
        (r"cr\r", "cr\r"),
        (r"quote\' and \"", "quote' and \""),
        (r"back\\slash", "back\\slash"),
        (r"hex \x41\x62", "hex Ab"),
        (r"bad hex \xZZ", r"bad hex \xZZ"),
        (r"short hex \x4", r"short hex \x4"),
        (r"unknown \q", r"unknown \q"),
        ("trailing \\", "trailing \\"),
        (r"\\n is not a newline", "\\n is not a newline"),
        (r"utf-8 bytes \xc3\xa9", "utf-8 bytes é"),
    ],
)
def test_escapes_follow_llama_cpp(tmp_path: Path, raw: str, expected: str) -> None:
    pos = write(tmp_path / "pos.txt", raw + "\n")
    neg = write(tmp_path / "neg.txt", "x\n")
    assert load_pairs(pos, neg) == [(expected, "x")]


def test_two_files_count_mismatch(tmp_path: Path) -> None:
    pos = write(tmp_path / "pos.txt", "a\nb\nc\n")
    neg = write(tmp_path / "neg.txt", "a\nb\n")
    message = assert_error("3 prompts", pos, neg)
    assert "has 2" in message


def test_two_empty_files(tmp_path: Path) -> None:
    pos = write(tmp_path / "pos.txt", "\n")
    neg = write(tmp_path / "neg.txt", "")
    assert_error("no prompts", pos, neg)


def test_two_files_crlf(tmp_path: Path) -> None:
    pos = write(tmp_path / "pos.txt", b"a\r\n\r\nb\r\n")
    neg = write(tmp_path / "neg.txt", b"c\r\nd\r\n")
    assert load_pairs(pos, neg) == [("a", "c"), ("b", "d")]


# ---- pairs_sha256 ------------------------------------------------------------------------------


def test_sha_is_stable_across_formats_and_sensitive_to_content(tmp_path: Path) -> None:
    from_jsonl = load_pairs(write(tmp_path / "p.jsonl", '{"positive": "a", "negative": "b"}\n' * 2))
    from_tsv = load_pairs(write(tmp_path / "p.tsv", "a\tb\na\tb\n"))
    digest = pairs_sha256(from_jsonl)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert digest == pairs_sha256(from_tsv)
    assert digest != pairs_sha256([("b", "a"), ("a", "b")])
    assert pairs_sha256([("a", "b"), ("c", "d")]) != pairs_sha256([("c", "d"), ("a", "b")])
    assert pairs_sha256([("ab", "c")]) != pairs_sha256([("a", "bc")])


# ---- neutral prompts ---------------------------------------------------------------------------


def test_neutral_prompts_are_many_distinct_single_lines() -> None:
    prompts = neutral_prompts()
    assert len(prompts) >= 80
    assert len(set(prompts)) == len(prompts)
    for p in prompts:
        assert p and "\n" not in p and "\t" not in p and not p.startswith("#")
        assert p == p.strip()


@pytest.mark.parametrize(
    "word", ["brief", "concise", "tersely", "in detail", "one sentence", "short answer", "length"]
)
def test_neutral_prompts_ask_for_no_style(word: str) -> None:
    assert not [p for p in neutral_prompts() if word in p.lower()]
