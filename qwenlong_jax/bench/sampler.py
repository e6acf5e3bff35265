"""Sampler benchmark: one long prompt, G samples, ours vs transformers on the same weights.

    python -m qwenlong_jax.bench sampler                      # 4096-token prompt, G=8, 128 tokens
    python -m qwenlong_jax.bench sampler --prompt_len 512 --new_tokens 16   # quick check

A tiny random Qwen2 (d_model 256, 4 layers, vocab 8192) is built by transformers, saved, and
loaded into ours, so both run the same weights on the same CPU in the same process. Both sample
with plain temperature 1 (HF's default top_k=50 is switched off) and generate exactly
`new_tokens` tokens (no EOS; HF gets min_new_tokens).

  ours  sample_groups: chunked prefill of the prompt ONCE, then G samples decode against that
        one prompt KV cache (jitted while_loop). Timed warm (compile reported separately).
  HF    model.generate(num_return_sequences=G, do_sample=True): expands the prompt to G rows
        before prefill, so it prefills and caches the prompt G times.

The baseline runs in its fastest ordinary configuration, as a user would call it:
  * no attention_mask: the prompt is not padded, so a user passes input_ids alone (generate then
    builds the all-ones mask itself; passing one explicitly measured the same);
  * attn_implementation="sdpa" set explicitly (torch's fused attention; "eager" was slower in a
    1K-token probe, and flash-attention kernels do not exist on CPU);
  * torch threads = the cores this process may run on (`--threads`, default os.sched_getaffinity);
  * float32 weights like ours; the default DynamicCache (a static cache or torch.compile is not
    what generate does unless asked, and it would have to compile for every new shape).

Timing: ours is compiled once; then `--rounds` rounds each time ours and HF back to back on the
same prompt, and the speed ratio is taken per round (HF / ours), so both sides of a ratio see
the same machine load. The table reports medians (and the ratios' range): on a shared CPU the
ratio is the figure to trust, the seconds move with the load. CPU seconds (process user+sys
over all threads, per call) are reported beside wall seconds: less sensitive to other
processes, but they count a thread pool's spin-waiting as work.

Prompt-KV memory: ours is the nbytes of the prefill's [L, 1, S, K, H] k and v arrays; HF's is
read from the DynamicCache that generate returns (each layer's key/value tensor is
[G, K, prompt+new-1, H]; the prompt positions are counted). Decode-only tokens/s: our decode
loop alone (prefill excluded) at batch G=1 and G=8.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from qwenlong_jax import models, sampling
from qwenlong_jax.sampling import decode


def build_models(args, path: str):
    import torch
    import transformers

    torch.manual_seed(0)
    hf_cfg = transformers.Qwen2Config(
        vocab_size=args.vocab,
        hidden_size=args.d_model,
        intermediate_size=4 * args.d_model,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=2 * (args.prompt_len + args.new_tokens),
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1e4},
    )
    hf_cfg._attn_implementation = "sdpa"  # explicit: torch's fused attention
    hf = transformers.Qwen2ForCausalLM(hf_cfg).float().eval()
    assert hf.config._attn_implementation == "sdpa"
    hf.save_pretrained(path, safe_serialization=True)
    cfg, params = models.load_hf_checkpoint(path)
    return hf, cfg, params


def _timed(fn, *a):
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*a))
    return out, time.perf_counter() - t


def compile_ours(args, cfg, params, prompt, G: int):
    """Our sampler compiled for one prompt and G samples: (compile seconds, a timed call)."""
    S = sampling.bucket_length(len(prompt), args.prefill_chunk)
    tokens, lens = sampling.pad_prompts([prompt], S)
    keys = sampling.sample_keys(0, [0], G)
    static = dict(max_new_tokens=args.new_tokens, strategy=sampling.Temperature(1.0), prefill_chunk=args.prefill_chunk)
    t = time.perf_counter()
    full = sampling.sample_groups.lower(cfg, params, tokens, lens, keys, **static).compile()
    compile_s = time.perf_counter() - t

    def call() -> tuple[float, float]:
        c = time.process_time()
        out, s = _timed(full, params, tokens, lens, keys)
        assert int(out.steps) == args.new_tokens and (out.lengths_BG == args.new_tokens).all()
        return s, time.process_time() - c

    return compile_s, call


def run_ours_parts(args, cfg, params, prompt):
    """Prefill alone and decode alone (batch 1 and G), and the prompt KV cache's size."""
    S = sampling.bucket_length(len(prompt), args.prefill_chunk)
    tokens, lens = sampling.pad_prompts([prompt], S)
    strategy = sampling.Temperature(1.0)
    res = {}
    for G in sorted({1, args.num_samples}):
        keys = sampling.sample_keys(0, [0], G)

        # The same two phases jitted apart, to time decode alone.
        prefill = jax.jit(lambda p, t, n: sampling.prefill(cfg, p, t, n, chunk=args.prefill_chunk))
        cache, _ = _timed(prefill, params, tokens, lens)
        cache, prefill_s = _timed(prefill, params, tokens, lens)

        @jax.jit
        def decode_only(p, cache, keys, G=G):  # G bound per loop iteration
            st = sampling.init_state(cfg, 1, G, args.new_tokens, return_logits=False)
            logits = jnp.broadcast_to(cache.last_logits_BV[:, None], (1, G, cfg.vocab_size))
            st = decode.advance(strategy, st, logits, keys, (), ())
            return decode.decode_loop(
                cfg, p, cache, st, keys, strategy=strategy, eos_ids=(), stop_sequences=(), decode_impl="xla"
            ).tokens_BGR

        _timed(decode_only, params, cache, keys)
        decode_s = min(_timed(decode_only, params, cache, keys)[1] for _ in range(args.repeats))
        res[G] = dict(
            prefill_s=prefill_s,
            decode_s=decode_s,
            decode_tps=G * args.new_tokens / decode_s,
            kv_bytes=int(cache.k_LBSKH.nbytes + cache.v_LBSKH.nbytes),
            kv_shape=tuple(cache.k_LBSKH.shape),
        )
    return res


