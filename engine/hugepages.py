"""Put a new llama.cpp context's KV cache on 2 MB pages, where Linux allows it.

Why: steer keeps flash attention off (its replies replay exactly), and llama.cpp then stores V
transposed. Each decoded token writes one value into each of n_layer x n_embd_v rows (30 x 192
on the default model) and reads a stretch of each, and the rows lie n_ctx cells apart (8 KB at
4,096 cells): every row is on a 4 KB page of its own, thousands of TLB misses per token.
llama-bench's tg128 decodes into a 128-cell cache and never meets this. In `perf` (one token
at position 64, decoded over and over) the V writes, `ggml_cpu_fp32_to_fp16` under `set_rows`,
took 6.9% of the samples at 4,096 cells and 2.2% on huge pages. The decode gained 4%
(bench/engine_bench.py, 2026-11-30: huge / 4 KB pages 1.042, median of 16 paired replies,
faster in 11; ad hoc 1.037 and 1.082), more at a busy hour (1.18 once against llama-bench).
llama.cpp allocates with plain malloc and has no option for this.

How: `huge_pages()` wraps the call that creates a context. Afterwards every 2 MB stretch of
anonymous memory that has become wholly resident (the KV buffer, which llama.cpp clears on
creation) is collapsed into one huge page with madvise(MADV_COLLAPSE), Linux 6.1 and newer.
Memory that is not wholly resident is left alone, so the resident size does not grow, and
nothing changes what llama.cpp computes: the same bytes, on larger pages. Before, malloc's free
pages go back to the kernel, so a cache placed in them is collapsed too (a chat's cache starts
small and grows, engine/chat.py, so most are made after another was freed). It costs 0.04 s
for the first 512 cells, 0.2-0.5 s for 4,096 (94 MB) on this VM. Anywhere else (another
system, an older kernel, huge pages turned off) it does nothing.

Only the chat context (engine/chat.py) is wrapped. The probe's (capture) was measured wrapped
and left as it is: /contrast's capture of the 24 default pairs took the same time either way
(paired 1.004, 8 ABBA rounds; prompt evaluation is bound by compute, not by the V writes).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import mmap
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

# STEER_HUGE_PAGES=0 turns it off (bench/reference_bench.py measures what it gives that way).
enabled = os.environ.get("STEER_HUGE_PAGES", "1") != "0"

PAGE = mmap.PAGESIZE
MADV_COLLAPSE = 25
_RESIDENT = bytes(b & 1 for b in range(256))  # mincore: bit 0 says resident, the rest reserved
_libc: ctypes.CDLL | None = None


def _huge_page_size() -> int:
    """The kernel's huge page for anonymous memory: 2 MB on x86-64 and 4 KB-page arm64."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size") as size:
            return int(size.read())
    except (OSError, ValueError):
        return 1 << 21


HUGE = _huge_page_size()


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        _libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        _libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    return _libc


@functools.cache
def supported() -> bool:
    """Whether this system collapses memory into huge pages: tried once, on scratch memory."""
    if sys.platform != "linux":
        return False
    try:  # MADV_COLLAPSE would ignore this setting; an administrator's "never" is respected
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as setting:
            if "[never]" in setting.read():
                return False
        scratch = mmap.mmap(-1, 2 * HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except (OSError, AttributeError):
        return False
    try:
        scratch.write(b"\1" * len(scratch))  # wholly resident, as a cleared KV buffer is
        view = ctypes.c_char.from_buffer(scratch)
        start = (ctypes.addressof(view) + HUGE - 1) & ~(HUGE - 1)  # one whole 2 MB stretch
        del view
        return _lib().madvise(start, HUGE, MADV_COLLAPSE) == 0
    except OSError:
        return False
    finally:
        scratch.close()


def _anonymous_regions() -> list[tuple[int, int]]:
    """Writable mappings with no file behind them: where malloc puts large buffers (its own
    mappings, or the heap, where a buffer under its mmap threshold of up to 32 MB goes)."""
    regions = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if fields[1].startswith("rw") and fields[5:] in ([], ["[heap]"]):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                regions.append((start, end))
    return regions


def _resident_chunks() -> set[int]:
    """The 2 MB-aligned stretches of anonymous memory whose every page is resident."""
    lib = _lib()
    vec = ctypes.create_string_buffer(HUGE // PAGE)
    full = set()
    for start, end in _anonymous_regions():
        for chunk in range((start + HUGE - 1) & ~(HUGE - 1), end & ~(HUGE - 1), HUGE):
            if lib.mincore(chunk, HUGE, vec) == 0 and vec.raw.translate(_RESIDENT).count(0) == 0:
                full.add(chunk)
    return full


def _give_back_free_memory() -> None:
    """Hand malloc's free pages back to the kernel (glibc's malloc_trim), so that a buffer
    malloc then places in them is newly resident once written, and so collapsed like fresh
    memory. Without it a cache made after others were freed (a grown or shrunk chat) reused
    pages resident from before and stayed on small pages: 0 of its 12 MB at 512 cells."""
    trim = getattr(_lib(), "malloc_trim", None)  # glibc only
    if trim is not None:
        trim(0)


def collapse(chunks: set[int]) -> list[int]:
    """Collapse each 2 MB stretch into one huge page; returns the starts of those that were."""
    lib = _lib()
    return [c for c in sorted(chunks) if lib.madvise(c, HUGE, MADV_COLLAPSE) == 0]


@dataclass
class Collapsed:
    """What one `huge_pages()` block put on huge pages: the 2 MB stretches' start addresses.
    Any memory of the process that became resident in the block counts, not only the
    context's (Python's own heap may grow meanwhile)."""

    starts: list[int] = field(default_factory=list)

    @property
    def chunks(self) -> int:
        return len(self.starts)

    @property
    def bytes(self) -> int:
        return self.chunks * HUGE


@contextlib.contextmanager
def huge_pages() -> Iterator[Collapsed]:
    """Around the creation of a llama.cpp context: collapse what it allocated (see above)."""
    done = Collapsed()
    if not enabled or not supported():
        yield done
        return
    _give_back_free_memory()
    try:
        before = _resident_chunks()
    except OSError:
        yield done
        return
    yield done
    with contextlib.suppress(OSError):
        done.starts = collapse(_resident_chunks() - before)
