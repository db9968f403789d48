"""Steering commands: /contrast builds a vector, /steer applies it, /vector keeps it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.batch import BatchFull
from engine.capture import CaptureCancelled
from engine.chat import Sampling
from engine.lora import AdapterLoadError
from repl.calibrate import N_PROMPTS, Unbatched, calibrate, user
from repl.commands import Arg, Outcome, UsageError, parse_float
from repl.core import REGISTRY, Core
from repl.steering import (
    LOUD,
    MODES,
    READ_MODES,
    READS,
    Active,
    active_names,
    check_name,
    instruction_pairs,
    library_dir,
    library_names,
    loaded_names,
    parse_layers,
    provenance_for,
    recommended_mode,
    vector_or_error,
)
from vectors import (
    UNIT_MEAN_DIFF,
    UNIT_TOKEN_NORM,
    SteeringVector,
    VectorFileError,
    bundled_names,
    load_pairs,
    mix,
    neutral_prompts,
    save_vector,
)
from vectors.calibration import (
    WEAK_EFFECT,
    Point,
    choose,
    is_fluent,
    recommendation_margin,
    weak_effect,
)
from vectors.lora import (
    DEFAULT_TARGETS,
    TARGETS,
    AdapterError,
    parse_targets,
    project_recommendation,
)

BARS = " ▁▂▃▄▅▆▇█"
REPLY_TOKENS = 48  # tokens of each reply --method replies reads
DEFAULT_MODEL_HINT = "the default model, SmolLM2-135M-Instruct"
PROJECT_LOUD = 3.0  # project-mode strengths past 3 (or below -1.5) broke the text (docs)
CALIBRATION_UNITS = 5 * N_PROMPTS  # replies a typical calibration makes (for the progress bar)


def sparkline(values: list[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    top = max(finite, default=0.0) or 1.0
    return "".join(
        BARS[max(0, min(8, round(8 * v / top)))] if math.isfinite(v) else "?" for v in values
    )


def suggestion(vec: SteeringVector) -> str:
    a, b = vec.recommended_range or (1, vec.n_layer - 1)
    strength = vec.recommended_strength if vec.recommended_strength is not None else 1.0
    mode = recommended_mode(vec)  # /steer uses it anyway; the line says so
    tail = "" if mode == "add" else f" --mode {mode}"
    return f"/steer {vec.name} {strength:g} --layers {a}-{b}{tail}"


def project_suggestion(vec: SteeringVector) -> str:
    """What to type for project mode, and where the setting comes from."""
    rec = project_recommendation(vec, vec.n_layer)
    a, b = rec.layers
    targets = "" if rec.targets == DEFAULT_TARGETS else f" --targets {','.join(rec.targets)}"
    why = (
        "measured for this vector"
        if rec.source == "measured"
        else "the rule: the add band, strength 1 removes the direction"
    )
    return f"/steer {vec.name} {rec.strength:g} --mode project --layers {a}-{b}{targets} ({why})"


def separation_report(vec: SteeringVector) -> list[str]:
    """The per-block picture a user needs before trusting a contrast."""
    effect = [float(x) for x in vec.meta.get("effect_size", [])]
    lines = []
    if effect:
        a, b = vec.recommended_range or (1, vec.n_layer - 1)
        marks = "".join("^" if a <= i <= b else " " for i in range(len(effect)))
        lines += [
            f"held-out effect size per block 0..{len(effect) - 1} (max {max(effect):.1f}):",
            f"  {sparkline(effect)}",
            f"  {marks}  recommended blocks {a}-{b}",
        ]
    return lines + separation_verdict(vec)


def separation_verdict(vec: SteeringVector) -> list[str]:
    """Pair accuracy, and a warning when the contrast barely separates (charts aside)."""
    accuracy = [float(x) for x in vec.meta.get("separation", [])]
    lines = []
    if accuracy:
        steerable = accuracy[1:]
        lines.append(f"held-out pair accuracy: min {min(steerable):.2f}, max {max(steerable):.2f}")
        if max(steerable) < 0.75:
            lines.append(
                "warning: this contrast barely separates the prompts; its vector may "
                "do little. Try sharper instructions or more pairs."
            )
    return lines


def calibration_report(vec: SteeringVector) -> list[str]:
    """The calibration table kept in the vector's provenance, or nothing if uncalibrated."""
    cal = vec.meta.get("calibration")
    if not isinstance(cal, dict) or "baseline" not in cal:
        return []
    try:
        base = Point.from_dict(cal["baseline"])
        points = [Point.from_dict(p) for p in cal.get("points", [])]
        prompted = Point.from_dict(cal["prompted"]) if cal.get("prompted") else None
    except (KeyError, TypeError, ValueError):
        return ["calibration: unreadable in this file"]
    a, b = cal.get("layers", vec.recommended_range or (1, vec.n_layer - 1))
    lines = [
        f"calibration: {len(cal.get('prompts', []))} held-out questions, greedy, "
        f"{cal.get('max_tokens')} tokens, blocks {a}-{b}"
        + (f", {cal['mode']} mode" if cal.get("mode") in READ_MODES else ""),
        f"  {'strength':>8} {'tokens':>6} {'NLL/tok':>7} {'x unst':>6} {'repeat':>6} {'effect':>6}",
    ]
    for point in [base, *([prompted] if prompted else []), *points]:
        label = "off" if point is base else "asked" if point is prompted else f"{point.strength:g}"
        mark = ""
        if point is not base and point is not prompted:
            mark = "  fluent" if is_fluent(point, base, prompted) else "  not fluent"
            if cal.get("chosen") is not None and point.strength == cal["chosen"]:
                mark += " <- pick" if cal.get("margin") is not None else " <- recommended"
        lines.append(
            f"  {label:>8} {point.tokens:6.1f} {_num(point.nll)} "
            f"{_num(point.nll / base.nll if base.nll else math.nan)} "
            f"{point.repeat:6.2f} {_num(point.effect, signed=True)}{mark}"
        )
    if cal.get("chosen") is None:
        lines.append("  warning: no strength tried stayed fluent; recommending the gentlest")
    if cal.get("margin") is not None and vec.recommended_strength is not None:
        lines.append(
            f"  recommending {vec.recommended_strength:g}: {cal['margin']:g} x the pick, since "
            "a topic costs more over long replies than over these short ones"
        )
    # only where the file's pick is the one this rule makes (an older rule's may differ)
    gain = weak_effect(points, base, prompted)
    pick = choose(points, base, prompted)
    if gain is not None and pick is not None and pick.strength == cal.get("chosen"):
        lines.append(
            f"  note: the effect grew at most {gain:+.2f} nat/token (under {WEAK_EFFECT:g}), too "
            "little to show where it stops growing, so the pick is the strongest fluent "
            "strength; the concept may show more in longer replies: compare "
            f"/sweep {vec.name} {_around(pick, points)}"
            + (f" --mode {cal['mode']}" if cal.get("mode") in READ_MODES else "")
            + " on a question of yours"
        )
        if vec.meta.get("method") in ("mean", "pca"):  # read at the last prompt token
            lines.append(
                "  a topic or a tone may move further with /contrast ... --method focus "
                "(cheerfulness and food did, excitement did not: docs/efficacy.md)"
            )
    if vec.meta.get("method") == "focus" and cal.get("mode") == "messages":
        lines.append(
            "  a topic may move further in content mode, where /contrast ... --method focus "
            "now calibrates (sea, music, sports and food did: docs/efficacy.md)"
        )
    return lines


