"""The shared-prefix plan of capture (engine/prefix_tree.py), checked by simulating the KV cache.

Pure logic: no model. The simulation applies each step's copies, appends every node's tokens to
its sequence at its positions, and checks that each leaf's sequence then holds exactly its prompt.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.prefix_tree import TooDeep, prefix_tree, preorder, schedule
from tests.conftest import examples


def simulate(
    prompts: list[list[int]], ks: list[int], n_batch: int, max_seqs: int, keep: bool = False
) -> int:
    """Run the schedule on a model of the KV cache; returns the tokens evaluated. keep: the
    leaves' sequences must be left holding their prompts (replies are written after them)."""
    root = prefix_tree(prompts, ks)
    steps = schedule(root, n_batch, max_seqs, keep_leaves=keep)
    seqs: dict[int, list[int]] = {}
    seen: dict[int, int] = {}
    evaluated = 0
    for step in steps:
        for src, dst in step.copies:
            assert dst not in seqs, "a copy overwrote a live sequence"
            seqs[dst] = list(seqs[src])
        assert sum(len(n.tokens) for n in step.nodes) <= n_batch or len(step.nodes) == 1
        ids = {id(n) for n in step.nodes}
        for node in step.nodes:
            assert node.parent is None or id(node.parent) not in ids, "parent in the same batch"
            assert 0 <= node.seq < max_seqs
            held = seqs.setdefault(node.seq, [])
            assert len(held) == node.start, "a stretch does not continue its sequence"
            held.extend(node.tokens)
            evaluated += len(node.tokens)
            for i in node.prompts:
                assert held == prompts[i]
                assert len(node.tokens) >= ks[i], "a read-out token was shared"
                seen[i] = seen.get(i, 0) + 1
        for seq in step.frees:
            del seqs[seq]
    assert seen == {i: 1 for i in range(len(prompts))}
    if keep:
        leaves = [n for n in preorder(root) if n.prompts]
        assert sorted(seqs) == sorted(n.seq for n in leaves), "a leaf lost its sequence"
        for leaf in leaves:
            assert all(seqs[leaf.seq] == prompts[i] for i in leaf.prompts)
    else:
        assert not seqs, "sequences left behind"
    assert evaluated == sum(len(n.tokens) for n in preorder(root))
    return evaluated


# a small alphabet, so that prompts share prefixes, nest and repeat
cases = st.lists(
    st.tuples(st.lists(st.integers(0, 2), min_size=1, max_size=12), st.integers(0, 11)),
    min_size=1,
    max_size=12,
)


@given(cases=cases, n_batch=st.integers(12, 40))
@example(cases=[([1, 2, 3], 0), ([1, 2, 3], 0)], n_batch=12)  # identical prompts
@example(cases=[([1], 0), ([1, 1], 0), ([1, 1, 1], 1)], n_batch=12)  # nested prompts
@settings(max_examples=examples(200))
def test_schedule_evaluates_every_prompt_once(cases, n_batch) -> None:
    prompts = [p for p, _ in cases]
    ks = [1 + r % len(p) for p, r in cases]  # read out 1..len(p) last tokens
    evaluated = simulate(prompts, ks, n_batch, max_seqs=16)
    assert evaluated <= sum(len(p) for p in prompts)


@given(cases=cases, n_batch=st.integers(12, 40))
@example(cases=[([1, 2, 3], 0), ([1, 2, 3], 0), ([1, 2], 0)], n_batch=12)
@settings(max_examples=examples(200))
def test_kept_leaves_hold_their_prompts_in_sequences_of_their_own(cases, n_batch) -> None:
    """engine/batch.py writes a reply after each prompt, so no leaf's sequence is reused."""
    prompts = [p for p, _ in cases]
    simulate(prompts, [1] * len(prompts), n_batch, max_seqs=32, keep=True)


def test_pairs_share_the_system_prompt_and_the_question() -> None:
    system = list(range(100, 120))  # 20 tokens common to all
    pairs = []
    for q in range(24):
        question = [200 + q] * 15
        pairs.append((system + question + [1] * 12, system + question + [2] * 12))
    prompts = [p for p, _ in pairs] + [n for _, n in pairs]
    evaluated = simulate(prompts, [1] * 48, n_batch=256, max_seqs=16)
    assert evaluated == 20 + 24 * 15 + 48 * 12  # instead of 48 * 47


def test_too_deep_for_the_sequences_says_so() -> None:
    # each prompt extends the next; the deeper branch comes first, so every level holds a seq
    prompts = [[1] * n for n in range(7, 0, -1)]
    with pytest.raises(TooDeep):
        schedule(prefix_tree(prompts, [1] * 7), 64, max_seqs=3)
    simulate(prompts, [1] * 7, 64, max_seqs=8)
