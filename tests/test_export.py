"""The HF export is a complete model directory: transformers loads model and
tokenizer from it alone, the tokenizer encodes exactly as ours, and transformers' greedy
generate equals our sampler's tokens and stops at our eos."""

import json
import os
import random
import stat
from pathlib import Path

import pytest

from qwenlong_jax import models, sampling
from qwenlong_jax.data.prompt import build_prompt
from qwenlong_jax.data.synthetic import make_dataset
from qwenlong_jax.data.tokenizer import load_tokenizer
from qwenlong_jax.run.export import export_hf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(REPO, "qwenlong_jax", "assets", "base")


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("export") / "hf")
    tok_path = os.path.join(BASE, "tokenizer")
    tok = load_tokenizer(tok_path)
    mcfg, params = models.load_hf_checkpoint(BASE)
    export_hf(out, mcfg, params, tok, tok_path)
    return out, tok, mcfg, params


def test_files_modes_and_token_ids(export):
    out, tok, _, _ = export
    for name in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ):
        mode = stat.S_IMODE(os.stat(os.path.join(out, name)).st_mode)
        assert mode == 0o644, (name, oct(mode))
    cfg = json.loads(Path(os.path.join(out, "config.json")).read_text())
    assert cfg["eos_token_id"] == tok.eos_ids[0] and cfg["pad_token_id"] == tok.pad_id
    assert cfg["bos_token_id"] is not None
    gen = json.loads(Path(os.path.join(out, "generation_config.json")).read_text())
    assert gen["eos_token_id"] == list(tok.eos_ids)


def test_autotokenizer_encodes_like_ours(export):
    import transformers

    out, tok, _, _ = export
    # transformers 5 maps model_type qwen2 to its byte-level Qwen2Tokenizer whatever
    # tokenizer_config.json says, so the embedded sentencepiece export is read with the class
    # that honours tokenizer.json (an HF-tokenizer run exports that tokenizer's own files).
    hf = transformers.PreTrainedTokenizerFast.from_pretrained(out, local_files_only=True)
    rng = random.Random(0)
    alphabet = "abc XYZ\n\t.,!?<>|éü漢🎉0123456789_-"
    texts = [
        "hello world",
        " leading",
        "trailing  ",
        "a\n b \n\n  c",
        "<|im_start|>user\nhi<|im_end|>\n",
        "x</think> Therefore, the answer is 42.",
    ]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(300)]
    rows = make_dataset(5, 4, 200, tok.count)
    texts += [build_prompt(r["document"], r["question"]) for r in rows]
    for t in texts:
        assert hf.encode(t, add_special_tokens=False) == tok.encode(t), repr(t)
        assert hf.encode(t) == tok.encode(t), repr(t)  # no bos/eos added by default either
    chat = hf.apply_chat_template([{"role": "user", "content": texts[-1]}], add_generation_prompt=True, tokenize=False)
    assert hf.encode(chat, add_special_tokens=False) == tok.chat_prompt(texts[-1])
    assert hf.eos_token_id == tok.eos_ids[0]


def test_transformers_greedy_generate_equals_our_sampler_and_stops_at_eos(export):
    import torch
    import transformers

    out, tok, mcfg, params = export
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    hf_tok = transformers.PreTrainedTokenizerFast.from_pretrained(out, local_files_only=True)
    rows = make_dataset(11, 3, 96, tok.count)
    prompts = [tok.chat_prompt(build_prompt(r["document"], r["question"])) for r in rows]
    ours = sampling.generate(mcfg.replace(dtype="float32"), params, prompts, max_new_tokens=48, eos_ids=tok.eos_ids)
    stopped = 0
    for p, [s] in zip(prompts, ours):
        with torch.no_grad():
            gen = model.generate(torch.tensor([p]), max_new_tokens=48, do_sample=False)  # generation_config
        theirs = gen[0, len(p) :].tolist()
        if s.finish_reason == "eos":
            stopped += 1
            assert theirs[-1] in tok.eos_ids
        assert theirs == s.tokens, (hf_tok.decode(theirs), tok.decode(s.tokens))
    assert stopped >= 1  # the base model ends its answers with <|im_end|>: generate must stop there


def test_hf_tokenizer_run_exports_its_own_files_and_autotokenizer_loads_them(tmp_path):
    """A run on an HF tokenizer (as from a real Qwen checkpoint) exports that tokenizer's files,
    chat template included; AutoTokenizer on the export encodes exactly as our loader does."""
    import jax
    import transformers
    from tokenizers import Regex, Tokenizer, decoders, models as tk_models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    from qwenlong_jax.models import get_model_config, init_params

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    tk = Tokenizer(tk_models.BPE())  # Qwen2's pipeline: NFC, its split regex, byte-level
    tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tk.decoder = decoders.ByteLevel()
    rows = make_dataset(7, 6, 80, lambda s: len(s.split()))
    tk.train_from_iterator(
        [build_prompt(r["document"], r["question"]) + r["response"] for r in rows] * 2,
        trainers.BpeTrainer(
            vocab_size=400, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    src = tmp_path / "tok"
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    fast.save_pretrained(str(src))
    tok = load_tokenizer(str(src))
    assert tok.kind == "hf"
    mcfg = get_model_config("tiny", vocab_size=len(fast))
    params = init_params(mcfg, jax.random.key(0))
    out = str(tmp_path / "hf")
    export_hf(out, mcfg, params, tok, str(src))
    hf = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert hf.chat_template == fast.chat_template
    for r in rows:
        text = build_prompt(r["document"], r["question"])
        assert hf.encode(text, add_special_tokens=False) == tok.encode(text)
        chat = hf.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
        assert hf.encode(chat, add_special_tokens=False) == tok.chat_prompt(text)
    cfg = json.loads(Path(os.path.join(out, "config.json")).read_text())
    assert cfg["eos_token_id"] == tok.eos_ids[0] == hf.eos_token_id and cfg["pad_token_id"] == tok.pad_id
    transformers.AutoModelForCausalLM.from_pretrained(out)


def test_tokenizer_conversion_works_where_generate_merges_needs_its_scores(monkeypatch):
    """transformers before 5.24 (5.17 in a GPU image) has `generate_merges(vocab, vocab_scores)`
    with no default; the conversion passes it, and gives the same tokenizer either way."""
    import importlib

    from qwenlong_jax.run.export import spm_to_tokenizers

    # The module (`transformers.convert_slow_tokenizer` is also a function of transformers).
    cst = importlib.import_module("transformers.convert_slow_tokenizer")

    spm = os.path.join(BASE, "tokenizer", "spm.model")
    current = spm_to_tokenizers(spm).to_str()
    original = cst.generate_merges

    def generate_merges_5_17(vocab, vocab_scores, skip_tokens=None):
        return original(vocab, vocab_scores, skip_tokens)

    monkeypatch.setattr(cst, "generate_merges", generate_merges_5_17)
    assert spm_to_tokenizers(spm).to_str() == current
