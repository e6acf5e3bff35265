"""The held-out lookup probe of pretraining: does the model read the value out of the document?"""

from __future__ import annotations

import random

import jax
import jax.numpy as jnp
import numpy as np

from qwenlong_jax import models
from qwenlong_jax.data import synthetic
from qwenlong_jax.data.prompt import build_prompt


def lookup_probe_batch(tok, doc_tokens: int, num: int, attributes: int, seed: int = 12345) -> dict:
    """Teacher-forced lookup probe: `num` chat-formatted lookup examples of about `doc_tokens`
    tokens (held out: their own seed), and for each the positions whose next tokens spell the
    value restated inside <think> -- the tokens that need reading the document."""
    rows, where, want = [], [], []
    for i in range(num):
        rng = random.Random(f"probe:{seed}:{doc_tokens}:{i}")
        doc = synthetic.make_document(rng, doc_tokens, tok.count, attributes=attributes)
        q = synthetic.ask(rng, doc, "lookup")
        prompt, response = tok.chat_prompt(build_prompt(doc.text, q.question)), tok.encode(q.response)
        value = tok.encode(f" {q.answer}")
        k = next(j for j in range(len(response)) if response[j : j + len(value)] == value)
        rows.append(prompt + response)
        where.append([len(prompt) + k - 1 + t for t in range(len(value))])
        want.append(value)
    T, L = max(map(len, rows)), max(map(len, want))
    tokens = np.zeros((num, T), np.int32)
    seg = np.zeros((num, T), np.int32)
    where_BL = np.zeros((num, L), np.int32)
    want_BL = np.full((num, L), -1, np.int32)  # -1: no token (values of different lengths)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = r
        seg[i, : len(r)] = 1
        where_BL[i, : len(where[i])] = where[i]
        want_BL[i, : len(want[i])] = want[i]
    return {"tokens_BT": tokens, "segment_ids_BT": seg, "where_BL": where_BL, "want_BL": want_BL}


def lookup_accuracy(cfg, params, probe: dict) -> jax.Array:
    """Share of probe examples whose restated value is the model's top prediction at every one
    of its tokens (a scalar)."""
    logits_BTV = models.forward(cfg, params, probe["tokens_BT"], segment_ids_BT=probe["segment_ids_BT"])
    B = probe["where_BL"].shape[0]
    pred_BL = jnp.argmax(logits_BTV[jnp.arange(B)[:, None], probe["where_BL"]], axis=-1)
    ok_BL = (pred_BL == probe["want_BL"]) | (probe["want_BL"] < 0)
    return jnp.mean(jnp.all(ok_BL, axis=1))
