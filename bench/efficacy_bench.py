"""Efficacy scoreboard: does steering at steer's own recommendation do what the instruction says?

For each concept, /contrast builds a vector from a positive and a negative instruction exactly as
a user would (calibration included), and 16 questions (two sets of 8) that no build or
calibration prompt contains are answered three ways: unsteered, with the positive instruction in
the prompt, and steered at the vector's recommendation (`/steer NAME`, no numbers). Every reply
is greedy (`--temperature` samples them instead, from one seed), capped at 150 tokens, and
scored by the unsteered model on the bare question. The verdict is given over all 16 and over
each set, since one on 8 can flip with the questions;
a marker the prompt itself does not raise gives no bar ("NO BAR"), not a pass. The last five
concepts are held out, in two sets written once each: nothing was chosen by looking at them.
Columns:

- marker: the concept's countable marker (reply tokens for verbosity, marker words or '!' per
  100 words otherwise);
- tokens: mean reply length;
- NLL: mean negative log-likelihood per reply token under the unsteered model, and its ratio to
  the unsteered replies';
- rep3: mean share of repeated token 3-grams.

`--ready` measures the ready-made vectors shipped with steer (vectors/data/vectors) as a user
gets them (`/vector load NAME`, then `/steer NAME`) instead of building them.

Run with `make efficacy` (updates docs/efficacy.md) or
`python bench/efficacy_bench.py [--concepts sea,excited] [--options "--method replies"]
[--questions first|second|both|fresh] [--ready]`.
"""

from __future__ import annotations

import argparse
import math
import re
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import ChatContext, Model, Sampling  # noqa: E402
from engine.capture import Probe  # noqa: E402
from engine.chat import DRY_ALLOWED  # noqa: E402
from repl.calibrate import Scored, answer_all, instructed, score  # noqa: E402
from repl.core import Core  # noqa: E402
from vectors import bundled_names, bundled_path, calibration_prompts, neutral_prompts  # noqa: E402
from vectors.atomic import write_atomic  # noqa: E402

QUESTIONS = [
    "How do birds find their way when they migrate?",
    "What is the difference between a virus and a bacterium?",
    "How does a battery store energy?",
    "Why do people dream?",
    "How is paper made?",
    "What does a city council do?",
    "How do glaciers move?",
    "What is the purpose of a bank?",
]
# A second set, as far from the build and calibration prompts as the first: a marker averaged
# over 8 replies moves a lot with the questions (docs/efficacy.md), and `--questions second`
# shows whether a verdict holds on other ones.
SECOND_QUESTIONS = [
    "How does a lighthouse lens work?",
    "What do firefighters do all day?",
    "How is glass made?",
    "Why do we yawn?",
    "How does a thermostat work?",
    "What does a museum curator do?",
    "How do river valleys form?",
    "How does a post office sort mail?",
]
# Held out from the scoreboard itself: a setting chosen by looking at the scoreboard's 16 (a
# ready-made vector's strength, bench/build_ready_vectors.py) is confirmed on these 16, which
# nothing was chosen on (`--questions fresh`).
FRESH_QUESTIONS = [
    "What does a dentist do?",
    "How is cheese made?",
    "How do muscles grow stronger?",
    "What does an architect do?",
    "How does a camera take a picture?",
    "How does a smoke detector work?",
    "What is the job of a judge?",
    "How do trains switch tracks?",
    "How does a microscope work?",
    "How are bridges built?",
    "What does a pharmacist do?",
    "How does a vending machine work?",
    "How do fireflies glow?",
    "What is the purpose of a census?",
    "How is wool turned into yarn?",
    "How does an elevator work?",
]
QUESTION_SETS = {
    "first": QUESTIONS,
    "second": SECOND_QUESTIONS,
    "both": QUESTIONS + SECOND_QUESTIONS,
    "fresh": FRESH_QUESTIONS,
}


def set_label(name: str) -> str:
    """How a run names its questions: "first set", "both sets"."""
    return "both sets" if name == "both" else f"{name} set"


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def _lexicon(words: str) -> frozenset[str]:
    return frozenset(words.split())


