"""Engine benchmarks: decode speed against a bare llama-cpp-python loop and with the KV cache on
small pages, and TTFT over a long chat.

Ratios are measured inside one run, alternating the contenders, because these machines are
noisy. Run with `make bench`.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import llama_cpp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import ChatContext, Model, Sampling  # noqa: E402
from engine.chat import FIRST_CELLS, Reply  # noqa: E402

STORY = [{"role": "user", "content": "Write a long story about a dragon."}]


def bare_decode_rate(model: Model, n_tokens: int, n_ctx: int) -> float:
    """The plainest llama-cpp-python token loop: greedy sample, decode, repeat."""
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = n_ctx
    params.n_batch = params.n_ubatch = 512
    ctx_probe = ChatContext(model, n_ctx=n_ctx)  # only to read its thread count
    params.n_threads = params.n_threads_batch = ctx_probe.n_threads
    params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED  # as the engine
    ctx_probe.close()
    ctx = llama_cpp.llama_init_from_model(model.ptr, params)
    prompt = model.chat_tokens(STORY)
    arr = (llama_cpp.llama_token * len(prompt))(*prompt)
    assert llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(arr, len(prompt))) == 0
    sampler = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(sampler, llama_cpp.llama_sampler_init_greedy())
    one = (llama_cpp.llama_token * 1)()
    token = llama_cpp.llama_sampler_sample(sampler, ctx, -1)
    t_first = time.perf_counter()
    for _ in range(n_tokens - 1):
        one[0] = token
        llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(one, 1))
        token = llama_cpp.llama_sampler_sample(sampler, ctx, -1)
    rate = (n_tokens - 1) / (time.perf_counter() - t_first)
    llama_cpp.llama_sampler_free(sampler)
    llama_cpp.llama_free(ctx)
    return rate


def engine_decode_rate(model: Model, n_tokens: int, n_ctx: int) -> float:
    ctx = ChatContext(model, n_ctx=n_ctx)
    pieces: list[str] = []
    reply = ctx.generate(STORY, Sampling(temperature=0, max_tokens=n_tokens), pieces.append)
    assert reply.tokens == n_tokens, reply.finish_reason
    ctx.close()
    return reply.tokens_per_s


def decode_speed(model: Model, rounds: int, n_tokens: int) -> None:
    """Paired rounds in ABBA order, so drift in machine speed hits both sides alike. The bare
    loop gets the 512 cells the engine's cache starts with (a reply this long stays in them)."""
    bare, ours, ratios = [], [], []
    for i in range(rounds):
        if i % 2 == 0:
            b = bare_decode_rate(model, n_tokens, FIRST_CELLS)
            e = engine_decode_rate(model, n_tokens, 2048)
        else:
            e = engine_decode_rate(model, n_tokens, 2048)
            b = bare_decode_rate(model, n_tokens, FIRST_CELLS)
        bare.append(b)
        ours.append(e)
        ratios.append(e / b)
    print(f"decode speed, {n_tokens} tokens, {rounds} paired rounds (ABBA order)")
    print(f"  bare llama-cpp-python loop : {statistics.median(bare):7.1f} tok/s (median)")
    print(f"  steer engine (streaming)   : {statistics.median(ours):7.1f} tok/s (median)")
    print(
        f"  ratio engine/bare          : {statistics.median(ratios):7.3f} (median of paired;"
        f" min {min(ratios):.3f}, max {max(ratios):.3f})"
    )


def huge_pages_gain(model: Model, rounds: int, n_tokens: int) -> None:
    """The chat context with its KV cache on 2 MB pages (engine/hugepages.py) against the same
    context on 4 KB pages, both at the 4,096 cells a chat grows to, in one process."""
    from engine import hugepages

    contexts = {}
    for name, on in (("huge pages", True), ("4 KB pages", False)):
        hugepages.enabled = on
        contexts[name] = ChatContext(model, n_ctx=4096, first_cells=4096)
    hugepages.enabled = True
    on_huge = contexts["huge pages"].huge_page_bytes / 2**20
    title = f"decode with the KV cache on huge pages ({on_huge:.0f} MiB of it), {n_tokens} tokens"
    paired_replies(title, contexts, rounds, n_tokens)
    for ctx in contexts.values():
        ctx.close()


