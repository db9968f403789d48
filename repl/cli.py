"""The `steer` command line."""

from __future__ import annotations

import argparse
import sys

from engine.chat import Sampling

SUBCOMMANDS = ("chat",)


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {raw}")
    return value


def _temperature(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {raw!r}") from None
    if not 0.0 <= value <= 5.0:
        raise argparse.ArgumentTypeError(f"expected a value in [0, 5], got {raw}")
    return value


def _seed(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {raw!r}") from None
    if not 0 <= value < 2**31:
        raise argparse.ArgumentTypeError(f"expected a seed in [0, 2^31), got {raw}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="steer",
        description="Chat with a local GGUF model and steer it through its activations. "
        "Without a subcommand, 'steer' runs 'steer chat'.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chat = sub.add_parser(
        "chat",
        help="chat with the model (the default)",
        description="Chat with the model: the Textual app in a terminal, a plain line REPL with "
        "--plain or whenever stdin is not a terminal.",
    )
    chat.add_argument(
        "--plain", action="store_true", help="use the plain line REPL instead of the Textual app"
    )
    chat.add_argument(
        "--jsonl",
        action="store_true",
        help="plain REPL that prints one JSON object per line (implies --plain)",
    )
    chat.add_argument(
        "--model",
        metavar="PATH",
        help="a GGUF chat model (default: the bundled SmolLM2-135M-Instruct)",
    )
    chat.add_argument("--system", metavar="TEXT", help="system prompt")
    chat.add_argument(
        "--temperature",
        type=_temperature,
        default=0.7,
        metavar="F",
        help="sampling temperature, 0 = greedy and exact (default 0.7)",
    )
    chat.add_argument(
        "--top-p",
        type=float,
        default=0.95,
        metavar="P",
        help="nucleus sampling mass (default 0.95)",
    )
    chat.add_argument(
        "--top-k",
        type=int,
        default=40,
        metavar="K",
        help="sample among the K likeliest tokens, 0 = all (default 40)",
    )
    chat.add_argument(
        "--seed",
        type=_seed,
        metavar="N",
        help="sampling seed: the same seed gives the same replies (default random)",
    )
    chat.add_argument(
        "--max-tokens",
        type=_positive_int,
        default=512,
        metavar="N",
        help="longest reply in tokens (default 512)",
    )
    chat.add_argument(
        "--ctx",
        type=_positive_int,
        default=4096,
        metavar="N",
        help="context window in tokens, capped at the model's (default 4096)",
    )
    chat.add_argument(
        "--threads", type=_positive_int, metavar="N", help="CPU threads (default: all cores)"
    )
    return parser


def _normalise(argv: list[str]) -> list[str]:
    """`steer`, `steer --plain` ... mean `steer chat ...`."""
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help")):
        return ["chat", *argv]
    return argv


def _load(args: argparse.Namespace):
    from engine.chat import ChatContext
    from engine.model import Model
    from repl.core import Core

    model = Model(args.model)
    ctx = ChatContext(model, n_ctx=args.ctx, n_threads=args.threads)
    sampling = Sampling(
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        max_tokens=args.max_tokens,
        seed=args.seed,
    )
    return Core(model, ctx, sampling, system=args.system)


def run_chat(args: argparse.Namespace) -> int:
    from engine.chat import EngineError
    from engine.model import ModelLoadError

    try:
        core = _load(args)
    except (ModelLoadError, EngineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    plain = args.plain or args.jsonl or not sys.stdin.isatty() or not sys.stdout.isatty()
    if plain:
        from repl.plain import PlainRepl

        interactive = sys.stdin.isatty() and not args.jsonl
        repl = PlainRepl(core, jsonl=args.jsonl, interactive=interactive)
        return repl.run_terminal() if interactive else repl.run_lines(sys.stdin)
    from repl.app import SteerApp

    SteerApp(core).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(_normalise(sys.argv[1:] if argv is None else argv))
    if args.command == "chat":
        return run_chat(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