def lexicon_rate(lexicon: frozenset[str]) -> Callable[[str, int], float]:
    """Marker words per 100 words (exact words, so 'sea' never counts 'season')."""

    def rate(text: str, tokens: int) -> float:
        words = _words(text)
        return 100.0 * sum(w in lexicon for w in words) / len(words) if words else 0.0

    return rate


def excitement(text: str, tokens: int) -> float:
    """Enthusiastic words and '!' per 100 words. On this model the instruction in the prompt
    gives no '!' at all but a gushing register ("a marvel", "truly fascinating")."""
    words = _words(text)
    hits = sum(w in EXCITED for w in words) + text.count("!")
    return 100.0 * hits / len(words) if words else 0.0


def length(text: str, tokens: int) -> float:
    return float(tokens)


SEA = _lexicon(
    "sea seas ocean oceans ship ships sailor sailors sail sails sailing boat boats wave waves "
    "harbor harbour harbors tide tides marine maritime naval navy captain anchor anchors shore "
    "coast coastal vessel vessels voyage voyages fleet nautical seafaring mariner mariners crew "
    "deck port ports shipwreck pirate pirates seaside sailed underwater fish whale whales"
)
SPACE = _lexicon(
    "space spacecraft spaceship star stars starry planet planets planetary galaxy galaxies "
    "universe cosmos cosmic astronaut astronauts orbit orbits orbiting rocket rockets telescope "
    "nasa moon moons solar asteroid asteroids comet comets nebula astronomy astronomer "
    "astronomers celestial interstellar mars jupiter saturn gravity satellite satellites"
)
SAD = _lexicon(
    "sad sadly sadness sorrow sorrowful gloomy gloom melancholy melancholic unfortunately lonely "
    "loneliness grief grieve tears weep weeping cry crying despair mourn mourning heartbreak "
    "heartbroken regret alas bleak darkness emptiness lost loss pain painful suffer suffering "
    "hopeless miserable misery sigh weary grim dreary forlorn"
)
EXCITED = _lexicon(
    "amazing incredible incredibly marvel marvelous marvellous fascinating wonderful remarkable "
    "exciting excited thrilling thrilled wow extraordinary magnificent awesome spectacular "
    "breathtaking truly absolutely delight delightful unbelievable stunning astonishing "
    "fantastic brilliant glorious oh whoa yay"
)
FORMAL = _lexicon(
    "sincerely regards dear furthermore moreover therefore thus hence hereby accordingly "
    "consequently respectfully kindly regarding pursuant esteemed additionally nevertheless "
    "whereas wherein henceforth shall utilize facilitate subsequently aforementioned "
    "request inform please"
)

CHEERFUL = _lexicon(
    "cheerful cheerfully cheer cheers happy happily happiness joy joyful joyfully glad gladly "
    "delighted smile smiles smiling sunny bright lovely fun pleasure pleased hooray hurray "
    "yay hello hi grin grinning laugh laughing laughter upbeat jolly merry"
)
FOOD = _lexicon(
    "food foods cook cooks cooking cooked chef chefs kitchen kitchens recipe recipes meal meals "
    "dish dishes bread taste tastes tasty flavor flavors flavour flavours delicious eat eating "
    "eaten bake baking baked soup fruit fruits vegetable vegetables spice spices ingredient "
    "ingredients dinner lunch breakfast cake cakes sauce"
)
MUSIC = _lexicon(
    "music musical song songs sing singing singer singers melody melodies rhythm rhythms "
    "harmony harmonies instrument instruments guitar piano violin drum drums band bands "
    "orchestra symphony concert concerts composer composers tune tunes lyrics chord chords "
    "musician musicians"
)
GRATEFUL = _lexicon(
    "thank thanks thankful grateful gratefully gratitude appreciate appreciated appreciation "
    "appreciative blessed blessing blessings kind kindness warm warmly"
)
SPORTS = _lexicon(
    "sport sports athlete athletes team teams game games ball football soccer basketball tennis "
    "baseball player players coach coaches match matches score scored olympic olympics race races "
    "stadium championship"
)


@dataclass
class Concept:
    name: str
    kind: str  # verbosity, formality, topic, tone
    positive: str
    negative: str
    marker_name: str
    marker: Callable[[str, int], float]
    options: str = ""  # extra /contrast options this concept is built with


