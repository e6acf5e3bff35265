"""One tokenizer interface over two backends: an HF tokenizer directory and a sentencepiece model.

    tok = load_tokenizer(path)      # HF dir (tokenizer.json + tokenizer_config.json) or *.model
    ids = tok.chat_prompt(build_prompt(doc, question))   # single user turn + generation prompt

HF backend: transformers `AutoTokenizer` (offline); the chat prompt is the tokenizer's own chat
template rendered to text and then encoded without adding special tokens, as verl does.
Sentencepiece backend (the embedded default under qwenlong_jax/assets/tokenizer/): a small
built-in Qwen-like chat format,

    <|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n

with `<|im_start|>`, `<|im_end|>`, `<think>`, `</think>` and "\n" as single user-defined pieces,
identity normalisation and byte fallback, so decode(encode(s)) == s for any string.

The embedded model is made by train_tokenizer.py (a few seconds, bit-exact):
    python -m qwenlong_jax.data.train_tokenizer --out qwenlong_jax/assets/tokenizer
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

ASSET_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "tokenizer")
DEFAULT_TOKENIZER = os.path.join(ASSET_DIR, "spm.model")

IM_START, IM_END, ENDOFTEXT, PAD = "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|pad|>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SPM_SYMBOLS = (IM_START, IM_END, THINK_OPEN, THINK_CLOSE, "\n")


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    """What the rest of the library needs from a tokenizer. Build with `load_tokenizer`.

    eos_ids: ids that end a response (sampler stop ids); eos_text: the text the reward manager
    strips from the end of a decoded response; think_end_id: the `</think>` id when the
    vocabulary has it as one token, else None.
    """

    backend: Any = dataclasses.field(repr=False)
    kind: str
    eos_ids: tuple[int, ...]
    eos_text: str
    pad_id: int
    think_end_id: int | None
    vocab_size: int

    def encode(self, text: str) -> list[int]:
        if self.kind == "sentencepiece":
            return list(self.backend.encode(text))
        return list(self.backend.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        ids = [int(i) for i in ids]
        if self.kind == "sentencepiece":
            return self.backend.decode(ids)
        return self.backend.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def chat_prompt(self, user_text: str) -> list[int]:
        """Token ids of one user turn (no system prompt) followed by the generation prompt."""
        if self.kind == "sentencepiece":
            return self.encode(f"{IM_START}user\n{user_text}{IM_END}\n{IM_START}assistant\n")
        text = self.backend.apply_chat_template(
            [{"role": "user", "content": user_text}], add_generation_prompt=True, tokenize=False
        )
        return self.encode(text)

    def count(self, text: str) -> int:
        """Number of tokens of `text` (plain encode, no chat wrapping)."""
        return len(self.encode(text))


def _single_id(encode, text: str) -> int | None:
    ids = encode(text)
    return ids[0] if len(ids) == 1 else None


def load_sentencepiece(path: str) -> Tokenizer:
    import sentencepiece as spm

    try:
        sp = spm.SentencePieceProcessor(model_file=path)
    except (RuntimeError, OSError) as e:  # not a sentencepiece model: one line naming the file
        raise ValueError(f"{path}: not a sentencepiece model ({str(e).splitlines()[0][:160]})") from None
    missing = [s for s in SPM_SYMBOLS if _single_id(sp.encode, s) is None]
    if missing:
        raise ValueError(
            f"{path}: sentencepiece model lacks the single pieces {missing!r} "
            "the built-in chat format needs; retrain with qwenlong_jax.data.train_tokenizer"
        )
    im_end = sp.piece_to_id(IM_END)
    eos = (im_end,) + ((sp.eos_id(),) if sp.eos_id() >= 0 else ())
    pad = sp.pad_id() if sp.pad_id() >= 0 else im_end
    return Tokenizer(sp, "sentencepiece", eos, IM_END, pad, sp.piece_to_id(THINK_CLOSE), sp.get_piece_size())


def load_hf(path: str) -> Tokenizer:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if not tok.chat_template:
        raise ValueError(f"{path}: tokenizer_config.json has no chat_template")
    if tok.eos_token_id is None:
        raise ValueError(f"{path}: tokenizer has no eos_token")
    eos = [tok.eos_token_id]
    gen_cfg = os.path.join(path, "generation_config.json")
    if os.path.exists(gen_cfg):  # chat models stop on more than the tokenizer's eos
        with open(gen_cfg) as f:
            extra = json.load(f).get("eos_token_id", [])
        eos += [e for e in ([extra] if isinstance(extra, int) else extra) if e not in eos]
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return Tokenizer(tok, "hf", tuple(eos), tok.eos_token, pad, _single_id(enc, THINK_CLOSE), len(tok))


TOKENIZER_FILES = ("spm.model", "tokenizer.json", "tokenizer_config.json")


def find_tokenizer(explicit: str | None, *model_dirs: str) -> str | None:
    """The one tokenizer resolver (train, plan, compile, evaluate, generate): `explicit` when
    given; else the first model directory's `tokenizer/` folder, then its root, that holds a
    tokenizer file (our checkpoints and exports keep ours in `tokenizer/`, an HF model keeps
    its own at the root); None means the embedded default."""
    from qwenlong_jax import paths

    if explicit:
        return explicit
    for base in model_dirs:
        if base:
            for cand in (paths.join(base, "tokenizer"), base):
                if any(paths.exists(paths.join(cand, f)) for f in TOKENIZER_FILES):
                    return cand
    return None


def load_tokenizer(path: str | None = None) -> Tokenizer:
    """An HF tokenizer directory, a sentencepiece `.model` file (or a directory holding
    `spm.model`), or the embedded default when `path` is None."""
    from qwenlong_jax import paths

    path = path or DEFAULT_TOKENIZER
    if paths.is_remote(path):
        if not paths.exists(path):
            raise ValueError(f"tokenizer path {path!r} does not exist")
        path = paths.local_copy(path)  # object store: a local copy (sentencepiece reads files)
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "tokenizer_config.json")) or os.path.exists(
            os.path.join(path, "tokenizer.json")
        ):
            return load_hf(path)
        if os.path.exists(os.path.join(path, "spm.model")):
            return load_sentencepiece(os.path.join(path, "spm.model"))
        raise ValueError(f"{path}: no tokenizer.json/tokenizer_config.json or spm.model in it")
    if not os.path.exists(path):
        raise ValueError(f"tokenizer path {path!r} does not exist")
    return load_sentencepiece(path)


def copy_tokenizer(src: str, dst_dir: str) -> None:
    """Copy a tokenizer (a directory, or a sentencepiece .model file) into `dst_dir`, so a
    checkpoint directory carries the tokenizer it was trained with."""
    import shutil

    if os.path.isdir(src):
        shutil.copytree(src, dst_dir, dirs_exist_ok=True)
    else:
        os.makedirs(dst_dir, exist_ok=True)
        shutil.copy(src, dst_dir)
