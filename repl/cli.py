"""The `steer` command line."""

from __future__ import annotations

import argparse
import sys

from engine.chat import DRY_ALLOWED, Sampling

SUBCOMMANDS = ("chat", "vector", "replay", "rpc-server")


def _setting(key: str):
    """argparse type for a sampling option: the same checks and messages as /set KEY."""

    def convert(raw: str):
        from repl.chat_commands import SETTINGS
        from repl.commands import UsageError

        try:
            return SETTINGS[key][0](key, raw)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = key  # argparse names the type in its messages
    return convert


def _positive_int(raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {raw!r}")
    return int(raw)


def _endpoints(raw: str) -> tuple[str, ...]:
    from engine.offload import OffloadError, parse_endpoints

    try:
        return parse_endpoints(raw)
    except OffloadError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--rpc: ")) from None


def _gpu_layers(raw: str) -> int:
    from engine.offload import OffloadError, parse_gpu_layers

    try:
        return parse_gpu_layers(raw)
    except OffloadError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--gpu-layers: ")) from None


def _offload_options(parser: argparse.ArgumentParser) -> None:
    """--rpc and --gpu-layers: the same for chat, replay and vector build (docs/scaling.md)."""
    parser.add_argument(
        "--rpc",
        type=_endpoints,
        metavar="HOST:PORT[,...]",
        help="run the model's layers on these llama.cpp RPC servers ('steer rpc-server')",
    )
    parser.add_argument(
        "--gpu-layers",
        type=_gpu_layers,
        metavar="N",
        help="layers to put on the GPU or RPC servers, or 'all' (default: all with --rpc, "
        "else 0; a GPU needs a CUDA/Metal/Vulkan build, see the README)",
    )


def offload_from(args: argparse.Namespace):
    from engine.offload import Offload

    return Offload(rpc=args.rpc or (), gpu_layers=args.gpu_layers)


def say_offload(model) -> None:
    """With --rpc or --gpu-layers, one line on stderr: what was asked and what llama.cpp did
    ("all layers on RPC server 10.0.0.2:50052: offloaded 31/31 layers to GPU")."""
    from engine.offload import LOCAL

    if model.offload == LOCAL:
        return
    if model.n_devices == 0 and model.offload.n_gpu_layers != 0:
        print(
            "steer: --gpu-layers: this llama.cpp build has no GPU backend, so every layer runs "
            "on the CPU; the README says how to build for CUDA, Metal or Vulkan",
            file=sys.stderr,
        )
        return
    print(f"steer: {model.offload.describe()}: {model.offloaded}", file=sys.stderr)


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
        metavar="PATH|hf:OWNER/REPO[:QUANT]",
        help="a GGUF chat model: a file, or a Hugging Face repo's GGUF (QUANT default Q4_K_M, "
        "as llama.cpp's -hf; HF_HUB_OFFLINE=1 uses the local cache only) (default: the "
        "bundled SmolLM2-135M-Instruct)",
    )
    _template_option(chat)
    chat.add_argument("--system", metavar="TEXT", help="system prompt")
    chat.add_argument(
        "--temperature",
        type=_setting("temperature"),
        default=0.7,
        metavar="F",
        help="sampling temperature, 0 = greedy and exact (default 0.7)",
    )
    chat.add_argument(
        "--top-p",
        type=_setting("top_p"),
        default=0.95,
        metavar="P",
        help="nucleus sampling mass (default 0.95)",
    )
    chat.add_argument(
        "--top-k",
        type=_setting("top_k"),
        default=40,
        metavar="K",
        help="sample among the K likeliest tokens, 0 = all (default 40)",
    )
    chat.add_argument(
        "--dry",
        type=_setting("dry"),
        default=0.0,
        metavar="F",
        help="DRY penalty on a reply repeating its own text, 0 = off (llama.cpp's --dry-"
        "multiplier; try 0.8) (default 0)",
    )
    chat.add_argument(
        "--dry-allowed",
        type=_setting("dry_allowed"),
        default=DRY_ALLOWED,
        metavar="N",
        help="tokens a repeat may run before DRY penalises it (llama.cpp's --dry-allowed-length;"
        f" try 3 with --dry 0.8) (default {DRY_ALLOWED})",
    )
    chat.add_argument(
        "--seed",
        type=_setting("seed"),
        metavar="N",
        help="sampling seed: the same seed gives the same replies (default random)",
    )
    chat.add_argument(
        "--max-tokens",
        type=_setting("max_tokens"),
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
        "--session",
        metavar="FILE",
        help="resume this session file (or start it); default: a new file in the user data dir",
    )
    chat.add_argument(
        "--no-session", action="store_true", help="do not record or autosave this chat"
    )
    chat.add_argument(
        "--threads", type=_positive_int, metavar="N", help="CPU threads (default: all cores)"
    )
    _offload_options(chat)
    _vector_parsers(sub)
    _replay_parser(sub)
    _rpc_server_parser(sub)
    return parser


