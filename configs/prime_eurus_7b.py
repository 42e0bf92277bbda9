"""The paper's main run (SPEC §8, [OFF] `run_prime_main.sh`): Eurus-2-7B-SFT as policy, implicit PRM
and reference, on Eurus-2-RL-Data; 256 prompts × 4 samples per step after the 0.2–0.8 accuracy
filter, responses up to 3072 tokens, actor AdamW 5e-7, PRM AdamW 1e-6, β = 0.05, `after` update, RLOO.

Point it at local copies (nothing is downloaded):

    python -m primejax.train --config=configs/prime_eurus_7b.py \\
        --config.model.path=/data/Eurus-2-7B-SFT \\
        --config.data.train_files=/data/eurus2_rl/train.parquet \\
        --config.data.eval_files=/data/eurus2_rl/validation.parquet --workdir=runs/prime_7b

Eurus-2-RL-Data's prompts already carry the action-centric system prompt and the answer-format
suffix, so none is added here.

Mesh and memory: chosen with the ahead-of-time planner for a v5p-32 (16 chips, 95 GiB each; see
bench/RESULTS.md), where the plan is 57.5 GiB per chip:

    python -m primejax.tools.aot --config=configs/prime_eurus_7b.py --architecture=qwen2.5-math-7b \
        --topology=v5p-32

All params and optimizer states are sharded over every chip (FSDP), each layer is recomputed in the
backward pass (without it the updates need 131 GiB of temporaries per chip), and generation reads a
bfloat16 copy of the policy whole on every chip, so decoding never gathers shards. On another slice
rerun the planner; micro-batches must be multiples of the chips on the fsdp (and data) axes.
"""

from primejax.train.config import base_config


def get_config():
    c = base_config()  # every algorithm default is the paper's
    c.steps = 592
    c.model.dtype = "float32"  # fp32 master weights, bf16 compute, as the reference's FSDP mixed precision
    c.model.compute_dtype = "bfloat16"
    c.data.max_prompt_length = 1024
    c.rollout.batch_size = 256
    c.rollout.n = 4
    c.rollout.max_response_length = 3072
    c.actor.lr = 5e-7
    c.actor.mini_batch_size = 256
    c.prm.lr = 1e-6
    c.prm.mini_batch_size = 256
    c.prm.beta = 0.05
    c.prm.schedule = "after"
    c.filter.accuracy_lower = 0.2
    c.filter.accuracy_upper = 0.8
    c.eval.every = 16
    c.eval.batch_size = 256
    c.eval.max_response_length = 4096  # the paper's evaluation scripts decode up to 4096 tokens
    c.checkpoint.every = 16
    c.logprob_chunk = 256
    c.packing.enabled = True  # layers on the real tokens only, the head on the response tokens only
    c.mesh.update({"data": 1, "fsdp": -1, "tensor": 1})
    c.model.remat = "full"
    c.actor.micro_batch_size = 16  # one response per chip and accumulated step on 16 chips
    c.prm.micro_batch_size = 16
    c.score_micro_batch_size = 64
    c.rollout.dtype = "bfloat16"
    c.rollout.sharding = "tp"  # tensor-parallel only: with mesh.tensor = 1, whole on every chip
    return c
