"""The checkpoint tokenizer against the tiny checkpoints and `transformers`' own tokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tokenizers

from inference.text.tokenizer import Tokenizer
from inference.tiny.build import END_OF_TEXT, IM_END, IM_START, SPECIAL_TOKENS

SAMPLES = [
    "Hello, world!",
    " leading space and trailing space ",
    "Café crème, naïve façade, Zażółć gęślą jaźń",
    "水门在早上六时打开。日本語のテキスト。한국어 문장.",
    "Emoji 🌊⛵🐟 and a family 👨‍👩‍👧‍👦 and flags 🇫🇷🇯🇵 and skin tone 👍🏽",
    "tabs\tnewlines\n\nand  double  spaces",
    "def f(x):\n    return x ** 2  # 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "",
]
CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Bonjour 🌊 — ça va ?"},
    {"role": "assistant", "content": "Oui."},
    {"role": "user", "content": "水闸?"},
]


@pytest.fixture(scope="module")
def gpt2_tok(tiny_model_dir: Path) -> Tokenizer:
    return Tokenizer.from_dir(tiny_model_dir)


@pytest.fixture(scope="module")
def llama_tok(tiny_llama_dir: Path) -> Tokenizer:
    return Tokenizer.from_dir(tiny_llama_dir)


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip_including_multibyte(gpt2_tok: Tokenizer, text: str) -> None:
    ids = gpt2_tok.encode(text)
    assert gpt2_tok.decode(ids) == text
    assert b"".join(gpt2_tok.token_bytes(i) for i in ids) == text.encode("utf-8")


def test_multibyte_characters_are_split_across_tokens(gpt2_tok: Tokenizer) -> None:
    # The detokenizer tests rely on this: single tokens that are not valid UTF-8 on their own.
    ids = gpt2_tok.encode("🦩 𝔘 ꙮ")
    assert any(gpt2_tok.decode_token(i) == "\ufffd" for i in ids)


@pytest.mark.parametrize("fixture", ["tiny_model_dir", "tiny_llama_dir"])
def test_matches_transformers(fixture: str, request: pytest.FixtureRequest) -> None:
    transformers = pytest.importorskip("transformers")
    directory = request.getfixturevalue(fixture)
    ours = Tokenizer.from_dir(directory)
    theirs = transformers.AutoTokenizer.from_pretrained(directory)
    for text in SAMPLES:
        assert ours.encode(text) == theirs(text)["input_ids"], text
        ids = ours.encode(text)
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True)
    for add_generation_prompt in (True, False):
        rendered = ours.apply_chat_template(CHAT, add_generation_prompt=add_generation_prompt)
        expected = theirs.apply_chat_template(
            CHAT, tokenize=False, add_generation_prompt=add_generation_prompt
        )
        assert rendered == expected


def test_chat_template_renders_chatml(gpt2_tok: Tokenizer) -> None:
    rendered = gpt2_tok.apply_chat_template(CHAT[:2])
    assert rendered == (
        f"{IM_START}system\nYou are terse.{IM_END}\n"
        f"{IM_START}user\nBonjour 🌊 — ça va ?{IM_END}\n"
        f"{IM_START}assistant\n"
    )
    ids = gpt2_tok.encode(rendered)
    assert ids.count(SPECIAL_TOKENS.index(IM_START)) == 3
    assert gpt2_tok.decode(ids) == "system\nYou are terse.\nuser\nBonjour 🌊 — ça va ?\nassistant\n"
    assert gpt2_tok.decode(ids, skip_special_tokens=False) == rendered


def test_special_token_ids(gpt2_tok: Tokenizer, llama_tok: Tokenizer, tiny_model_dir: Path) -> None:
    end, im_end = SPECIAL_TOKENS.index(END_OF_TEXT), SPECIAL_TOKENS.index(IM_END)
    assert (gpt2_tok.token_to_id(END_OF_TEXT), gpt2_tok.token_to_id(IM_END)) == (end, im_end)
    assert gpt2_tok.eos_token_id == end
    assert gpt2_tok.eos_token_ids == {end, im_end}  # generation_config adds <|im_end|>
    assert gpt2_tok.bos_token_id == end
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert gpt2_tok.vocab_size == config["vocab_size"]
    assert gpt2_tok.decode_token(im_end) == IM_END
    assert {end, im_end} <= gpt2_tok.special_token_ids
    assert llama_tok.bos_token_id != llama_tok.eos_token_id


def test_bos_added_once_when_checkpoint_requires_it(
    gpt2_tok: Tokenizer, llama_tok: Tokenizer
) -> None:
    assert not gpt2_tok.add_bos_token
    assert gpt2_tok.encode("hi") == gpt2_tok.encode("hi", add_special_tokens=False)
    bos = llama_tok.bos_token_id
    assert llama_tok.add_bos_token
    assert llama_tok.encode("hi")[0] == bos
    assert llama_tok.encode("hi")[1:] == llama_tok.encode("hi", add_special_tokens=False)
    chat_ids = llama_tok.encode(llama_tok.apply_chat_template(CHAT))
    assert chat_ids[0] == bos and chat_ids.count(bos) == 1


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "messages must be a non-empty list"),
        ("hello", "messages must be a non-empty list"),
        ([{"role": "user"}], "messages[0].content must be a string"),
        ([{"role": "user", "content": 3}], "messages[0].content must be a string"),
        ([{"content": "x"}], "messages[0].role must be a string"),
        (["hi"], "messages[0] must be an object"),
        ([{"role": "user", "content": "a"}, {"role": "", "content": "b"}], "messages[1].role"),
        ([{"role": "wizard", "content": "x"}], "unknown role: wizard"),
    ],
)
def test_bad_chat_messages_raise_value_error(
    gpt2_tok: Tokenizer, messages: object, message: str
) -> None:
    with pytest.raises(ValueError) as info:
        gpt2_tok.apply_chat_template(messages)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_bos_detected_from_post_processor(tiny_llama_dir: Path) -> None:
    # No add_bos_token in the config: the TemplateProcessing post-processor says it.
    backend = tokenizers.Tokenizer.from_file(str(tiny_llama_dir / "tokenizer.json"))
    tok = Tokenizer(backend, special_tokens={"bos_token": "<|begin_of_text|>"})
    assert tok.add_bos_token
    assert tok.encode("hi")[0] == tok.bos_token_id
    assert not Tokenizer(backend).add_bos_token  # no BOS token known: nothing to add


def test_template_runs_sandboxed(tiny_model_dir: Path) -> None:
    backend = tokenizers.Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    escape = Tokenizer(backend, chat_template="{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(ValueError, match="messages"):
        escape.apply_chat_template([{"role": "user", "content": "x"}])
    mutate = Tokenizer(backend, chat_template="{{ messages.append(1) }}")
    with pytest.raises(ValueError):
        mutate.apply_chat_template([{"role": "user", "content": "x"}])
    with pytest.raises(ValueError, match="chat_template is not valid jinja"):
        Tokenizer(backend, chat_template="{% for %}")


def test_hf_template_features(tiny_model_dir: Path) -> None:
    backend = tokenizers.Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    template = (
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}"
        "{{ m | tojson }}{% endfor %}{{ eos_token }}"
    )
    tok = Tokenizer(backend, special_tokens={"eos_token": END_OF_TEXT}, chat_template=template)
    rendered = tok.apply_chat_template([{"role": "user", "content": "é<b>"}, CHAT[0]])
    assert rendered == '{"role": "user", "content": "é<b>"}' + END_OF_TEXT


def test_no_chat_template(tiny_model_dir: Path) -> None:
    backend = tokenizers.Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    with pytest.raises(ValueError, match="no chat template"):
        Tokenizer(backend).apply_chat_template(CHAT)


def test_template_file_and_named_templates(tiny_model_dir: Path, tmp_path: Path) -> None:
    for name in ("tokenizer.json", "generation_config.json"):
        shutil.copy(tiny_model_dir / name, tmp_path / name)
    config = {
        "eos_token": {"content": END_OF_TEXT, "special": True},
        "chat_template": [
            {"name": "tool_use", "template": "tools"},
            {"name": "default", "template": "{{ messages[0]['content'] }}!"},
        ],
    }
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tok = Tokenizer.from_dir(tmp_path)
    assert tok.eos_token == END_OF_TEXT
    assert tok.apply_chat_template([{"role": "user", "content": "hey"}]) == "hey!"
    (tmp_path / "chat_template.jinja").write_text("file:{{ messages | length }}")
    assert Tokenizer.from_dir(tmp_path).apply_chat_template(CHAT) == "file:4"


def test_missing_tokenizer_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no tokenizer\.json"):
        Tokenizer.from_dir(tmp_path)
