"""The built-in neutral prompts that contrast pairs are made from.

They are plain questions and requests on everyday topics, with no wish about length or style,
so that appending a positive / negative instruction to each one is the only difference within
a pair and the topics average out across pairs.
"""

from __future__ import annotations

from importlib import resources


def neutral_prompts() -> list[str]:
    """The shipped prompts, one per non-blank, non-comment line of data/neutral_prompts.txt."""
    return _prompt_lines("data/neutral_prompts.txt")


def calibration_prompts() -> list[str]:
    """Questions held out from the build prompts, for choosing a strength (data/calibration_
    prompts.txt): a strength judged on the prompts a vector was built from would flatter it."""
    return _prompt_lines("data/calibration_prompts.txt")


def _prompt_lines(name: str) -> list[str]:
    text = resources.files("vectors").joinpath(name).read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
