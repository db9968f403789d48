"""Contrast prompt pairs from files: JSONL, TSV, or llama.cpp cvector-generator's two files.

- JSONL: one ``{"positive": "...", "negative": "..."}`` object per line (other keys ignored).
- TSV: ``positive<TAB>negative`` per line.
- Two files (``negative_path`` given): one prompt per line, paired by order, as llama.cpp's
  cvector-generator reads them (``ctrlvec_load_prompt_file``): empty lines are skipped in each
  file separately, then ``string_process_escapes`` turns ``\\n \\r \\t \\' \\" \\\\`` and ``\\xHH``
  into the characters they name and leaves any other backslash as it is.

TSV uses the same escapes, since a line cannot otherwise hold a newline or a tab. In the
line-based formats a trailing carriage return (CRLF files) is dropped and lines starting with
``#`` are comments (not in the two-file format, to read cvector-generator's files as it does).
The format is chosen by extension (.jsonl/.ndjson, .tsv), else by whether the first meaningful
line starts with ``{``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator

_HEX = re.compile(rb"[0-9A-Fa-f]{2}")
_SIMPLE_ESCAPES = {
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
    ord("'"): b"'",
    ord('"'): b'"',
    ord("\\"): b"\\",
}


def load_pairs(path: str, negative_path: str | None = None) -> list[tuple[str, str]]:
    """Read (positive, negative) prompt pairs; ValueError (one line, file:line) if malformed."""
    if negative_path is not None:
        return _two_files(path, negative_path)
    lines = _read_lines(path)
    ext = os.path.splitext(path)[1].lower()
    if ext in (".jsonl", ".ndjson") or (ext != ".tsv" and _looks_like_jsonl(lines)):
        pairs = [_jsonl_pair(path, n, line) for n, line in _meaningful(lines)]
    else:
        pairs = [_tsv_pair(path, n, line) for n, line in _meaningful(lines)]
    if not pairs:
        raise ValueError(f"{path}: no prompt pairs found")
    return pairs


def pairs_sha256(pairs: list[tuple[str, str]]) -> str:
    """Fingerprint of the exact pairs (order matters), stable across file formats."""
    canonical = json.dumps([[p, n] for p, n in pairs], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def process_escapes(raw: bytes) -> bytes:
    """llama.cpp's string_process_escapes, on bytes as there (\\xHH may be half a character)."""
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] != ord("\\") or i + 1 >= len(raw):
            out.append(raw[i])
            i += 1
            continue
        nxt = raw[i + 1]
        if nxt in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[nxt]
            i += 2
        elif nxt == ord("x") and _HEX.fullmatch(raw[i + 2 : i + 4]):
            out.append(int(raw[i + 2 : i + 4], 16))
            i += 4
        else:
            out += raw[i : i + 2]
            i += 2
    return bytes(out)


def _two_files(pos_path: str, neg_path: str) -> list[tuple[str, str]]:
    positives = _prompt_file(pos_path)
    negatives = _prompt_file(neg_path)
    if len(positives) != len(negatives):
        raise ValueError(
            f"{pos_path} has {len(positives)} prompts but {neg_path} has {len(negatives)}; "
            "they pair line by line, so the counts must match"
        )
    if not positives:
        raise ValueError(f"{pos_path}: no prompts found")
    return list(zip(positives, negatives, strict=True))


def _prompt_file(path: str) -> list[str]:
    prompts = []
    for n, line in enumerate(_read_raw_lines(path), start=1):
        if line:
            prompts.append(_decode(path, n, process_escapes(line)))
    return prompts


def _jsonl_pair(path: str, n: int, line: str) -> tuple[str, str]:
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise ValueError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise ValueError(f'{path}:{n}: expected {{"positive": ..., "negative": ...}}')
    return (_jsonl_field(path, n, obj, "positive"), _jsonl_field(path, n, obj, "negative"))


def _jsonl_field(path: str, n: int, obj: dict, key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f'{path}:{n}: "{key}" must be a non-empty string')
    return value


def _tsv_pair(path: str, n: int, line: str) -> tuple[str, str]:
    fields = line.split("\t")
    if len(fields) != 2:
        raise ValueError(
            f"{path}:{n}: expected positive<TAB>negative, found {len(fields)} tab-separated fields"
        )
    pos, neg = (_decode(path, n, process_escapes(f.encode("utf-8"))) for f in fields)
    if not pos.strip() or not neg.strip():
        raise ValueError(f"{path}:{n}: empty positive or negative prompt")
    return pos, neg


def _looks_like_jsonl(lines: list[str]) -> bool:
    return next((line.lstrip().startswith("{") for _, line in _meaningful(lines)), False)


def _meaningful(lines: list[str]) -> Iterator[tuple[int, str]]:
    for n, line in enumerate(lines, start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            yield n, line


def _read_lines(path: str) -> list[str]:
    return [_decode(path, n, raw) for n, raw in enumerate(_read_raw_lines(path), start=1)]


def _read_raw_lines(path: str) -> list[bytes]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ValueError(f"cannot read prompt file {path}: {exc.strerror}") from None
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def _decode(path: str, n: int, raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}:{n}: not valid UTF-8") from None
    return text[1:] if n == 1 and text.startswith("\ufeff") else text
