"""The benchmark's workers (bench/train.py): one GRPO group's loss + gradient timed three ways.

Each runs in its own subprocess started by bench/train.py: `run_ours` (packed or naive layout,
xla or flash attention), `run_torch` (the transformers baseline on the naive rows) and
`run_matmul` (the machine's f32 matmul peak). What each measures: bench/train.py's docstring.
"""

from __future__ import annotations

import math
import time

import numpy as np

ENTROPY_COEFF, CLIP_LOW, CLIP_HIGH = 0.001, 0.2, 0.28


# ----------------------------------------------------------------------------- shared inputs
def make_group(args):
    """Prompt, G responses, advantages and old logprobs (near log(1/V), so ratios are ~1)."""
    rng = np.random.default_rng(0)
    prompt = rng.integers(1, args.vocab, size=args.prompt_len).tolist()
    responses = [rng.integers(1, args.vocab, size=args.resp_len).tolist() for _ in range(args.group)]
    adv_N = rng.normal(size=args.group).astype(np.float32)
    old_NR = -math.log(args.vocab) + 0.01 * rng.normal(size=(args.group, args.resp_len))
    return prompt, responses, adv_N, old_NR.astype(np.float32)


# ----------------------------------------------------------------------------- memory probes
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _reset_peak_rss() -> int:
    """Reset VmHWM to the current RSS; returns the current RSS in bytes."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS") * 1024


def _timed_runs(step, args) -> dict:
    """Peak RSS delta of the first full-size run (from a state where none has run yet, so the
    allocator holds nothing it could reuse); times of `iters` runs after `warmup` untimed ones
    (with warmup 0 the first, measured run is timed too)."""
    base = _reset_peak_rss()
    t = time.perf_counter()
    out = step()
    first_s = time.perf_counter() - t
    rss_delta = _status_kib("VmHWM") * 1024 - base
    times = [] if args.warmup else [first_s]
    for _ in range(max(args.warmup - 1, 0)):
        step()
    while len(times) < args.iters:
        t = time.perf_counter()
        out = step()
        times.append(time.perf_counter() - t)
    return dict(times=times, rss_peak_delta=rss_delta, result=out)


# ----------------------------------------------------------------------------- workers
def run_ours(args, variant: str, attention: str, model_dir: str) -> dict:
    import jax
    import optax

    from qwenlong_jax import models
    from qwenlong_jax.rl import grpo_step, packing

    cfg, params = models.load_hf_checkpoint(model_dir)
    cfg = cfg.replace(attention_impl=attention, remat=args.remat)
    prompt, responses, adv_N, old_NR = make_group(args)
    R = args.resp_len
    if variant == "packed":
        W = packing.round_up(packing.packed_row_length([prompt], responses, args.group), 128)
        rows = packing.pack_groups([prompt], responses, args.group, W, R)
    else:
        rows = packing.unpacked_rows([prompt], responses, args.group, args.prompt_len + R, R)
    mb = jax.tree.map(lambda x: x[0, 0], grpo_step.grpo_batch(rows, adv_N, 1, 1, old_NR))
    ls = grpo_step.LossSettings(
        clip_low=CLIP_LOW,
        clip_high=CLIP_HIGH,
        agg="token-mean",
        entropy_coeff=ENTROPY_COEFF,
        shared_prefix_segment=rows.shared_prefix_segment,
    )

    def loss_and_grad(p, mb):
        loss, grads = jax.value_and_grad(lambda p: grpo_loss_only(p, mb))(p)
        return loss, optax.global_norm(grads), grads

    def grpo_loss_only(p, mb):
        return grpo_step.grpo_loss(cfg, ls, p, mb)[0]

    t = time.perf_counter()
    compiled = jax.jit(loss_and_grad).lower(params, mb).compile()
    compile_s = time.perf_counter() - t
    mem = compiled.memory_analysis()
    if mem is None:
        raise RuntimeError(f"XLA gives no memory analysis on {jax.default_backend()}")
    xla_peak = mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes + mem.temp_size_in_bytes
    out = dict(
        variant=variant,
        rows=list(rows.tokens_BW.shape),
        compile_s=compile_s,
        xla_peak=xla_peak,
        xla_temp=mem.temp_size_in_bytes,
    )
    avail = _meminfo_kib("MemAvailable") * 1024
    if xla_peak > 0.7 * avail:
        return dict(
            out, skipped=f"compiled peak {xla_peak / 2**30:.1f} GiB > 70% of the {avail / 2**30:.1f} GiB available"
        )

    def step():
        return jax.block_until_ready(compiled(params, mb)[:2])

    r = _timed_runs(step, args)
    loss, gnorm = (float(x) for x in r.pop("result"))
    return dict(out, **r, loss=loss, grad_norm=gnorm)


def run_torch(args, model_dir: str) -> dict:
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    model = transformers.Qwen2ForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.train()
    prompt, responses, adv_N, old_NR = make_group(args)
    P = args.prompt_len
    ids = torch.tensor([prompt + r for r in responses])
    resp = ids[:, P:]
    adv, old = torch.from_numpy(adv_N)[:, None], torch.from_numpy(old_NR)

    def step(ids=ids, P=P, resp=resp, old=old, adv=adv):
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=ids, use_cache=False).logits  # unpadded rows: no mask
        logp_all = torch.log_softmax(logits[:, P - 1 : -1].float(), dim=-1)  # temperature 1
        logp = torch.gather(logp_all, -1, resp[..., None])[..., 0]
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        ratio = torch.exp(torch.clamp(logp - old, -20, 20))
        pg = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1 - CLIP_LOW, 1 + CLIP_HIGH))
        loss = pg.mean() - ENTROPY_COEFF * entropy.mean()
        loss.backward()
        gnorm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters()))
        return float(loss), float(gnorm)

    # Warm-up on a short batch (lazy init, kernels) so the timed runs need not repeat full ones.
    short = ids[:2, : min(64, P) + 8]
    step(short, min(64, P), short[:, min(64, P) :], old[:2, :8], adv[:2])
    r = _timed_runs(step, args)
    loss, gnorm = r.pop("result")
    return dict(
        variant="torch", rows=list(ids.shape), attn=model.config._attn_implementation, **r, loss=loss, grad_norm=gnorm
    )


def run_matmul(args) -> dict:
    import jax
    import jax.numpy as jnp

    n = args.matmul_n
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    f(a, b).block_until_ready()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
    return dict(variant="matmul", flops_per_s=2 * n**3 / min(times), n=n)


def _meminfo_kib(field: str) -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