def _rpc_server_parser(sub) -> None:
    from repl.rpc_server import DEFAULT_PORT

    rpc = sub.add_parser(
        "rpc-server",
        help="serve this machine's CPU (or GPU) to a steer on another machine (llama.cpp RPC)",
        description="Run llama.cpp's rpc-server, built from the same llama.cpp as steer's "
        "engine. Another machine then runs 'steer chat --rpc HOST:PORT'. llama.cpp's RPC has "
        "no authentication or encryption: anyone who can reach the port can use this machine, "
        "so it listens on loopback unless --allow-remote is given.",
    )
    rpc.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    rpc.add_argument(
        "--port",
        type=_positive_int,
        default=DEFAULT_PORT,
        metavar="N",
        help=f"TCP port (default {DEFAULT_PORT})",
    )
    rpc.add_argument(
        "--threads", type=_positive_int, metavar="N", help="CPU threads (default: all cores)"
    )
    rpc.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host other than loopback (unauthenticated: use a private network only)",
    )
    rpc.add_argument("--binary", metavar="PATH", help="the rpc-server binary to run")


def _template_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--chat-template",
        metavar="NAME|FILE",
        help="use this chat template instead of the model's own (needed for a model without "
        "one): a llama.cpp built-in name (chatml, gemma, llama3, mistral-v7, phi4, ...) or a "
        "Jinja file; a session records it",
    )


def _steer_override(raw: str) -> tuple[str, float]:
    name, sep, value = raw.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=STRENGTH, got {raw!r}") from None


def _replay_parser(sub) -> None:
    replay = sub.add_parser(
        "replay",
        help="re-run a session against the model and check every reply",
        description="Re-execute a session's events (commands included) and regenerate every "
        "reply under its recorded steering and settings; report each as identical or different.",
    )
    replay.add_argument("file", help="a session .toml file")
    replay.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if any reply differs (or the model file changed)",
    )
    replay.add_argument("--jsonl", action="store_true", help="one JSON object per line")
    replay.add_argument(
        "--steer",
        action="append",
        type=_steer_override,
        metavar="NAME=S",
        help="replay under this steering instead (repeatable)",
    )
    replay.add_argument("--no-steer", action="store_true", help="replay with no steering")
    replay.add_argument(
        "--allow-model-change",
        action="store_true",
        help="with --check, accept a model file other than the recorded one",
    )
    replay.add_argument(
        "--model",
        metavar="PATH|hf:OWNER/REPO[:QUANT]",
        help="the model to replay with (the chat template is the session's)",
    )
    _offload_options(replay)


def run_replay(args: argparse.Namespace) -> int:
    import json
    import threading
    from pathlib import Path

    from repl.plain import sigint_cancels
    from repl.replay import Replayer, ReplayError, model_for, preflight
    from repl.session_file import SessionFileError, load_session
    from repl.test_hooks import progress_reported

    def say(kind: str, text: str, **fields) -> None:
        if args.jsonl:
            print(json.dumps({"type": kind, "message": text, **fields}, ensure_ascii=False))
        elif kind == "error":
            print(f"error: {text}", file=sys.stderr)
        else:
            print(text)

    comparing = args.no_steer or args.steer is not None

    def on_turn(t) -> None:
        progress_reported()
        status = "identical" if t.identical else "different"
        if args.jsonl:
            print(
                json.dumps(
                    {
                        "type": "turn",
                        "turn": t.index,
                        "status": status,
                        "recorded": t.recorded,
                        "replayed": t.replayed,
                        "diff": t.diff,
                    },
                    ensure_ascii=False,
                ),
                flush=True,
            )
        elif comparing:
            print(f"turn {t.index} recorded: {t.recorded}\nturn {t.index} replayed: {t.replayed}")
        else:
            print(f"turn {t.index}: {status}" + (f"  {t.diff}" if t.diff else ""), flush=True)

    path = Path(args.file)
    cancel = threading.Event()
    try:
        session = load_session(path)
        preflight(session, path, dict(args.steer) if args.steer else None)
        model, warning = model_for(session, args.model, args.allow_model_change, offload_from(args))
        say_offload(model)
        if warning:
            say("warning", warning)
        replayer = Replayer(
            model,
            session,
            path,
            steer=dict(args.steer) if args.steer else None,
            no_steer=args.no_steer,
        )
        with sigint_cancels(cancel):  # Ctrl+C stops the replay within a token
            report = replayer.run(on_turn, cancel)
    except (SessionFileError, ReplayError) as exc:
        say("error", str(exc))
        return 2
    except KeyboardInterrupt:  # Ctrl+C before the replay started (model loading)
        say("info", "replay cancelled")
        return 130
    except Exception as exc:  # a vector file or model that fails to load: one line
        say("error", f"{type(exc).__name__}: {exc}")
        return 2
    for note in report.notes:
        say("info", note)
    if args.jsonl:
        print(
            json.dumps(
                {"type": "summary", "identical": report.identical, "different": report.different}
            )
        )
    else:
        print(report.summary())
    if cancel.is_set():
        return 130  # as a shell reports Ctrl+C
    failed = report.different > 0 or (bool(warning) and not args.allow_model_change)
    return 1 if args.check and failed else 0