# Topics are built as the README advises for a topic (since 2026-12-07; `--method replies`
# before, which the tables in docs/efficacy.md before that date used; in content mode since
# 2026-12-07, late: `--mode content` then, `--method focus`'s own mode since that night).
TOPIC_METHOD = "--method focus"

CONCEPTS = [
    Concept(
        "terse",
        "verbosity",
        "Respond tersely, in one short sentence.",
        "Respond in great detail, at length.",
        "tokens",
        length,
    ),
    Concept(
        "formal",
        "formality",
        "Respond formally, like an official letter.",
        "Respond casually, like a text to a friend.",
        "formal words/100",
        lexicon_rate(FORMAL),
    ),
    Concept(
        "sea",
        "topic",
        "Relate your answer to the sea and ships.",
        "Answer the question.",
        "sea words/100",
        lexicon_rate(SEA),
        TOPIC_METHOD,
    ),
    Concept(
        "space",
        "topic",
        "Relate your answer to outer space and the stars.",
        "Answer the question.",
        "space words/100",
        lexicon_rate(SPACE),
        TOPIC_METHOD,
    ),
    Concept(
        "excited",
        "tone",
        "Answer with wild excitement and exclamation marks.",
        "Answer calmly.",
        "excitement/100",
        excitement,
    ),
    Concept(
        "sad",
        "tone",
        "Answer in a sad, gloomy, melancholy tone.",
        "Answer in a neutral, matter-of-fact tone.",
        "sad words/100",
        lexicon_rate(SAD),
    ),
    # Held out: written once (2026-12-01), after every rule of the calibration had been set on
    # the six above, and measured unchanged. A rule tuned on them would end their use as a check.
    Concept(
        "cheerful",
        "tone",
        "Answer in a cheerful, upbeat, happy tone.",
        "Answer in a neutral, matter-of-fact tone.",
        "cheerful words/100",
        lexicon_rate(CHEERFUL),
    ),
    Concept(
        "food",
        "topic",
        "Relate your answer to food and cooking.",
        "Answer the question.",
        "food words/100",
        lexicon_rate(FOOD),
        TOPIC_METHOD,
    ),
    Concept(
        "music",
        "topic",
        "Relate your answer to music and songs.",
        "Answer the question.",
        "music words/100",
        lexicon_rate(MUSIC),
        TOPIC_METHOD,
    ),
    # A second held-out set, written once (2026-12-01) before anything was measured on it.
    Concept(
        "grateful",
        "tone",
        "Answer in a warm, grateful, thankful tone.",
        "Answer in a neutral, matter-of-fact tone.",
        "grateful words/100",
        lexicon_rate(GRATEFUL),
    ),
    Concept(
        "sports",
        "topic",
        "Relate your answer to sports and athletes.",
        "Answer the question.",
        "sports words/100",
        lexicon_rate(SPORTS),
        TOPIC_METHOD,
    ),
]


@dataclass
class Condition:
    """Replies under one condition, summarised."""

    label: str
    scored: list[Scored]
    marker: float = 0.0
    tokens: float = 0.0
    nll: float = math.nan
    rep3: float = 0.0
    texts: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, label: str, scored: list[Scored], concept: Concept) -> Condition:
        made = [s for s in scored if s.reply.tokens > 0]
        return cls(
            label,
            scored,
            marker=float(np.mean([concept.marker(s.reply.text, s.reply.tokens) for s in scored])),
            tokens=float(np.mean([s.reply.tokens for s in scored])),
            nll=float(np.mean([s.nll for s in made])) if made else math.nan,
            rep3=float(np.mean([s.repeat for s in scored])),
            texts=[s.reply.text for s in scored],
        )


