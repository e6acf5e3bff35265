"""R1-Distill-Qwen-32B, QwenLong-L1 recipe, on 16 nodes x 8 H100 (128 GPUs).

Launch on each node (SLURM shown; jax.distributed.initialize() reads SLURM_* variables):

    srun --nodes=16 --ntasks-per-node=1 --gpus-per-node=8 \
      python -m qwenlong_jax.train --config configs/r1_distill_32b_gpu.py \
        --config.data.train_files=/data/docqa_rl_1.6k.parquet \
        --config.model.init_from=/models/DeepSeek-R1-Distill-Qwen-32B --workdir /runs/l1_32b

Without SLURM add --config.coordinator_address=host0:1234 --config.num_processes=16
--config.process_id=<node rank> on each node.
Mesh: fsdp=8 x tensor=4 x sequence=4, built as the trainer builds it (sharding.make_mesh: on GPUs
the tensor axis innermost over the devices in node order, sharding.GPU_LAYOUT): a tensor group
(4 GPUs) lies inside a node, on NVLink; a sequence group spans 2 nodes (2 GPUs in each); an fsdp
group takes one GPU from every other node.
8 KV heads -> 2 per GPU. YaRN factor 4 over 32768 positions (model.rope_scaling).
Compiled for h100:16x8 by XLA:GPU and Triton on a CPU (python -m qwenlong_jax.compile --config
configs/r1_distill_32b_gpu.py; COMPILE_TARGET below; the CUDA plugin's compile-only GPUs, no
autotuning): every step of every phase compiles and fits, the largest being the 60K-input
phase's GRPO update at 46.1 GiB per GPU (2026-12-04) of the 59.3 GiB jax's GPU client allocates by default
(75% of 79.1; the planner, python -m qwenlong_jax.plan, says 46.5). Without CPU offload the
32B recipe at 60K inputs does not fit 32 H100s (the planner puts fsdp=2 x tensor=8 x
sequence=2 at ~91 GiB); 8 nodes fit with H200s (--target h200:8x8 --config.mesh.fsdp=4:
compiled, 92.6 of 105.8 GiB).
Install the CUDA wheels first: pip install -U "jax[cuda13]==0.10.2".
"""

from configs import common

COMPILE_TARGET = "h100:16x8"  # python -m qwenlong_jax.compile's default for this file


def get_config(arg: str | None = None):
    return common.r1_distill_32b(dict(data=1, fsdp=8, tensor=4, sequence=4), smoke=arg == "smoke")
