"""R1-Distill-Qwen-32B, QwenLong-L1 recipe, on a TPU v5p-128 pod slice (64 chips).

Launch (every host of the slice runs the same command; jax.distributed.initialize()
discovers the slice from the TPU environment):

    gcloud compute tpus tpu-vm ssh $TPU --worker=all --command="cd qwenlong_jax && \
      python -m qwenlong_jax.train --config configs/r1_distill_32b_tpu.py \
        --config.data.train_files=gs://$BUCKET/docqa_rl_1.6k.parquet \
        --config.model.init_from=gs://$BUCKET/R1-Distill-Qwen-32B --workdir gs://$BUCKET/runs/l1_32b"

Mesh: fsdp=16 x tensor=4 (64 chips). 40 query heads / 8 KV heads split 4 ways by tensor
(each chip holds 10 query and 2 KV heads); weights and optimizer state sharded 16 ways
over fsdp; batch over fsdp (data=1). Long inputs: YaRN factor 4 over 32768 positions,
flash attention, full remat. `:smoke` shrinks the same layout to run on CPU devices.
"""
from configs import common


def get_config(arg: str | None = None):
    c = common.base()
    c.model.update(size="r1-distill-qwen-32b", param_dtype="float32", dtype="bfloat16",
                   attention_impl="flash", remat="full", scan_layers=True, logits_chunk=2048)
    c.model.init_from = ""  # set to the HF checkpoint directory
    c.mesh.update(data=1, fsdp=16, tensor=4, sequence=1)
    c.phases = common.paper_phases()
    c.distributed = True
    c.checkpoint_every = 10
    if arg == "smoke":
        c.model.update(size="tiny", dtype="float32", attention_impl="xla", remat="none")
        c.mesh.update(data=2, fsdp=2, tensor=2, sequence=1)
        c.distributed = False
    return c
