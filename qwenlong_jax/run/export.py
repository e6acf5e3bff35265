"""The HF export: a model directory that transformers (and servers built on it) load alone.

    export_hf(out_dir, mcfg, params, tok, tok_path)

Writes config.json (with bos/eos/pad token ids), the safetensors weights (mode 0644),
generation_config.json (eos = every id our sampler stops on), and the tokenizer at the root:
an HF tokenizer's own files (chat template included), or, for a sentencepiece model, a
tokenizer.json built with the `tokenizers` library that encodes exactly as sentencepiece does,
a tokenizer_config.json with the chat template of our built-in format, and the .model itself
under tokenizer/ (what qwenlong_jax's own loaders read). `out_dir` may be an object-store
path (qwenlong_jax/paths/): the directory is written locally, then uploaded.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from qwenlong_jax import paths
from qwenlong_jax.data import tokenizer as tok_lib

# Our built-in chat format (data/tokenizer.py) as a jinja chat template.
SPM_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)
_HF_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
)


def spm_to_tokenizers(spm_path: str):
    """A `tokenizers.Tokenizer` equal to the sentencepiece BPE model at `spm_path` (identity
    normalisation, no dummy prefix, whitespace split, byte fallback, user-defined pieces)."""
    from sentencepiece import sentencepiece_model_pb2 as pb
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from transformers.convert_slow_tokenizer import generate_merges

    m = pb.ModelProto()  # type: ignore[attr-defined]  # protobuf-generated module, no stubs
    with open(spm_path, "rb") as f:
        m.ParseFromString(f.read())
    ts, ns = m.trainer_spec, m.normalizer_spec
    bpe = pb.TrainerSpec.BPE  # type: ignore[attr-defined]  # protobuf-generated module, no stubs
    if ts.model_type != bpe or ns.add_dummy_prefix or ns.name != "identity":
        raise ValueError(
            f"{spm_path}: only BPE models with identity normalisation and no dummy prefix "
            "convert exactly (the embedded tokenizer's settings)"
        )
    vocab = {p.piece: i for i, p in enumerate(m.pieces)}
    tok = Tokenizer(
        BPE(
            vocab,
            # vocab_scores=None: merges ordered by piece id. Passed explicitly: it has no default
            # before transformers 5.24 (with 5.17 the export raised TypeError).
            generate_merges(vocab, None),
            unk_token=m.pieces[ts.unk_id].piece,
            fuse_unk=True,
            byte_fallback=ts.byte_fallback,
        )
    )
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=ts.split_by_whitespace)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    # sentencepiece matches user-defined pieces (type 4) in the normalised text, like an added
    # token with normalized=True; control pieces (type 3) are special.
    tok.add_tokens([AddedToken(p.piece, normalized=True, special=False) for p in m.pieces if p.type == 4])
    tok.add_special_tokens([AddedToken(p.piece, normalized=False, special=True) for p in m.pieces if p.type == 3])
    return tok


def _token_ids(tok) -> dict:
    """bos/eos/pad ids for config.json: the tokenizer's bos (else <|endoftext|>, the Qwen
    convention), the first stop id as eos, the pad id."""
    bos = None
    if tok.kind == "hf":
        bos = tok.backend.bos_token_id
    if bos is None and tok.kind == "sentencepiece":
        i = tok.backend.piece_to_id(tok_lib.ENDOFTEXT)
        bos = i if i != tok.backend.unk_id() else None
    elif bos is None:
        ids = tok.encode(tok_lib.ENDOFTEXT)
        bos = ids[0] if len(ids) == 1 else None
    return {"bos_token_id": bos, "eos_token_id": tok.eos_ids[0], "pad_token_id": tok.pad_id}


def write_tokenizer(tok, tok_path: str, out_dir: str) -> None:
    """The tokenizer files at the export's root (see the module doc)."""
    if tok.kind == "hf":
        src = paths.local_copy(tok_path)
        for name in _HF_TOKENIZER_FILES:
            if os.path.exists(os.path.join(src, name)):
                shutil.copy(os.path.join(src, name), os.path.join(out_dir, name))
        return
    spm_path = paths.local_copy(tok_path)
    if os.path.isdir(spm_path):
        spm_path = os.path.join(spm_path, "spm.model")
    os.makedirs(os.path.join(out_dir, "tokenizer"), exist_ok=True)
    shutil.copy(spm_path, os.path.join(out_dir, "tokenizer", "spm.model"))
    spm_to_tokenizers(spm_path).save(os.path.join(out_dir, "tokenizer.json"))
    sp = tok.backend
    ids = _token_ids(tok)
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": SPM_CHAT_TEMPLATE,
        "eos_token": tok_lib.IM_END,
        "pad_token": sp.id_to_piece(tok.pad_id),
        "bos_token": sp.id_to_piece(ids["bos_token_id"]) if ids["bos_token_id"] is not None else None,
        "unk_token": sp.id_to_piece(sp.unk_id()),
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1 << 20,
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)


def export_hf(out_dir: str, mcfg, params, tok, tok_path: str) -> None:
    """The complete HF directory (module doc). Only process 0 writes; every process must call
    it (the weights are gathered from all of them)."""
    import jax

    from qwenlong_jax import models

    local = tempfile.mkdtemp(prefix="qwenlong_export_") if paths.is_remote(out_dir) else out_dir
    try:
        models.save_hf_checkpoint(local, mcfg, params)
        if jax.process_index() != 0:
            return
        ids = _token_ids(tok)
        cfg_path = os.path.join(local, "config.json")
        with open(cfg_path) as f:
            config = json.load(f)
        config.update(ids)
        with open(cfg_path, "w") as f:
            json.dump(config, f, indent=2)
        gen = {
            "bos_token_id": ids["bos_token_id"],
            "eos_token_id": list(tok.eos_ids),
            "pad_token_id": tok.pad_id,
            "do_sample": False,
        }
        with open(os.path.join(local, "generation_config.json"), "w") as f:
            json.dump(gen, f, indent=2)
        write_tokenizer(tok, tok_path, local)
        for root, _, files in os.walk(local):
            for name in files:
                os.chmod(os.path.join(root, name), 0o644)
        if local != out_dir:
            paths.upload(local, out_dir)
    finally:
        if local != out_dir:
            shutil.rmtree(local, ignore_errors=True)