def growth_gain(model: Model, rounds: int, n_tokens: int) -> None:
    """A chat context that starts at 512 cells and grows (engine/chat.py) against one made at
    its full 4,096 cells, and what growing costs a long prompt's first token."""
    first = {"from 512 cells": FIRST_CELLS, "4,096 cells": 4096}
    contexts = {name: ChatContext(model, n_ctx=4096, first_cells=n) for name, n in first.items()}
    title = f"decode in a cache grown on demand, {n_tokens} tokens"
    paired_replies(title, contexts, rounds, n_tokens)
    for ctx in contexts.values():
        ctx.close()
    lines = " ".join(f"Line {i}: the tide rose and fell at the harbour." for i in range(100))
    long = [{"role": "user", "content": lines + " Summarise."}]
    ttft: dict[str, list[float]] = {name: [] for name in first}
    for i in range(max(2, rounds // 4)):
        for name in list(first) if i % 2 == 0 else reversed(list(first)):
            fresh = ChatContext(model, n_ctx=4096, first_cells=first[name])
            ttft[name].append(fresh.generate(long, Sampling(temperature=0, max_tokens=2)).ttft_s)
            fresh.close()
    print(f"  first token after a {len(model.chat_tokens(long))}-token prompt in a new context:")
    for name, times in ttft.items():
        print(f"  {name:<27}: {statistics.median(times) * 1000:7.0f} ms (median)")


def paired_replies(
    title: str, contexts: dict[str, ChatContext], rounds: int, n_tokens: int
) -> None:
    """Decode rates of two contexts, replies alternating ABBA in one process."""
    got: dict[str, list[float]] = {name: [] for name in contexts}
    texts = set()
    for i in range(rounds):
        for name in list(contexts) if i % 2 == 0 else reversed(list(contexts)):
            ctx = contexts[name]
            ctx.reset()
            reply = ctx.generate(STORY, Sampling(temperature=0, max_tokens=n_tokens))
            got[name].append(reply.tokens_per_s)
            texts.add(reply.text)
    (a, rates_a), (b, rates_b) = got.items()
    ratios = [x / y for x, y in zip(rates_a, rates_b, strict=True)]
    print(title)
    for name, rates in got.items():
        print(f"  {name:<27}: {statistics.median(rates):7.1f} tok/s (median)")
    print(
        f"  ratio {a} / {b}".ljust(29) + f": {statistics.median(ratios):7.3f} (median of "
        f"{rounds} paired; min {min(ratios):.3f}, max {max(ratios):.3f}; faster in "
        f"{sum(r > 1 for r in ratios)}); the same replies: {len(texts) == 1}"
    )


TURN_SAMPLING = Sampling(temperature=0, max_tokens=24)


def same_size_chat(ctx: ChatContext, turns: int) -> tuple[list[dict[str, str]], list[Reply]]:
    """A chat of `turns` same-size questions, greedy, 24-token replies: the conversation and
    each turn's reply (its ttft_s; each turn evaluates only its new tokens, the history is in
    the KV cache). reference_bench.py times the same chat against llama-bench."""
    convo: list[dict[str, str]] = []
    replies = []
    for i in range(turns):
        convo.append({"role": "user", "content": f"Question {i + 10}: name one animal."})
        replies.append(ctx.generate(convo, TURN_SAMPLING))
        convo.append({"role": "assistant", "content": replies[-1].text})
    return convo, replies


def ttft_over_turns(model: Model, turns: int, rounds: int) -> None:
    per_turn: list[list[float]] = [[] for _ in range(turns)]
    cold: list[float] = []
    context_sizes = []
    for _ in range(rounds):
        ctx = ChatContext(model, n_ctx=4096)
        convo, replies = same_size_chat(ctx, turns)
        for i, reply in enumerate(replies):
            per_turn[i].append(reply.ttft_s)
        context_sizes.append(ctx.n_cached)
        convo.pop()
        ctx.reset()
        cold.append(ctx.generate(convo, TURN_SAMPLING).ttft_s)
        ctx.close()
    t2, tn = statistics.median(per_turn[1]), statistics.median(per_turn[turns - 1])
    print(
        f"time to first token over a {turns}-turn chat (same-size messages), "
        f"median of {rounds} runs; context at the end: {max(context_sizes)} tokens"
    )
    print(f"  turn 2                     : {t2 * 1000:7.1f} ms")
    print(f"  turn {turns}                    : {tn * 1000:7.1f} ms")
    print(f"  ratio turn {turns}/turn 2       : {tn / t2:7.2f}")
    print(f"  turn {turns} without KV reuse   : {statistics.median(cold) * 1000:7.1f} ms")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak RSS of this process   : {peak:7.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--turns", type=int, default=30)
    args = parser.parse_args()
    model = Model()
    print(f"model: {model.name}")
    decode_speed(model, args.rounds, args.tokens)
    ttft_over_turns(model, args.turns, max(1, args.rounds // 2))  # its peak RSS: a chat's
    huge_pages_gain(model, 2 * args.rounds, args.tokens)
    growth_gain(model, 2 * args.rounds, args.tokens)


if __name__ == "__main__":
    main()