def _around(pick: Point, points: list[Point]) -> str:
    """The strength tried just below the pick, the pick, and those above it, for a /sweep line."""
    tried = sorted({p.strength for p in points}, key=abs)
    at = tried.index(pick.strength)
    return ",".join(f"{s:g}" for s in tried[max(at - 1, 0) :])


def _num(value: float | None, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return f"{'–':>6}"
    return f"{value:+6.2f}" if signed else f"{value:6.2f}"


# -- /contrast ------------------------------------------------------------------------------------


@REGISTRY.command(
    "contrast",
    "build a steering vector from contrasting prompts",
    Arg("name", help="the new vector's name (letters, digits, _)"),
    Arg("positive", optional=True, help="instruction for the side to steer towards (quote it)"),
    Arg("negative", optional=True, help="instruction for the side to steer away from"),
    options=(
        Arg(
            "--method",
            "choice",
            ("mean", "pca", "replies", "focus"),
            help="mean difference at the prompt's end (default), PCA, 'replies': the model "
            "writes a reply under each instruction and the mean difference over the written "
            "tokens is taken, or 'focus' (for topics, and tones such as cheerfulness): only "
            "the written tokens the positive instruction made likelier count",
        ),
        Arg("--n", "int", help="how many built-in neutral prompts to use (default 24)"),
        Arg(
            "--pairs",
            "path",
            help="file of prompt pairs (JSONL or TSV), or positive prompts with "
            "--negative-file (cvector-generator style)",
        ),
        Arg("--negative-file", "path", help="one negative prompt per line, beside --pairs"),
        Arg("--last", "int", help="average the last K prompt tokens (default 1)"),
        Arg(
            "--raw",
            "flag",
            help="use pair prompts verbatim, without the chat template",
        ),
        Arg(
            "--no-calibrate",
            "flag",
            help="skip the calibration that measures which strength stays fluent",
        ),
        Arg(
            "--mode",
            "choice",
            ("add", *READ_MODES),
            help="the /steer mode the calibration measures and the vector recommends "
            "(default: add; prompt for --method replies; content for --method focus)",
        ),
    ),
    details='Example: /contrast terse "Respond tersely, in one short sentence." '
    '"Respond in great detail, at length."  For a topic: /contrast sea "Relate your answer '
    'to the sea and ships." "Answer the question." --method focus',
)
def cmd_contrast(core: Core, args: dict[str, Any]) -> Outcome:
    name = _name(args["name"])
    positive, negative, source = args["positive"], args["negative"], args["pairs"]
    if source is None and (positive is None or negative is None):
        raise UsageError("give POSITIVE and NEGATIVE instructions, or --pairs FILE")
    if source is not None and positive is not None:
        raise UsageError("give either instructions or --pairs, not both")
    if args["negative_file"] is not None and source is None:
        raise UsageError("--negative-file goes with --pairs POSITIVE_FILE")
    if args["method"] in ("replies", "focus") and args["raw"]:
        raise UsageError(f"--method {args['method']} needs chat prompts: leave out --raw")
    if args["method"] == "focus" and source is not None:
        raise UsageError(
            "--method focus weighs each written token by how much the positive instruction "
            "raised it over the negative one: give POSITIVE and NEGATIVE, not --pairs"
        )
    if args["method"] == "focus" and args["last"] is not None:
        raise UsageError("--method focus reads every written token: leave out --last")
    last_k = args["last"] or 1
    if last_k < 1:
        raise UsageError(f"--last must be at least 1, not {last_k}")
    try:
        if source is not None:
            pairs = load_pairs(source, args["negative_file"])
        else:
            pairs = instruction_pairs(positive, negative, args["n"] or 24)
    except (OSError, ValueError) as exc:
        return Outcome.error(str(exc))
    if len(pairs) < 2:
        return Outcome.error(f"need at least 2 prompt pairs, got {len(pairs)}")
    try:
        core.steering.check_free(name)
    except ValueError as exc:
        return Outcome.error(str(exc))
    method = args["method"] or "mean"
    provenance = provenance_for(positive, negative, pairs, source)
    chat_format = source is None or not args["raw"]
    written = method in ("replies", "focus")
    # written vectors steer the conversation as it is read; a focus one only the messages' text
    # (a topic moved furthest there and cheerfulness passed there too: docs/efficacy.md,
    # "Content mode for the tones")
    mode = ("content" if method == "focus" else "prompt") if written else "add"
    mode = args["mode"] or mode
    if written:
        provenance["reply_tokens"] = REPLY_TOKENS

    calibrating = not args["no_calibrate"]
    writing_total = 2 * len(pairs) if written else 0
    scoring_total = len(pairs) if method == "focus" else 0
    before_capture = writing_total + scoring_total
    capture_total = before_capture + 2 * len(pairs)
    expected = capture_total + (CALIBRATION_UNITS if calibrating else 0)
    cancelled = Outcome.error(f"/contrast {name} cancelled; nothing was built")

    def job(on_progress, cancel) -> Outcome:
        def scored(done: int) -> None:
            if on_progress is not None:
                on_progress(writing_total + done, expected)

        def captured(done: int, total: int) -> None:
            if on_progress is not None:
                on_progress(before_capture + done, expected)

        replies = None
        if written:
            replies = write_replies(core, pairs, on_progress, expected, cancel)
            if replies is None:
                return cancelled
        try:
            if method == "focus":
                gains = reply_gains(core, pairs, replies, cancel, scored)
                if gains is None:
                    return cancelled
                vec = core.steering.contrast_focus(
                    name,
                    neutral_prompts()[: len(pairs)],
                    replies,
                    gains,
                    provenance=provenance,
                    on_progress=captured,
                    cancel=cancel,
                )
            else:
                vec = core.steering.contrast(
                    name,
                    pairs,
                    method="mean" if written else method,
                    chat_format=chat_format,
                    last_k=last_k,
                    provenance=provenance,
                    replies=replies,
                    on_progress=captured,
                    cancel=cancel,
                )
        except CaptureCancelled:
            return cancelled
        except ValueError as exc:
            return Outcome.error(f"/contrast {name}: {exc}")
        if calibrating:
            result = calibrate(
                core,
                name,
                positive,
                mode=mode,
                margin=recommendation_margin(vec.meta, mode),
                on_progress=on_progress,
                progress_offset=capture_total,
                cancel=cancel,
            )
            if result is None:
                core.steering.vectors.pop(name, None)
                return cancelled
            vec.meta.update(result.meta())
        elif written or args["mode"] is not None:
            vec.meta["recommended_mode"] = mode
        head = f"built vector {name!r} ({method}, {len(pairs)} pairs)"
        return Outcome(view=VectorReport(vec, head), changed=True)

    label = "capturing activations and calibrating" if calibrating else "capturing activations"
    return Outcome(job=job, job_label=f"{label} for {name!r}", job_total=expected)


def write_replies(
    core: Core, pairs: list[tuple[str, str]], on_progress, expected: int, cancel
) -> list[list[int]] | None:
    """Greedy replies (token ids) to every positive, then every negative prompt, unsteered;
    None if cancelled. What the model writes under an instruction carries a topic or a tone
    that the prompt's last token alone does not (docs/efficacy.md)."""
    texts = [p for p, _ in pairs] + [n for _, n in pairs]
    sampling = Sampling(temperature=0.0, max_tokens=REPLY_TOKENS)
    out = []
    for i, text in enumerate(texts):
        reply = core.answer([{"role": "user", "content": text}], None, sampling, cancel)
        if reply.interrupted:
            return None
        out.append(reply.token_ids)
        if on_progress is not None:
            on_progress(i + 1, expected)
    return out


def reply_gains(
    core: Core,
    pairs: list[tuple[str, str]],
    replies: list[list[int]],
    cancel,
    on_pair: Callable[[int], None] | None = None,
) -> list[np.ndarray] | None:
    """Per token of each positive reply: how many nats likelier its positive prompt made it
    than its negative prompt did, under the unsteered model (the focus weights,
    vectors/focus.py); None if cancelled. Batched like the calibration's scoring, or one at
    a time when the context has no room."""
    conversations = [user(p) for p, _ in pairs] + [user(q) for _, q in pairs]
    try:
        with core.batch() as batched:
            return _gains(batched, conversations, replies[: len(pairs)], cancel, on_pair)
    except BatchFull:
        return _gains(Unbatched(core), conversations, replies[: len(pairs)], cancel, on_pair)


def _gains(scorer, conversations, replies, cancel, on_pair, chunk: int = 8):
    """`reply_gains` with a `repl.core.Batched` or `repl.calibrate.Unbatched`; a chunk of
    pairs at a time, so Esc is heard between chunks."""
    n = len(replies)
    handles = scorer.keep_unsteered(conversations)
    out: list[np.ndarray] = []
    for start in range(0, n, chunk):
        if cancel is not None and cancel.is_set():
            return None
        mine = range(start, min(start + chunk, n))
        items = [(handles[side * n + i], replies[i]) for i in mine for side in (0, 1)]
        scores = scorer.score_unsteered(items)
        out += [np.asarray(scores[2 * k]) - np.asarray(scores[2 * k + 1]) for k in range(len(mine))]
        if on_pair is not None:
            on_pair(len(out))
    return out


def _name(raw: str) -> str:
    try:
        return check_name(raw)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


# -- /steer ----------------------------------------------------------------------------------------


@REGISTRY.command(
    "steer",
    "list, apply, adjust or switch off steering vectors",
    Arg("name", optional=True, help="a loaded vector, or 'off' to switch all off"),
    Arg("strength", optional=True, help="a number (negative steers the other way) or 'off'"),
    options=(
        Arg("--layers", help="blocks to steer, A-B (default: the vector's recommendation)"),
        Arg(
            "--mode",
            "choice",
            MODES,
            help="add: add the vector to each block's output (a llama.cpp control vector, "
            "the default); project: remove strength x the outputs' component along the "
            "vector's direction (1 cancels it, negative amplifies it; a rank-1 LoRA); "
            "prompt: add it only while the model reads the conversation, not while it "
            "writes (the default for a --method replies vector); messages: as prompt, but "
            "not while it reads the system prompt (the default for a focus vector); content: "
            "as messages, nor while it reads the assistant's header that ends the prompt "
            "(topics move further)",
        ),
        Arg(
            "--targets",
            help=f"project mode's weights per block: {' or '.join(TARGETS)}, or both "
            "comma-separated (default: the recommendation)",
        ),
    ),
    details="Without a strength or range the vector's recommendations for the mode apply. "
    "Changes take effect from the next reply; the conversation so far is re-read under the "
    "new steering. Vectors of every mode compose.",
    name=active_names,
)
def cmd_steer(core: Core, args: dict[str, Any]) -> Outcome:
    name, raw, layers_text = args["name"], args["strength"], args["layers"]
    mode, targets_text = args["mode"], args["targets"]
    steering = core.steering
    if name is None:
        if layers_text is not None or mode is not None or targets_text is not None:
            raise UsageError("name a vector to steer with: /steer NAME [S] [--layers A-B] ...")
        return Outcome.say(_steering_listing(core))
    if name == "off":
        if raw is not None or layers_text is not None or mode or targets_text:
            raise UsageError("/steer off takes no strength, layers, mode or targets")
        steering.active.clear()
        return Outcome.done("steering off")
    vector_or_error(core, name)
    if raw == "off":
        if mode or targets_text or layers_text:
            raise UsageError(f"/steer {name} off takes no layers, mode or targets")
        if steering.active.pop(name, None) is None:
            return Outcome.error(f"{name!r} is not active")
        return Outcome.done(f"{name} off")
    strength = None if raw is None else parse_float("strength", raw)
    layers = None if layers_text is None else parse_layers(core, layers_text)
    targets = None
    if targets_text is not None:
        if mode != "project":
            raise UsageError("--targets goes with --mode project")
        try:
            targets = parse_targets(targets_text)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    before = steering.active.get(name)
    active = steering.activate(name, strength, layers, mode, targets)
    if active.mode == "project":
        try:  # built now, so a problem is told here and not at the next reply
            steering.adapter(name, active.layers, active.targets)
        except (AdapterError, AdapterLoadError) as exc:
            _restore(steering, name, before)
            return Outcome.error(str(exc))
    out = Outcome.done(f"steering: {describe_active(name, active)} (from the next reply)")
    out.info += _loudness(steering, name, active)
    if active.mode == "content" and not core.sampling.dry:
        # measured: sea and music pass on both question sets with DRY, not at plain greedy;
        # sampled at temperature 0.7, music still looped on one seed of two. A tone's words
        # came partly in loops: DRY took excitement and cheerfulness below the bar; with an
        # allowed length of 3, cheerfulness and sea both passed (docs/efficacy.md)
        out.info.append(
            "tip: a topic's replies can loop, most at plain greedy; /set dry 0.8 holds that "
            "off but thins a tone's words, less with /set dry_allowed 3 (docs/efficacy.md, "
            '"DRY\'s allowed length")'
        )
    return out


def describe_active(name: str, active: Active) -> str:
    """'terse 0.4 on blocks 9-13' / 'terse 1 projected out of attn_output on blocks 9-13'."""
    a, b = active.layers
    if active.mode == "project":
        return (
            f"{name} {active.strength:g} projected out of {'+'.join(active.targets)} "
            f"on blocks {a}-{b}"
        )
    if active.mode in READ_MODES:
        return f"{name} {active.strength:g} on blocks {a}-{b}, while reading {READS[active.mode]}"
    return f"{name} {active.strength:g} on blocks {a}-{b}"


def _restore(steering, name: str, before: Active | None) -> None:
    if before is None:
        steering.active.pop(name, None)
    else:
        steering.active[name] = before


def _loudness(steering, name: str, active: Active) -> list[str]:
    if active.mode == "project":
        if active.strength > PROJECT_LOUD or active.strength < -PROJECT_LOUD / 2:
            return [
                f"warning: projection strength {active.strength:g} is far from 1 (the "
                "direction removed); expect broken text"
            ]
        return []
    if abs(active.strength) <= LOUD:
        return []
    beyond = {
        UNIT_MEAN_DIFF: "the measured difference",
        UNIT_TOKEN_NORM: "the focus scale (1 pushes each block by 0.09 of its activations)",
    }.get(
        steering.vectors[name].strength_unit,
        "the file's own scale (raw units; llama.cpp users rarely pass more than 2)",
    )
    return [f"warning: strength {active.strength:g} is far beyond {beyond}; expect broken text"]


def _steering_listing(core: Core) -> str:
    steering = core.steering
    if not steering.vectors:
        return "no vectors loaded: build one with /contrast or /vector load"
    lines = []
    for name, vec in sorted(steering.vectors.items()):
        act = steering.active.get(name)
        state = "off"
        if act:
            state = f"ON  {act.strength:+g} blocks {act.layers[0]}-{act.layers[1]}"
            if act.mode == "project":
                state += f" project ({'+'.join(act.targets)})"
            elif act.mode in READ_MODES:
                state += f" {act.mode}"
        lines.append(f"{name:<16} {state:<26} unit {vec.strength_unit}")
    return "\n".join(lines)


# -- /vector ---------------------------------------------------------------------------------------


@REGISTRY.command(
    "vector save",
    "save a vector as a llama.cpp control-vector file",
    Arg("name", help="a loaded vector"),
    Arg("path", "path", optional=True, help="file or folder (default: the user library)"),
    name=loaded_names,
)
def cmd_vector_save(core: Core, args: dict[str, Any]) -> Outcome:
    vec = vector_or_error(core, args["name"])
    path = _target(args["path"], vec.name)
    try:
        save_vector(vec, path, core.model.metadata("general.architecture") or "")
    except OSError as exc:
        return Outcome.error(f"could not save {vec.name!r} to {path}: {exc.strerror or exc}")
    vec.meta["saved_to"] = str(path)
    return Outcome.done(f"saved {vec.name!r} to {path}")


def _target(path: Path | None, name: str) -> Path:
    if path is None:
        return library_dir() / f"{name}.gguf"
    if path.is_dir():
        return path / f"{name}.gguf"
    if not path.parent.exists():
        raise UsageError(f"folder {path.parent} does not exist")
    return path


@REGISTRY.command(
    "vector load",
    "load a control-vector file (or a library name)",
    Arg(
        "path",
        "path",
        help="a .gguf file, or the name of a vector in the user library or ready-made",
    ),
    Arg("name", optional=True, help="the name to use (default: the file's)"),
    path=lambda core, prefix: sorted(set(library_names()) | set(bundled_names())),
)
def cmd_vector_load(core: Core, args: dict[str, Any]) -> Outcome:
    try:
        vec = core.steering.load(str(args["path"]), args["name"])
    except (VectorFileError, ValueError) as exc:
        return Outcome.error(str(exc))
    own = vec.strength_unit in (UNIT_MEAN_DIFF, UNIT_TOKEN_NORM)
    unit = "" if own else " (raw units: strength scales the file)"
    return Outcome.done(f"loaded {vec.name!r}{unit}; apply it: {suggestion(vec)}")


@REGISTRY.command("vector list", "list loaded vectors and the user library")
def cmd_vector_list(core: Core, args: dict[str, Any]) -> Outcome:
    lines = [_steering_listing(core)]
    lib = [n for n in library_names() if n not in core.steering.vectors]
    lines.append(f"library ({library_dir()}): {', '.join(lib) if lib else 'nothing else'}")
    ready = [n for n in bundled_names() if n not in core.steering.vectors and n not in lib]
    if ready:
        lines.append(f"ready-made (for {DEFAULT_MODEL_HINT}): {', '.join(ready)}")
    return Outcome.say("\n".join(lines))


@REGISTRY.command(
    "vector show",
    "per-block chart and provenance of a vector",
    Arg("name", help="a loaded vector"),
    name=loaded_names,
)
def cmd_vector_show(core: Core, args: dict[str, Any]) -> Outcome:
    return Outcome(view=VectorReport(vector_or_error(core, args["name"])))


@dataclass
class VectorReport:
    """A vector's per-block picture: after /contrast (with `head`) or for /vector show."""

    vector: SteeringVector
    head: str = ""  # set when the vector was just built

    def lines(self) -> list[str]:
        vec = self.vector
        if self.head:
            return [
                self.head,
                *separation_report(vec),
                *calibration_report(vec),
                f"apply it: {suggestion(vec)}",
                f"or cancel it (project mode): {project_suggestion(vec)}",
            ]
        return [describe_vector(vec)]

    def event(self) -> None:
        return None  # headless front ends print lines() as info


def provenance(vec: SteeringVector) -> list[str]:
    """The metadata a vector carries about how it was made, one 'key: value' per line."""
    skip = {"separation", "effect_size", "norms", "prompts", "calibration", "project"}
    lines = [f"{key}: {vec.meta[key]}" for key in sorted(k for k in vec.meta if k not in skip)]
    if "prompts" in vec.meta:
        lines.append(f"prompts: {len(vec.meta['prompts'])} neutral prompts")
    return lines


def describe_vector(vec: SteeringVector) -> str:
    norms = [float(x) for x in vec.norms()]
    lines = [
        f"{vec.name}: {vec.n_layer} blocks x {vec.n_embd}, unit {vec.strength_unit}",
        f"norm per block 0..{vec.n_layer - 1} (max {max(norms):.1f}):",
        f"  {sparkline(norms)}",
        *separation_report(vec),
        *calibration_report(vec),
        f"suggested: {suggestion(vec)}",
        f"project mode (cancels the concept): {project_suggestion(vec)}",
    ]
    lines += [f"  {line}" for line in provenance(vec)]
    return "\n".join(lines)


@REGISTRY.command(
    "vector rm",
    "forget a vector (and delete it from the user library)",
    Arg("name", help="a loaded or library vector"),
    name=lambda core, prefix: sorted(set(core.steering.vectors) | set(library_names())),
)
def cmd_vector_rm(core: Core, args: dict[str, Any]) -> Outcome:
    name = _name(args["name"])
    in_session = core.steering.vectors.pop(name, None) is not None
    core.steering.active.pop(name, None)
    path = library_dir() / f"{name}.gguf"
    in_library = path.is_file()
    if in_library:
        path.unlink()
    if not (in_session or in_library):
        return Outcome.error(f"no vector named {name!r} in the session or the library")
    where = " and ".join(w for w, ok in (("session", in_session), ("library", in_library)) if ok)
    return Outcome.done(f"removed {name!r} from the {where}")


@REGISTRY.command(
    "vector mix",
    "make a new vector from a linear mix of loaded ones",
    Arg("new", help="the new vector's name"),
    Arg("expr", "text", help="e.g. terse*0.5 - formal"),
)
def cmd_vector_mix(core: Core, args: dict[str, Any]) -> Outcome:
    name = _name(args["new"])
    try:
        vec = mix(args["expr"], core.steering.vectors, name)
        core.steering.add(vec)
    except ValueError as exc:
        return Outcome.error(str(exc))
    return Outcome.done(f"mixed {name!r} = {args['expr']}; apply it: {suggestion(vec)}")


@REGISTRY.command(
    "vector lora",
    "write a vector's projection as a llama.cpp LoRA adapter (--lora-scaled FILE:S)",
    Arg("name", help="a loaded vector"),
    Arg("path", "path", help="the adapter file (.gguf) or a folder"),
    options=(
        Arg("--layers", help="blocks, A-B (default: the project-mode recommendation)"),
        Arg("--targets", help=f"{' or '.join(TARGETS)}, or both comma-separated"),
    ),
    details="llama-completion ... --lora-scaled FILE:S writes the same greedy text as "
    "/steer NAME S --mode project with the same blocks and targets. The file holds the "
    "projection at scale 1; S is chosen when it is applied.",
    name=loaded_names,
)
def cmd_vector_lora(core: Core, args: dict[str, Any]) -> Outcome:
    vec = vector_or_error(core, args["name"])
    rec = project_recommendation(vec, core.model.n_layer)
    layers = rec.layers if args["layers"] is None else parse_layers(core, args["layers"])
    targets = rec.targets
    if args["targets"] is not None:
        try:
            targets = parse_targets(args["targets"])
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    path = args["path"]
    if path.is_dir():
        path = path / f"{vec.name}-lora.gguf"
    elif not path.parent.exists():
        raise UsageError(f"folder {path.parent} does not exist")
    try:
        core.steering.write_adapter(vec.name, layers, targets, path)
    except AdapterError as exc:
        return Outcome.error(str(exc))
    except OSError as exc:
        return Outcome.error(f"could not write {path}: {exc.strerror or exc}")
    a, b = layers
    return Outcome.say(
        f"wrote the projection of {vec.name!r} ({'+'.join(targets)}, blocks {a}-{b}) to {path}; "
        f"llama.cpp: --lora-scaled {path}:{rec.strength:g}"
    )
