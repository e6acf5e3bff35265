"""R1-Distill-Qwen-32B, QwenLong-L1 recipe, on a TPU v5p-128 pod slice (64 chips).

Launch (every host of the slice runs the same command; jax.distributed.initialize()
discovers the slice from the TPU environment):

    gcloud compute tpus tpu-vm ssh $TPU --worker=all --command="cd qwenlong_jax && \
      python -m qwenlong_jax.train --config configs/r1_distill_32b_tpu.py \
        --config.data.train_files=gs://$BUCKET/docqa_rl_1.6k.parquet \
        --config.model.init_from=gs://$BUCKET/R1-Distill-Qwen-32B --workdir gs://$BUCKET/runs/l1_32b"

Mesh: fsdp=4 x tensor=4 x sequence=4 (64 chips). 40 query heads / 8 KV heads split 4 ways by
tensor (each chip holds 10 query and 2 KV heads); weights and optimizer state sharded 16 ways
over fsdp x tensor; packed rows split 4 ways over sequence (ring attention); batch over fsdp.
Long inputs: YaRN factor 4 over 32768 positions (model.rope_scaling), full remat.
Compiled for v5p:4x4x4 by XLA:TPU on a CPU (python -m qwenlong_jax.compile --config
configs/r1_distill_32b_tpu.py; libtpu compile-only devices): every step of every phase
compiles and fits, the largest being the 60K-input phase's GRPO update at 86.9 of 95.7 GiB per
chip (the planner, python -m qwenlong_jax.plan, says 80.9). `:smoke` shrinks the same layout to
run on CPU devices.
"""

from configs import common

COMPILE_TARGET = "v5p:4x4x4"  # python -m qwenlong_jax.compile's default for this file


def get_config(arg: str | None = None):
    return common.r1_distill_32b(dict(data=1, fsdp=4, tensor=4, sequence=4), smoke=arg == "smoke")