def hf_generate(args, hf, prompt):
    """transformers generate in its fastest ordinary configuration (module docstring), warmed
    up: a timed call returning (seconds, CPU seconds, prompt-KV bytes, one layer's key shape)."""
    import torch

    torch.set_num_threads(args.threads)
    ids = torch.tensor([prompt])  # unpadded: no attention_mask, as a user calls it
    kw = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, pad_token_id=0, return_dict_in_generate=True)
    with torch.no_grad():
        hf.generate(input_ids=ids[:, :16], max_new_tokens=2, **kw)  # lazy init outside the timing

    def call():
        with torch.no_grad():
            t, c = time.perf_counter(), time.process_time()
            out = hf.generate(
                input_ids=ids,
                num_return_sequences=args.num_samples,
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                **kw,
            )
            e2e_s, cpu_s = time.perf_counter() - t, time.process_time() - c
        assert out.sequences.shape == (args.num_samples, len(prompt) + args.new_tokens)
        cache = getattr(out, "cache", None) or out.past_key_values
        kv_bytes, shape = 0, None
        for layer in cache.layers:
            for x in (layer.keys, layer.values):
                n, k, _, h = x.shape
                kv_bytes += n * k * len(prompt) * h * x.element_size()
                shape = tuple(x.shape)
        return e2e_s, cpu_s, kv_bytes, shape

    return call


def run(args, argv: Sequence[str]) -> dict:
    """The benchmark for the flag values `args` (qwenlong_jax/cli/bench.py); `argv` is printed
    as the command."""
    prompt = np.random.default_rng(0).integers(1, args.vocab, size=args.prompt_len).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        hf, cfg, params = build_models(args, os.path.join(tmp, "model"))
    G = args.num_samples
    compile_s, ours_call = compile_ours(args, cfg, params, prompt, G)
    hf_call = hf_generate(args, hf, prompt)
    ours_s, hf_s, ours_cpu, hf_cpu = [], [], [], []
    for r in range(args.rounds):  # interleaved: each ratio's two sides see the same load
        t, c = ours_call()
        ours_s.append(t)
        ours_cpu.append(c)
        t, c, hf_kv, hf_shape = hf_call()
        hf_s.append(t)
        hf_cpu.append(c)
        print(
            f"[round {r + 1}/{args.rounds}] ours {ours_s[-1]:.2f} s ({ours_cpu[-1]:.1f} CPU s), "
            f"transformers {t:.2f} s ({c:.1f} CPU s), ratio {t / ours_s[-1]:.1f}x",
            file=sys.stderr,
            flush=True,
        )
    ratios = [h / o for h, o in zip(hf_s, ours_s)]
    cpu_ratios = [h / o for h, o in zip(hf_cpu, ours_cpu)]
    parts = run_ours_parts(args, cfg, params, prompt)
    o = parts[G]
    med_o, med_h, med_r = (float(np.median(x)) for x in (ours_s, hf_s, ratios))
    print(
        f"\nsampler benchmark on {jax.devices()[0].platform} (jax) / torch CPU "
        f"{args.threads} threads, sdpa, no attention mask; model d={args.d_model} L={args.layers} "
        f"V={args.vocab}, prompt {args.prompt_len}, G={G}, {args.new_tokens} new tokens; "
        f"median of {args.rounds} interleaved rounds\n"
    )
    print("| metric | ours | transformers `generate` | ratio |")
    print("|---|---|---|---|")
    print(
        f"| end to end, s (ours warm) | {med_o:.2f} | {med_h:.2f} | {med_r:.1f}x faster "
        f"(rounds {min(ratios):.1f}-{max(ratios):.1f}x) |"
    )
    print(
        f"| end to end, CPU s (user+sys, all threads) | {np.median(ours_cpu):.2f} | {np.median(hf_cpu):.2f} | "
        f"{np.median(cpu_ratios):.1f}x less (rounds {min(cpu_ratios):.1f}-{max(cpu_ratios):.1f}x) |"
    )
    print(
        f"| end to end incl. our compile, s | {med_o + compile_s:.2f} | {med_h:.2f} | "
        f"{med_h / (med_o + compile_s):.1f}x |"
    )
    print(
        f"| prompt KV, MiB | {o['kv_bytes'] / 2**20:.1f}: k,v {list(o['kv_shape'])} | "
        f"{hf_kv / 2**20:.1f}: k,v {list(hf_shape)} per layer, prompt positions | "
        f"{hf_kv / o['kv_bytes']:.1f}x less |"
    )
    print(f"| ours: prefill once, s | {o['prefill_s']:.2f} | | |")
    for g in sorted(parts):
        print(
            f"| ours: decode only, batch {g}, tokens/s | {parts[g]['decode_tps']:.0f} "
            f"({parts[g]['decode_s']:.2f} s) | | |"
        )
    print(f"\ncommand: python -m qwenlong_jax.bench sampler {' '.join(argv)}".rstrip())
    return dict(
        ours_s=ours_s,
        hf_s=hf_s,
        ratios=ratios,
        ours_cpu_s=ours_cpu,
        hf_cpu_s=hf_cpu,
        cpu_ratios=cpu_ratios,
        compile_s=compile_s,
        parts=parts,
        hf_kv_bytes=hf_kv,
    )
