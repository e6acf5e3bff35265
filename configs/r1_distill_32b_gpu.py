"""R1-Distill-Qwen-32B, QwenLong-L1 recipe, on 4 nodes x 8 H100 (32 GPUs).

Launch on each node (SLURM shown; jax.distributed.initialize() reads SLURM_* variables):

    srun --nodes=4 --ntasks-per-node=1 --gpus-per-node=8 \
      python -m qwenlong_jax.train --config configs/r1_distill_32b_gpu.py \
        --config.data.train_files=/data/docqa_rl_1.6k.parquet \
        --config.model.init_from=/models/DeepSeek-R1-Distill-Qwen-32B --workdir /runs/l1_32b

Without SLURM set JAX_COORDINATOR_ADDRESS=host0:1234, JAX_NUM_PROCESSES=4 and
JAX_PROCESS_ID=<node rank> on each node.
Mesh: tensor=8 inside a node (NVLink), fsdp=4 across nodes. 8 KV heads -> 1 per GPU.
Install the CUDA wheels first: pip install -U "jax[cuda13]==0.10.2".
"""
from configs import common


def get_config(arg: str | None = None):
    return common.r1_distill_32b(dict(data=1, fsdp=4, tensor=8), smoke=arg == "smoke")