@dataclass
class Result:
    concept: Concept
    unsteered: Condition
    prompted: Condition
    steered: Condition
    strength: float
    layers: tuple[int, int]
    build_s: float
    calibrated: bool

    def part(self, at: slice) -> Result:
        """The same replies over some of the questions: one set of `--questions both`."""

        def cut(cond: Condition) -> Condition:
            return Condition.of(cond.label, cond.scored[at], self.concept)

        return replace(
            self,
            unsteered=cut(self.unsteered),
            prompted=cut(self.prompted),
            steered=cut(self.steered),
        )

    def verdict(self) -> str:
        """The issue's targets for this concept: met or not, and why."""
        u, p, s = self.unsteered, self.prompted, self.steered
        ratio = s.nll / u.nll
        fluent = ratio <= 1.5 and s.rep3 <= u.rep3 + 0.10
        if self.concept.kind == "verbosity":
            cut = 1 - s.tokens / u.tokens
            ok = cut >= 0.60 and fluent
            return (
                f"{'PASS' if ok else 'FAIL'}: {cut:.0%} shorter at {ratio:.2f}x NLL, "
                f"rep3 {s.rep3 - u.rep3:+.2f}"
            )
        gain, prompt_gain = s.marker - u.marker, p.marker - u.marker
        if prompt_gain <= 0:
            # "half the prompt's gain" would hold for any steered marker: no bar to pass
            return (
                f"NO BAR: the prompt does not raise the marker ({u.marker:.2f} -> "
                f"{p.marker:.2f}); steered {s.marker:.2f} at {ratio:.2f}x NLL"
            )
        strong = s.marker >= 2 * u.marker and s.marker > u.marker
        ok = strong and gain >= 0.5 * prompt_gain and fluent
        share = gain / prompt_gain
        return (
            f"{'PASS' if ok else 'FAIL'}: marker {u.marker:.2f} -> {s.marker:.2f} "
            f"({share:.0%} of the prompt's gain) at {ratio:.2f}x NLL, rep3 {s.rep3 - u.rep3:+.2f}"
        )


def build_line(concept: Concept, extra: str, ready: bool) -> str:
    """The command a user types to get the concept's vector: /contrast, or /vector load of the
    shipped file (its path, so a library vector of the same name cannot stand in for it)."""
    if ready:
        return f"/vector load {shlex.quote(str(bundled_path(concept.name)))} {concept.name}"
    own = concept.options
    for flag in ("--method", "--mode"):  # the run's replaces the concept's own
        if flag in extra.split():
            own = re.sub(rf"{flag} \S+", "", own)
    options = f"{own} {extra}".strip()
    return (
        f"/contrast {concept.name} {shlex.quote(concept.positive)} "
        f"{shlex.quote(concept.negative)} {options}".strip()
    )


def run_concept(
    core: Core,
    concept: Concept,
    extra: str,
    sampling: Sampling,
    base,
    questions: list[str],
    ready: bool = False,
) -> Result:
    line = build_line(concept, extra, ready)
    start = time.perf_counter()
    outcome = core.submit(line)
    if outcome.errors:
        raise SystemExit(f"{line}: {outcome.errors[0]}")
    result = core.run_job(outcome) if outcome.job is not None else outcome
    if result.errors:
        raise SystemExit(f"{line}: {result.errors[0]}")
    build_s = time.perf_counter() - start
    vec = core.steering.vectors[concept.name]
    # `/steer NAME`: the recommendation, mode included
    active = core.steering.activate(concept.name, None, None, None)
    core.steering.active.clear()
    control = core.steering.control({concept.name: active})
    asked = [instructed(q, concept.positive) for q in questions]
    prompted = answer_all(core, asked, None, sampling)
    steered = answer_all(core, questions, control, sampling)
    return Result(
        concept,
        Condition.of("unsteered", base, concept),
        Condition.of("prompt", score(core, questions, prompted), concept),
        Condition.of(
            f"{'ready' if ready else 'steer'} {active.strength:g}"
            f"{'' if active.mode == 'add' else ' ' + active.mode}",
            score(core, questions, steered),
            concept,
        ),
        active.strength,
        active.layers,
        build_s,
        "calibration" in vec.meta,
    )


def verdict_lines(result: Result, questions: str) -> list[str]:
    """The verdict, and with both sets each set's own: a verdict on 8 questions can flip with
    the questions (docs/efficacy.md)."""
    lines = [f"- {result.concept.name} ({result.concept.kind}): {result.verdict()}"]
    if questions == "both":
        n = len(QUESTIONS)
        for name, at in (("first 8", slice(0, n)), ("second 8", slice(n, None))):
            lines.append(f"  - {name}: {result.part(at).verdict()}")
    return lines


