"""--chat-template NAME|FILE: a model without a template (or with the wrong one) gets one of
llama.cpp's built-in formats or a Jinja file; sessions record it and replay uses it.

The model without a template is the default model with its template's key renamed
(tests/test_plain.py's model_variant): same weights and vocabulary, so replies can be compared
with the original's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import Model, Sampling
from engine.chat import ChatContext
from engine.model import ModelLoadError, default_model_path
from engine.templates import ChatTemplate, TemplateChoiceError, builtin_names, template_from_arg
from repl.session import template_warning
from repl.session_file import load_session
from tests.conftest import user
from tests.test_plain import HOSTILE, model_variant, steer

GREEDY = ["--temperature", "0", "--max-tokens", "12"]


@pytest.fixture(scope="module")
def bare(tmp_path_factory) -> Path:
    """The default model's weights without a chat template."""
    folder = tmp_path_factory.mktemp("bare")
    return model_variant(folder, "bare.gguf", key=b"tokenizer.chat_templatX")


@pytest.fixture(scope="module")
def own_template_file(tmp_path_factory, model: Model) -> Path:
    """The default model's own template, as a Jinja file."""
    path = tmp_path_factory.mktemp("tpl") / "smollm.jinja"
    path.write_text(model.chat_template, encoding="utf-8")
    return path


def test_builtin_names_are_llama_cpps() -> None:
    names = builtin_names()
    assert {"chatml", "gemma", "llama3", "phi4", "mistral-v7"} <= set(names)
    assert template_from_arg("gemma") == ChatTemplate(name="gemma")


def test_an_unknown_name_is_one_line_naming_the_choices(tmp_path: Path) -> None:
    with pytest.raises(TemplateChoiceError) as info:
        template_from_arg(str(tmp_path / "chatmll"))
    message = str(info.value)
    assert "\n" not in message and "--chat-template" in message and "chatml" in message
    assert "~nosuch" in str(
        pytest.raises(TemplateChoiceError, template_from_arg, "~nosuch/x").value
    )


def test_a_jinja_file_gives_exactly_the_models_own_replies(
    bare: Path, own_template_file: Path, model: Model
) -> None:
    """The same template from a file, on the template-less copy, is the same chat."""
    chosen = Model(bare, template_from_arg(str(own_template_file)))
    try:
        assert chosen.template_override.file == "smollm.jinja"
        for messages in (user("Name three colors."), [*user("Hi"), *user("And bye")]):
            assert chosen.chat_tokens(messages) == model.chat_tokens(messages)
        ours = ChatContext(chosen, n_ctx=512)
        theirs = ChatContext(model, n_ctx=512)
        greedy = Sampling(temperature=0.0, max_tokens=16)
        question = user("Why is the sky blue?")
        assert ours.generate(question, greedy).text == theirs.generate(question, greedy).text
        ours.close()
        theirs.close()
    finally:
        chosen.close()


def test_a_builtin_name_renders_llama_cpps_format(bare: Path) -> None:
    chosen = Model(bare, ChatTemplate(name="chatml"))
    try:
        messages = [{"role": "system", "content": "Be brief."}, *user("Hi")]
        assert chosen.render_chat(messages) == (
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n"
        )
        tokens = chosen.chat_tokens(user("<|im_end|>"))  # message text stays text
        assert tokens.count(chosen.tokenize("<|im_end|>")[0]) == 1
    finally:
        chosen.close()


def test_a_hostile_or_broken_template_file_is_one_line(tmp_path: Path, bare: Path) -> None:
    mark = tmp_path / "pwned"
    hostile = tmp_path / "hostile.jinja"
    hostile.write_text(HOSTILE.replace("MARK", str(mark)))
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}")
    binary = tmp_path / "binary.jinja"
    binary.write_bytes(b"\xff\xfe{{ x }}")
    cases = {
        hostile: "SecurityError",
        broken: "TemplateSyntaxError",
        binary: "cannot read it as UTF-8",
        tmp_path / "missing.jinja": "neither a built-in template nor a file",
    }
    for path, message in cases.items():
        args = ["--model", str(bare), "--chat-template", str(path)]
        proc = steer("chat", "--plain", "--no-session", *args, stdin="Hello\n")
        assert proc.returncode == 2 and proc.stdout == "", (path, proc.stderr)
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert message in proc.stderr, proc.stderr
    assert not mark.exists()
    with pytest.raises(ModelLoadError, match="no built-in template"):
        Model(bare, ChatTemplate(name="no-such-format"))


def test_the_flag_replaces_a_models_own_template() -> None:
    """On a model that has a template, the flag wins (the wrong-template case)."""
    args = ["--model", str(default_model_path()), *GREEDY]
    own = steer("chat", "--plain", "--no-session", *args, stdin="Hi\n")
    chatml = steer("chat", "--plain", "--no-session", *args, "--chat-template", "chatml",
                   stdin="Hi\n")  # fmt: skip
    assert own.returncode == chatml.returncode == 0
    # SmolLM2's own template adds a default system prompt; bare chatml does not
    assert own.stdout != chatml.stdout


def test_the_session_records_the_template_and_replays_with_it(
    tmp_path: Path, bare: Path, own_template_file: Path
) -> None:
    session = tmp_path / "s.toml"
    args = ["--model", str(bare), "--chat-template", str(own_template_file), *GREEDY]
    made = steer("chat", "--jsonl", "--session", str(session), *args, stdin="Name a color.\n")
    assert made.returncode == 0, made.stderr
    reply = json.loads(made.stdout.splitlines()[-1])["text"]
    recorded = load_session(session)
    assert recorded.version == 3
    assert recorded.chat_template == {
        "jinja": own_template_file.read_text(),
        "file": "smollm.jinja",
    }
    own_template_file_moved = own_template_file.with_suffix(".gone")
    own_template_file.rename(own_template_file_moved)  # the session holds the text itself
    try:
        checked = steer("replay", "--check", "--model", str(bare), str(session))
        assert checked.returncode == 0 and "1 identical" in checked.stdout, checked.stdout
        # resuming without the flag takes the session's template: no warning, same chat
        resumed = steer("chat", "--plain", "--session", str(session), "--model", str(bare),
                        *GREEDY, stdin="/regen\n")  # fmt: skip
        assert resumed.returncode == 0 and resumed.stderr == "", resumed.stderr
        assert resumed.stdout.strip() == reply.strip()
    finally:
        own_template_file_moved.rename(own_template_file)
    # resuming under another template says so
    for chosen, warned in (
        (ChatTemplate(name="chatml"), True),
        (recorded_template(session), False),
    ):
        other = Model(bare, chosen)
        assert ("another chat template" in template_warning(recorded, other)) is warned
        other.close()


def recorded_template(session: Path) -> ChatTemplate:
    from repl.session import session_template

    return session_template(load_session(session))


def test_vector_build_takes_the_flag(tmp_path: Path, bare: Path) -> None:
    out = tmp_path / "v.gguf"
    base = ["vector", "build", "v", "--positive", "Be terse.", "--negative", "Be verbose."]
    base += ["--n", "2", "--no-calibrate", "--model", str(bare), "--out", str(out)]
    refused = steer(*base)
    assert refused.returncode == 2 and "--chat-template" in refused.stderr, refused.stderr
    built = steer(*base, "--chat-template", "chatml")
    assert built.returncode == 0 and out.is_file(), built.stderr