def _vector_parsers(sub) -> None:
    vector = sub.add_parser(
        "vector",
        help="build or inspect steering vectors without the chat",
        description="Build or inspect steering vectors headlessly.",
    )
    vsub = vector.add_subparsers(dest="vector_command", metavar="ACTION", required=True)
    build = vsub.add_parser(
        "build",
        help="build a vector by contrast and save it",
        description="Build a vector as /contrast does and save it (to the user library, or --out).",
    )
    build.add_argument("name", help="the vector's name (letters, digits, _)")
    build.add_argument("--positive", metavar="TEXT", help="instruction to steer towards")
    build.add_argument("--negative", metavar="TEXT", help="instruction to steer away from")
    build.add_argument(
        "--pairs",
        metavar="FILE",
        help="prompt pairs file (JSONL or TSV), or positive prompts beside --negative-file",
    )
    build.add_argument("--negative-file", metavar="FILE", help="negative prompts, one per line")
    build.add_argument("--method", choices=("mean", "pca", "replies", "focus"), default="mean")
    build.add_argument(
        "--n", type=_positive_int, metavar="N", help="built-in neutral prompts to use (default 24)"
    )
    build.add_argument(
        "--last",
        type=_positive_int,
        metavar="K",
        help="average the last K prompt tokens (default 1)",
    )
    build.add_argument("--raw", action="store_true", help="pair prompts verbatim, no chat template")
    build.add_argument(
        "--no-calibrate", action="store_true", help="skip measuring which strength stays fluent"
    )
    build.add_argument("--out", metavar="PATH", help="file or folder to save to")
    build.add_argument(
        "--model",
        metavar="PATH|hf:OWNER/REPO[:QUANT]",
        help="GGUF model (default: the bundled one)",
    )
    _template_option(build)
    _offload_options(build)
    show = vsub.add_parser("show", help="per-block chart and provenance of a vector file")
    show.add_argument("file", help="a control-vector .gguf file")


def run_vector(args: argparse.Namespace) -> int:
    if args.vector_command == "show":
        from repl.steer_commands import describe_vector
        from vectors import VectorFileError, load_vector

        try:
            print(describe_vector(load_vector(args.file)))
        except VectorFileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    return _build_vector(args)


def _build_vector(args: argparse.Namespace) -> int:
    import shlex

    from repl.plain import PlainRepl

    args.ctx, args.threads, args.system, args.no_session = 512, None, None, True
    args.temperature, args.top_p, args.top_k, args.max_tokens, args.seed = 0, 1, 0, 1, None
    args.dry, args.dry_allowed = 0.0, DRY_ALLOWED
    try:
        core = _load(args)
    except Exception as exc:  # ModelLoadError, EngineError: already one line
        print(f"error: {exc}", file=sys.stderr)
        return 2
    words = ["/contrast", args.name]
    if args.positive is not None or args.negative is not None:
        words += [args.positive or "", args.negative or ""]
    for flag, value in (
        ("--pairs", args.pairs),
        ("--negative-file", args.negative_file),
        ("--method", args.method),
        ("--n", args.n),
        ("--last", args.last),
    ):
        if value is not None:
            words += [flag, str(value)]
    words += [
        flag for flag, on in (("--raw", args.raw), ("--no-calibrate", args.no_calibrate)) if on
    ]
    repl = PlainRepl(core, interactive=sys.stderr.isatty())
    repl.handle(shlex.join(words))
    if not repl.errors_shown:
        repl.handle(shlex.join(["/vector", "save", args.name] + ([args.out] if args.out else [])))
    return 1 if repl.errors_shown else 0


