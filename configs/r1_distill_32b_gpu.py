"""R1-Distill-Qwen-32B, QwenLong-L1 recipe, on 16 nodes x 8 H100 (128 GPUs).

Launch on each node (SLURM shown; jax.distributed.initialize() reads SLURM_* variables):

    srun --nodes=16 --ntasks-per-node=1 --gpus-per-node=8 \
      python -m qwenlong_jax.train --config configs/r1_distill_32b_gpu.py \
        --config.data.train_files=/data/docqa_rl_1.6k.parquet \
        --config.model.init_from=/models/DeepSeek-R1-Distill-Qwen-32B --workdir /runs/l1_32b

Without SLURM add --config.coordinator_address=host0:1234 --config.num_processes=16
--config.process_id=<node rank> on each node.
Mesh: tensor=4 x sequence=4 (16 GPUs: tensor inside a node over NVLink), fsdp=8 across nodes.
8 KV heads -> 2 per GPU. YaRN factor 4 over 32768 positions (model.rope_scaling). Planned
peak (python -m qwenlong_jax.plan --config configs/r1_distill_32b_gpu.py): ~54 GiB of 80 per
GPU; checked by the planner only (the compile check needs libtpu's TPU compiler; no GPU was
available to compile it for CUDA). Without CPU offload the 32B recipe at
60K inputs does not fit 32 H100s: the planner puts fsdp=2 x tensor=8 x sequence=2 at ~107 GiB;
8 nodes fit with H200s (fsdp=4 x tensor=4 x sequence=4, ~81 GiB of 141).
Install the CUDA wheels first: pip install -U "jax[cuda13]==0.10.2".
"""
from configs import common

COMPILE_TARGET = "h100:16x8"  # python -m qwenlong_jax.compile's default for this file


def get_config(arg: str | None = None):
    return common.r1_distill_32b(dict(data=1, fsdp=8, tensor=4, sequence=4), smoke=arg == "smoke")
