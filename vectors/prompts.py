"""The built-in neutral prompts that contrast pairs are made from.

They are plain questions and requests on everyday topics, with no wish about length or style,
so that appending a positive / negative instruction to each one is the only difference within
a pair and the topics average out across pairs.
"""

from __future__ import annotations

from importlib import resources


def neutral_prompts() -> list[str]:
    """The shipped prompts, one per non-blank, non-comment line of data/neutral_prompts.txt."""
    text = resources.files("vectors").joinpath("data/neutral_prompts.txt").read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