def table(results: list[Result]) -> list[str]:
    out = [
        "| concept | marker | condition | marker value | tokens | NLL/token | NLL x | rep3 |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        base = r.unsteered.nll
        for cond in (r.unsteered, r.prompted, r.steered):
            label = cond.label
            if cond is r.steered:
                label += f" @{r.layers[0]}-{r.layers[1]}"
            out.append(
                f"| {r.concept.name} | {r.concept.marker_name} | {label} | {cond.marker:.2f} | "
                f"{cond.tokens:.1f} | {cond.nll:.2f} | {cond.nll / base:.2f} | {cond.rep3:.3f} |"
            )
    return out


def doc_block(
    ready: bool,
    questions: str,
    dry: float,
    temperature: float = 0.0,
    seed: int = 1,
    dry_allowed: int = DRY_ALLOWED,
) -> str:
    """The block of docs/efficacy.md a run writes: the scoreboard is `efficacy`; the ready-made
    vectors have one per set of questions (`ready-both`, `ready-fresh`), and so has any other
    set (`efficacy-fresh`); DRY's tables are beside them (`efficacy-dry`, `ready-fresh-dry`),
    and sampled ones have their temperature and seed (`efficacy-t0.7-s1`)."""
    block = f"ready-{questions}" if ready else "efficacy"
    if not ready and questions != "both":
        block += f"-{questions}"
    if dry:
        block += "-dry" if dry_allowed == DRY_ALLOWED else f"-dry{dry_allowed}"
    return f"{block}-t{temperature:g}-s{seed}" if temperature > 0 else block


def decoding(temperature: float, seed: int, dry: float, dry_allowed: int = DRY_ALLOWED) -> str:
    """How the run's replies were chosen, as its block's first line says it."""
    how = f"temperature {temperature:g} (seed {seed})" if temperature > 0 else "greedy"
    if not dry:
        return how
    allowed = "" if dry_allowed == DRY_ALLOWED else f" (allowed length {dry_allowed})"
    return f"{how} with DRY {dry:g}{allowed}"


def _split(path: Path, block: str) -> tuple[str, str, str]:
    """The doc's text before the block's begin marker (included), inside, and from its end."""
    begin, end = f"<!-- {block}:begin -->", f"<!-- {block}:end -->"
    text = path.read_text("utf-8")
    if begin not in text or end not in text:
        raise SystemExit(f"{path}: no {begin} ... {end} block to update")
    head, rest = text.split(begin, 1)
    inside, tail = rest.split(end, 1)
    return head + begin, inside, end + tail


def update_doc(path: Path, body: list[str], block: str = "efficacy") -> None:
    head, _, tail = _split(path, block)
    new = f"{head}\n" + "\n".join(body) + f"\n{tail}"
    write_atomic(path, lambda tmp: tmp.write_text(new, "utf-8"))  # never half a doc


def block_concepts(path: Path, block: str) -> set[str]:
    """The concepts whose rows the doc's block holds now (none for an empty block)."""
    inside = _split(path, block)[1]
    cells = (line.split("|")[1].strip() for line in inside.splitlines() if line.startswith("| "))
    return {c for c in cells if c not in ("concept", "---")}


def check_doc(path: Path, block: str, concepts: list[str]) -> None:
    """Refuse, before any reply is written, a run that would drop some of the block's rows: the
    block is rewritten whole, so a run must measure at least what it holds (more is fine: a
    concept added since), or not update it."""
    dropped = block_concepts(path, block) - set(concepts)
    if dropped:
        raise SystemExit(
            f"{path}: the {block} block also holds {','.join(sorted(dropped))}, which this run "
            "leaves out; add them to --concepts or leave out --update-doc"
        )


def arguments() -> argparse.ArgumentParser:
    """The command line (tests/test_efficacy_doc.py reads the Makefile's runs with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concepts", help="comma-separated names (default: all)")
    parser.add_argument(
        "--options",
        default="",
        help="extra /contrast options for every concept (a --method or --mode replaces the "
        "concept's)",
    )
    parser.add_argument(
        "--questions",
        choices=sorted(QUESTION_SETS),
        default="both",
        help="which unseen questions: both sets (16, the scoreboard), one set of 8, or the 16 "
        "fresh ones that confirm settings chosen on the scoreboard",
    )
    parser.add_argument(
        "--ready", action="store_true", help="measure the shipped ready-made vectors as loaded"
    )
    parser.add_argument("--max-tokens", type=int, default=150)
    parser.add_argument(
        "--dry",
        type=float,
        default=0.0,
        help="DRY penalty (/set dry) on every condition's replies: unsteered, prompt and steer "
        "alike; the vector's build and calibration are unchanged (default 0: plain greedy)",
    )
    parser.add_argument(
        "--dry-allowed",
        type=int,
        default=DRY_ALLOWED,
        help=f"tokens a repeat may run before DRY penalises it (/set dry_allowed; default "
        f"{DRY_ALLOWED}, llama.cpp's); a run with another writes a block of its own",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="sample every condition's replies at this temperature with chat's top-k 40 and "
        "top-p 0.95, each reply from --seed (default 0: greedy, the scoreboard)",
    )
    parser.add_argument("--seed", type=int, default=1, help="each sampled reply's seed")
    parser.add_argument("--threads", type=int, default=2, help="1 on a busy machine")
    parser.add_argument("--show", action="store_true", help="print every steered reply")
    parser.add_argument("--update-doc", type=Path, help="rewrite the table block in this file")
    return parser


def chosen(args: argparse.Namespace) -> list[Concept]:
    """The concepts a run measures: --concepts, else all (the shipped ones with --ready)."""
    known = [c.name for c in CONCEPTS if not args.ready or c.name in bundled_names()]
    wanted = args.concepts.split(",") if args.concepts else known
    concepts = [c for c in CONCEPTS if c.name in wanted and c.name in known]
    if len(concepts) != len(wanted):
        raise SystemExit(f"unknown concept in {wanted}; known: {known}")
    return concepts


def run_block(args: argparse.Namespace) -> str:
    """The doc block a run writes."""
    return doc_block(
        args.ready, args.questions, args.dry, args.temperature, args.seed, args.dry_allowed
    )


def main() -> None:
    args = arguments().parse_args()
    questions = QUESTION_SETS[args.questions]
    overlap = set(questions) & (set(neutral_prompts()) | set(calibration_prompts()))
    if overlap:
        raise SystemExit(f"bench questions overlap the build or calibration prompts: {overlap}")
    concepts = chosen(args)
    block = run_block(args)
    if args.update_doc is not None:
        check_doc(args.update_doc, block, [c.name for c in concepts])
    model = Model()
    sampling = Sampling(
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        seed=args.seed,
        dry=args.dry,
        dry_allowed=args.dry_allowed,
    )
    ctx = ChatContext(model, n_ctx=2048, n_threads=args.threads)
    core = Core(model, ctx, sampling)
    core.steering._probe = Probe(model, n_threads=args.threads)
    start = time.perf_counter()
    base = score(core, questions, answer_all(core, questions, None, sampling))
    results = []
    for concept in concepts:
        result = run_concept(core, concept, args.options, sampling, base, questions, args.ready)
        results.append(result)
        print(f"{concept.name}: {result.verdict()} (built in {result.build_s:.1f} s)", flush=True)
        if args.show:
            for cond in (result.prompted, result.steered):
                for q, text in zip(questions, cond.texts, strict=True):
                    print(f"  {cond.label} [{q}] {text[:300]!r}")
    command = "python bench/efficacy_bench.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    body = [
        f"Made by `{command.strip()}` on {model.name}"
        f"{' (the ready-made vectors as shipped)' if args.ready else ''}: "
        f"{len(questions)} unseen questions "
        f"({set_label(args.questions)}), "
        f"{decoding(args.temperature, args.seed, args.dry, args.dry_allowed)}, "
        f"{args.max_tokens}-token cap, "
        f"{time.perf_counter() - start:.0f} s.",
        "",
        *table(results),
        "",
        *(line for r in results for line in verdict_lines(r, args.questions)),
    ]
    print("\n".join(body))
    if args.update_doc is not None:
        update_doc(args.update_doc, body, block)


if __name__ == "__main__":
    main()
