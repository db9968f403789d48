"""Which tokens of a set of prompts to evaluate once, and in what order (pure logic).

Prompts built from templates share beginnings: every chat prompt starts with the template's
system prompt, and a contrast pair's two prompts share the question. `prefix_tree` turns the
prompts into a tree whose nodes are stretches of tokens; a stretch shared by several prompts
is one node. `schedule` orders the nodes into llama_decode batches and assigns each a sequence
id: a node's sequence gets a copy of its parent's KV cells (`llama_memory_seq_cp`, a
bookkeeping operation in a unified KV cache), so only its own stretch is evaluated. The last
child of a node takes its parent's sequence over without a copy, and a leaf's sequence is freed
as soon as its activations are read, so a tree of depth d needs at most d + 1 sequences
whatever the number of prompts.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(eq=False)
class Node:
    """A stretch of tokens at positions start.. of every prompt below it.

    A leaf stands for one prompt (or several identical ones): `prompts` lists them and its
    last `k` tokens are the ones read out; they are never shared with another prompt.
    """

    tokens: list[int]
    start: int
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    prompts: list[int] = field(default_factory=list)
    k: int = 0
    seq: int = -1


@dataclass
class Step:
    """One llama_decode: copy these sequences first, decode the nodes, then free these."""

    nodes: list[Node]
    copies: list[tuple[int, int]]  # (source seq, destination seq)
    frees: list[int]


class TooDeep(ValueError):
    """The prompts nest deeper than the sequences the context has."""


def prefix_tree(prompts: list[list[int]], ks: list[int]) -> Node:
    """The prompts' prefix tree. The root may have no tokens (nothing common to all), in
    which case its children are evaluated from position 0 with nothing to copy."""
    keys = [p[: len(p) - k] for p, k in zip(prompts, ks, strict=True)]
    root = _build(prompts, ks, keys, list(range(len(prompts))), 0)
    for child in root.children:
        _collapse(child)
    if root.tokens or root.prompts:
        return _collapse(root)
    return root


def _build(prompts, ks, keys, members: list[int], depth: int) -> Node:
    end = _common_end(keys, members, depth)
    node = Node(tokens=list(keys[members[0]][depth:end]), start=depth)
    ending: dict[tuple[int, ...], list[int]] = {}
    branches: dict[int, list[int]] = {}
    for i in members:
        if len(keys[i]) == end:
            ending.setdefault((ks[i], *prompts[i][end:]), []).append(i)
        else:
            branches.setdefault(keys[i][end], []).append(i)
    # children in the order of their first prompt, so the schedule follows the input order
    kids = [(idx[0], "leaf", key, idx) for key, idx in ending.items()]
    kids += [(idx[0], "branch", None, idx) for idx in branches.values()]
    for _, kind, key, idx in sorted(kids, key=lambda t: t[0]):
        if kind == "leaf":
            child = Node(tokens=list(key[1:]), start=end, prompts=idx, k=key[0])
        else:
            child = _build(prompts, ks, keys, idx, end)
        child.parent = node
        node.children.append(child)
    return node


def _common_end(keys, members: list[int], depth: int) -> int:
    first = keys[members[0]]
    end = min(len(keys[i]) for i in members)
    for i in members[1:]:
        key = keys[i]
        j = depth
        while j < end and key[j] == first[j]:
            j += 1
        end = j
    return end


def _collapse(node: Node) -> Node:
    """Merge a node with its only child: a stretch nobody else shares needs no node of its
    own. Returns the node that now stands where `node` stood."""
    for i, child in enumerate(node.children):
        node.children[i] = _collapse(child)
    while len(node.children) == 1 and not node.prompts:
        child = node.children[0]
        node.tokens = node.tokens + child.tokens
        node.children = child.children
        node.prompts, node.k = child.prompts, child.k
        for grandchild in node.children:
            grandchild.parent = node
    return node


def preorder(root: Node) -> list[Node]:
    """The nodes to evaluate, parents before children, subtrees one after another; a root
    without tokens is left out."""
    out: list[Node] = []
    stack = list(reversed(root.children)) if not root.tokens else [root]
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(reversed(node.children))
    return out


def schedule(root: Node, n_batch: int, max_seqs: int, keep_leaves: bool = False) -> list[Step]:
    """Batches of at most n_batch tokens that never hold a node together with its parent;
    sets every node's `seq`. Raises TooDeep if max_seqs sequences are not enough.

    keep_leaves: a leaf's sequence is not freed (nor reused): replies are written after it."""
    order = preorder(root)
    free = list(range(max_seqs - 1, -1, -1))
    steps: list[Step] = []
    i = 0
    while i < len(order):
        step = Step(nodes=[], copies=[], frees=[])
        used = 0
        in_step: set[int] = set()
        while i < len(order):
            node = order[i]
            parent = node.parent if node.parent is not None and node.parent.tokens else None
            if parent is not None and id(parent) in in_step:
                break
            if step.nodes and used + len(node.tokens) > n_batch:
                break
            inherits = parent is not None and parent.children[-1] is node
            if not inherits and not free:
                break
            if inherits:
                node.seq = parent.seq
            else:
                node.seq = free.pop()
                if parent is not None:
                    step.copies.append((parent.seq, node.seq))
            step.nodes.append(node)
            in_step.add(id(node))
            used += len(node.tokens)
            if node.prompts and not keep_leaves:
                step.frees.append(node.seq)
            i += 1
        if not step.nodes:
            raise TooDeep(f"the prompts nest more than {max_seqs - 1} deep")
        free.extend(reversed(step.frees))
        steps.append(step)
    return steps
