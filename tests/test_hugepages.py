"""engine/hugepages.py: a new context's KV cache goes on 2 MB pages, the replies stay the same.

The unit tests map memory of their own and read the kernel's account of it (/proc/self/smaps);
the model test compares a context made with huge pages against one made without.
"""

from __future__ import annotations

import ctypes
import mmap

import pytest

from engine import ChatContext, Model
from engine import hugepages as hp
from tests.conftest import GREEDY, user

MB = 1 << 20


def _smaps_of(address: int) -> dict[str, int]:
    """The kernel's figures (kB) for the mapping that holds `address`."""
    figures: dict[str, int] = {}
    inside = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                start, end = (int(x, 16) for x in head.split("-"))
                inside = start <= address < end
            elif inside and head.endswith(":") and line.split()[-1] == "kB":
                figures[head[:-1]] = int(line.split()[1])
    return figures


def _private(size: int) -> mmap.mmap:
    """Anonymous private memory, as malloc maps it (mmap's default is shared)."""
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


def _address(buf: mmap.mmap) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


def _touch(buf: mmap.mmap, share: float) -> None:
    """Write the first `share` of every 2 MB stretch, one byte per 4 KB page."""
    for chunk in range(0, len(buf), hp.HUGE):
        for page in range(chunk, chunk + int(hp.HUGE * share), hp.PAGE):
            buf[page] = 1


needs_collapse = pytest.mark.skipif(
    not hp.supported(), reason="this kernel cannot collapse huge pages (Linux 6.1+)"
)


def _written_in_a_block(share: float) -> tuple[mmap.mmap, int, dict[str, int]]:
    """6 huge pages' worth, `share` of each written inside `huge_pages()`: how many of its
    stretches were collapsed (the block counts the whole process's, and Python's own heap may
    grow meanwhile), and what the kernel says of it."""
    buf = _private(6 * hp.HUGE)
    with hp.huge_pages() as collapsed:
        _touch(buf, share)
    start = _address(buf)
    mine = sum(start <= c and c + hp.HUGE <= start + len(buf) for c in collapsed.starts)
    return buf, mine, _smaps_of(start)


@needs_collapse
def test_memory_written_inside_the_block_goes_on_huge_pages() -> None:
    buf, collapsed, figures = _written_in_a_block(1.0)
    # 6 huge pages' worth, wherever it starts, holds at least 5 whole aligned stretches
    assert collapsed >= 5
    assert figures["AnonHugePages"] >= 5 * hp.HUGE // 1024
    assert bytes(buf[: hp.PAGE]) == b"\x01" + bytes(hp.PAGE - 1)  # the same bytes
    buf.close()


@needs_collapse
def test_memory_half_written_is_left_alone_so_it_does_not_grow() -> None:
    buf, collapsed, figures = _written_in_a_block(0.5)
    assert collapsed == 0
    assert figures["AnonHugePages"] == 0
    assert figures["Rss"] <= (3 + 1) * hp.HUGE // 1024  # half of it, give or take the ends
    buf.close()


def test_turned_off_it_collapses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hp, "enabled", False)
    buf = _private(8 * MB)
    with hp.huge_pages() as collapsed:
        _touch(buf, 1.0)
    assert collapsed.chunks == 0
    assert _smaps_of(_address(buf)).get("AnonHugePages", 0) == 0
    buf.close()


def test_a_context_on_huge_pages_writes_the_same_reply(
    model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the size a chat grows to, made at once (the test below makes smaller ones)
    with_huge = ChatContext(model, n_ctx=4096, first_cells=4096)
    monkeypatch.setattr(hp, "enabled", False)
    without = ChatContext(model, n_ctx=4096, first_cells=4096)
    assert without.huge_page_bytes == 0
    if hp.supported():
        # the KV cache: 4,096 cells x 30 layers x (192 K + 192 V) x 2 bytes = 94.4 MB (45 x 2 MB);
        # all of it but the stretches its two ends cut
        assert with_huge.huge_page_bytes >= 4096 * 30 * 384 * 2 - 2 * hp.HUGE
    question = user("Write a short story about a lighthouse keeper.")
    for c in (with_huge, without):
        c.reset()
    a = with_huge.generate(question, GREEDY)
    b = without.generate(question, GREEDY)
    assert a.tokens >= 20 and a.token_ids == b.token_ids
    with_huge.close()
    without.close()


@needs_collapse
def test_a_cache_made_after_another_was_freed_is_on_huge_pages(model: Model) -> None:
    """A chat's cache is made anew when it grows or shrinks, so in memory malloc got back:
    its free pages go back to the kernel first, and the new cache is newly resident."""
    for cells in (1024, 512):  # the second sits in the heap once the first raised malloc's
        ChatContext(model, n_ctx=2048, first_cells=cells).close()  # mmap threshold
    small = ChatContext(model, n_ctx=2048, first_cells=512)  # where the last one was
    # 512 cells x 30 layers x (192 K + 192 V) x 2 bytes = 11.8 MB: all but its two ends
    assert small.huge_page_bytes >= 512 * 30 * 384 * 2 - 2 * hp.HUGE
    small.close()
