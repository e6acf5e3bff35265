"""Greedy sampling equals transformers' generate token for token; every step's logits equal
models.forward on the same prefix. The batch mixes prompt lengths and is prefilled in 3 chunks,
so per-step logits == forward also checks the chunked prefill's KV cache entry by entry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwenlong_jax import models, sampling
from tests.hf_fixtures import make_hf_model

LENGTHS = [37, 20, 5]  # three prompt lengths in one right-padded batch (S = 48, chunks of 16)
NEW = 64


def make_model(path, kind, seed=1, vocab=96):
    """A tiny random HF model whose greedy output is not a constant token: make_hf_model's
    random norms collapse the output, so norms are reset to 1 and matrices to N(0, 0.2)."""
    import torch

    model = make_hf_model(str(path), kind, tie=(kind == "qwen3"), yarn=(kind == "qwen3"), vocab=vocab)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.2)
    model.save_pretrained(str(path), safe_serialization=True)
    return model


def hf_greedy(model, prompt, new):
    import torch

    ids = torch.tensor([prompt])
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=new,
        min_new_tokens=new,
        eos_token_id=None,
        pad_token_id=0,
        output_logits=True,
        return_dict_in_generate=True,
    )
    logits = torch.stack(out.logits, 1)[0].numpy()
    return out.sequences[0, len(prompt) :].tolist(), logits


@pytest.mark.parametrize("kind", ["qwen2", "qwen3"])
def test_greedy_matches_transformers_and_forward(tmp_path, kind):
    hf = make_model(tmp_path, kind)
    cfg, params = models.load_hf_checkpoint(str(tmp_path))
    rng = np.random.default_rng(0)
    prompts = [rng.integers(1, cfg.vocab_size, size=n).tolist() for n in LENGTHS]
    tokens_BS, lens_B = sampling.pad_prompts(prompts, 48)
    out = sampling.sample_groups(
        cfg,
        params,
        tokens_BS,
        lens_B,
        sampling.sample_keys(0, np.arange(3), 1),
        max_new_tokens=NEW,
        prefill_chunk=16,
        return_logits=True,
    )
    out = jax.device_get(out)
    assert out.tokens_BGR.shape == (3, 1, NEW) and out.logits_BGRV.shape == (3, 1, NEW, cfg.vocab_size)
    np.testing.assert_array_equal(out.lengths_BG, NEW)
    assert (out.finish_BG == 0).all()  # "length"

    full = [p + out.tokens_BGR[b, 0].tolist() for b, p in enumerate(prompts)]
    full_BT, full_lens = sampling.pad_prompts(full, max(map(len, full)))
    seg = (np.arange(full_BT.shape[1])[None] < full_lens[:, None]).astype(np.int32)
    ref_BTV = np.asarray(models.forward(cfg, params, jnp.asarray(full_BT), segment_ids_BT=jnp.asarray(seg)))
    for b, prompt in enumerate(prompts):
        hf_tokens, hf_logits = hf_greedy(hf, prompt, NEW)
        # No near-ties: a 1e-5 numeric difference could not flip an argmax (so the check is exact).
        top2 = np.sort(hf_logits, axis=-1)[:, -2:]
        assert (top2[:, 1] - top2[:, 0]).min() > 1e-3
        assert len(set(hf_tokens)) > 5  # not a degenerate constant output
        assert out.tokens_BGR[b, 0].tolist() == hf_tokens, f"prompt {b} differs from transformers"
        n = len(prompt)
        # Step t's logits predict token t from prompt + tokens[:t] = forward's position n-1+t.
        np.testing.assert_allclose(out.logits_BGRV[b, 0], ref_BTV[b, n - 1 : n - 1 + NEW], atol=1e-4, rtol=0)
        np.testing.assert_allclose(out.logits_BGRV[b, 0], hf_logits, atol=1e-4, rtol=0)
        # Greedy logprobs are log_softmax(logits) of the chosen token.
        lp = jax.nn.log_softmax(ref_BTV[b, n - 1 : n - 1 + NEW], axis=-1)
        np.testing.assert_allclose(
            out.logprobs_BGR[b, 0],
            np.take_along_axis(np.asarray(lp), out.tokens_BGR[b, 0][:, None], 1)[:, 0],
            atol=1e-4,
            rtol=0,
        )


def test_bad_prefill_chunk_is_refused():
    cfg = models.get_model_config("tiny", vocab_size=64, num_layers=1)
    params = models.param_shapes(cfg)  # the check fires before any array is touched
    tokens, lens = sampling.pad_prompts([[1, 2, 3]], 48)
    with pytest.raises(ValueError, match="S=48 must be a multiple of prefill_chunk=32"):
        sampling.prefill(cfg, params, tokens, lens, chunk=32)
    with pytest.raises(ValueError, match="prompt 0 has 3 tokens; need 1..2"):
        sampling.pad_prompts([[1, 2, 3]], 2)


def test_generate_cli_prints_transformers_greedy_text(tmp_path, capsys):
    """python -m qwenlong_jax.generate on a saved HF dir with the embedded tokenizer: the text it
    prints is the decoded greedy continuation transformers produces (EOS ids from the tokenizer)."""
    import torch

    from qwenlong_jax.cli import generate as cli
    from qwenlong_jax.data.tokenizer import load_tokenizer

    tok = load_tokenizer(None)
    hf = make_model(tmp_path, "qwen2", vocab=tok.vocab_size)
    cli.main(
        [
            "--checkpoint",
            str(tmp_path),
            "--prompt",
            "What is 2+3?",
            "--chat",
            "--max_new_tokens",
            "12",
            "--prefill_chunk",
            "16",
        ]
    )
    printed = capsys.readouterr().out
    ids = torch.tensor([tok.chat_prompt("What is 2+3?")])
    out = hf.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=12,
        eos_token_id=list(tok.eos_ids),
        pad_token_id=tok.pad_id,
    )
    new = out[0, ids.shape[1] :].tolist()  # batch 1: ends at the first EOS, no padding
    reason = "eos" if new[-1] in tok.eos_ids else "length"
    assert f"--- sample 0 ({len(new)} tokens, {reason})\n{tok.decode(new)}\n" in printed
    assert "tokens/s" in printed