def _normalise(argv: list[str]) -> list[str]:
    """`steer`, `steer --plain` ... mean `steer chat ...`."""
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help")):
        return ["chat", *argv]
    return argv


def _load(args: argparse.Namespace):
    from engine.chat import ChatContext
    from engine.model import Model
    from repl.core import Core

    model = Model(_model_path(args), _chat_template(args), offload=offload_from(args))
    say_offload(model)
    ctx = ChatContext(model, n_ctx=args.ctx, n_threads=args.threads)
    sampling = Sampling(
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        max_tokens=args.max_tokens,
        seed=args.seed,
        dry=args.dry,
        dry_allowed=args.dry_allowed,
    )
    return Core(model, ctx, sampling, system=args.system)


def _model_path(args: argparse.Namespace):
    """--model; else, resuming a session, the model it was made with wherever it is on this
    machine (found by sha256); else the bundled default model (None)."""
    from repl.model_lookup import ModelNotFound, find_model, model_arg_path

    if args.model:
        return model_arg_path(args.model)
    session = _resumed_session(args)
    if session is None:
        return None
    try:
        return find_model(session.model)[0]
    except ModelNotFound:
        return None  # attaching says that the model differs


def _resumed_session(args: argparse.Namespace):
    """The session `--session FILE` resumes, when it exists and loads (else None: attaching
    says what is wrong with the file)."""
    from repl.paths import user_path
    from repl.session_file import SessionFileError, load_session

    if not getattr(args, "session", None) or getattr(args, "no_session", False):
        return None
    session_path = user_path(args.session)
    if not session_path.is_file():
        return None
    try:
        return load_session(session_path)
    except SessionFileError:
        return None


def _chat_template(args: argparse.Namespace):
    """--chat-template; else, resuming a session, the template it was recorded with; else
    None (the model's own)."""
    from engine.templates import template_from_arg

    if getattr(args, "chat_template", None):
        return template_from_arg(args.chat_template)
    session = _resumed_session(args)
    if session is None:
        return None
    from repl.session import session_template

    return session_template(session)


def run_chat(args: argparse.Namespace) -> int:
    from engine.chat import EngineError
    from engine.model import ModelLoadError
    from engine.templates import TemplateChoiceError
    from repl.hf_models import HfModelError
    from repl.paths import PathError

    try:
        core = _load(args)
    except (ModelLoadError, EngineError, PathError, TemplateChoiceError, HfModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        greeting = _attach_session(core, args)
    except Exception as exc:  # SessionFileError, VectorFileError, ValueError: one line each
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return _run_front_end(core, args, greeting)
    except KeyboardInterrupt:  # Ctrl+C between lines: everything is autosaved already
        return 130
    finally:
        from repl.session import detach

        detach(core)


def _attach_session(core, args: argparse.Namespace) -> list[str]:
    if args.no_session:
        return []
    from repl.paths import user_path
    from repl.session import attach

    return attach(core, user_path(args.session) if args.session else None)


def _run_front_end(core, args: argparse.Namespace, greeting: list[str]) -> int:
    plain = args.plain or args.jsonl or not sys.stdin.isatty() or not sys.stdout.isatty()
    if plain:
        from repl.commands import Outcome
        from repl.plain import PlainRepl

        interactive = sys.stdin.isatty() and not args.jsonl
        repl = PlainRepl(core, jsonl=args.jsonl, interactive=interactive)
        if interactive:
            repl.show(Outcome(info=greeting))
            for turn in core.turns:  # a resumed session's transcript
                print(f"> {turn.text}" if turn.role == "user" else turn.text)
        return repl.run_terminal() if interactive else repl.run_lines(sys.stdin)
    from repl.app import SteerApp

    SteerApp(core, greeting).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(_normalise(sys.argv[1:] if argv is None else argv))
    if args.command == "chat":
        return run_chat(args)
    if args.command == "vector":
        return run_vector(args)
    if args.command == "replay":
        return run_replay(args)
    if args.command == "rpc-server":
        from repl.rpc_server import run_rpc_server

        return run_rpc_server(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
