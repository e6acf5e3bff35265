"""Tokenizer interface: HF directory backend (tiny tokenizer built offline here) and the
embedded sentencepiece model."""

import json
import os
import pathlib

import pytest

from qwenlong_jax.data import synthetic
from qwenlong_jax.data.tokenizer import DEFAULT_TOKENIZER, load_tokenizer
from qwenlong_jax.data.train_tokenizer import train_sentencepiece

SAMPLES = [
    "the code of KIRA is 472 .",
    "Please read the following text and answer the question below.\n\n<text>\nx\n</text>",
    "<think> two  spaces,\ttabs and\nnewlines </think> Therefore, the answer is 12.5%.",
    "Unicode: café, naïve, 日本語, emoji ✓",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)


def _build_hf(path, with_think=True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + (["<think>", "</think>"] if with_think else [])
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(
        SAMPLES * 3,
        trainers.BpeTrainer(
            vocab_size=300, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    ids = {s: tk.token_to_id(s) for s in special}
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]]}, f)
    return ids


def test_hf_backend(tmp_path):
    from transformers import AutoTokenizer

    ids = _build_hf(str(tmp_path))
    tok = load_tokenizer(str(tmp_path))
    ref = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    assert tok.kind == "hf"
    for s in SAMPLES:
        assert tok.decode(tok.encode(s)) == s
        assert tok.encode(s) == ref.encode(s, add_special_tokens=False)
    msgs = [{"role": "user", "content": SAMPLES[1]}]
    want = ref.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert tok.chat_prompt(SAMPLES[1]) == list(want)
    assert tok.decode(tok.chat_prompt("hi")) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n"
    assert tok.eos_ids == (ids["<|im_end|>"], ids["<|endoftext|>"])  # tokenizer eos + generation_config
    assert tok.eos_text == "<|im_end|>" and tok.pad_id == ids["<|endoftext|>"]
    assert tok.think_end_id == ids["</think>"] and tok.encode("</think>") == [ids["</think>"]]
    assert tok.vocab_size == len(ref)


def test_hf_backend_without_think_token(tmp_path):
    _build_hf(str(tmp_path), with_think=False)
    tok = load_tokenizer(str(tmp_path))
    assert tok.think_end_id is None and len(tok.encode("</think>")) > 1


def test_hf_backend_without_chat_template_is_refused(tmp_path):
    _build_hf(str(tmp_path))
    cfg_path = tmp_path / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template", None)
    cfg_path.write_text(json.dumps(cfg))
    (tmp_path / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(ValueError, match="no chat_template"):
        load_tokenizer(str(tmp_path))


def test_embedded_sentencepiece():
    tok = load_tokenizer()
    assert tok.kind == "sentencepiece" and tok.vocab_size == 1536
    for s in SAMPLES:
        assert tok.decode(tok.encode(s)) == s  # byte fallback + identity normalisation
    sp = tok.backend
    for piece in ("<|im_start|>", "<|im_end|>", "<think>", "</think>", "\n"):
        assert len(tok.encode(piece)) == 1, piece
    prompt = tok.chat_prompt("hello")
    assert tok.decode(prompt) == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    assert prompt[0] == sp.piece_to_id("<|im_start|>")
    assert tok.eos_ids == (sp.piece_to_id("<|im_end|>"), sp.piece_to_id("<|endoftext|>"))
    assert tok.eos_text == "<|im_end|>" and tok.pad_id == sp.piece_to_id("<|pad|>") == 0
    assert tok.think_end_id == sp.piece_to_id("</think>")


def test_embedded_vocabulary_suits_the_synthetic_task():
    """Names and values are one piece each, the same piece in the fact and in the answer, which
    makes lookup a one-token match and a one-token copy; other numbers are split into digits."""
    tok = load_tokenizer()
    for name in synthetic.NAMES + synthetic.ATTRIBUTES + synthetic.RELATIONS:
        assert len(tok.encode(" " + name)) == 1, name
    sp = tok.backend
    pieces = [sp.id_to_piece(i) for i in tok.encode("the code of SEPA is 472 .")]
    assert pieces == ["the", "▁code", "▁of", "▁SEPA", "▁is", "▁472", "▁."]
    assert tok.encode("answer is 472.")[-2] == tok.encode("is 472 .")[-2]
    for v in range(100, 1000):
        assert len(tok.encode(f" {v}")) == 1, v
    assert [sp.id_to_piece(i) for i in tok.encode(" 1207 12.5")] == ["▁120", "7", "▁", "1", "2", ".", "5"]


def test_training_reproduces_the_shipped_model(tmp_path):
    path = train_sentencepiece(str(tmp_path))
    assert pathlib.Path(path).read_bytes() == pathlib.Path(DEFAULT_TOKENIZER).read_bytes()


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_tokenizer(str(tmp_path / "missing.model"))
    with pytest.raises(ValueError, match="no tokenizer.json"):
        load_tokenizer(str(tmp_path))
