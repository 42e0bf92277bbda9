"""A small real model: PRIME on Qwen2.5-0.5B-Instruct with GSM8K-style grade-school math.

Data: Eurus-2-RL-Data-schema JSONL or Parquet rows (`data_source`, `prompt` as chat messages,
`ability: "math"`, `reward_model.ground_truth` the final number). The suffix below asks for the
answer in \\boxed{}, which the math verifier reads. Point it at local copies:

    python -m primejax.train --config=configs/qwen2_5_0_5b_gsm8k.py \\
        --config.model.path=/data/Qwen2.5-0.5B-Instruct \\
        --config.data.train_files=/data/gsm8k/train.jsonl \\
        --config.data.eval_files=/data/gsm8k/test.jsonl --workdir=runs/qwen05_gsm8k

Scale from the paper's run: 64 prompts × 4 samples per step, responses up to 512 tokens, 2 epochs of
the 7.5k GSM8K training problems (234 steps); learning rates and β as in the paper.
"""

from primejax.train.config import base_config


def get_config():
    c = base_config()
    c.steps = 234
    c.model.compute_dtype = "bfloat16"
    c.data.max_prompt_length = 512
    c.data.instruction_suffix = "\n\nLet's think step by step and output the final answer in \\boxed{}."
    c.rollout.batch_size = 64
    c.rollout.n = 4
    c.rollout.max_response_length = 512
    c.actor.lr = 1e-6
    c.actor.mini_batch_size = 128
    c.actor.micro_batch_size = 16
    c.prm.lr = 1e-6
    c.prm.mini_batch_size = 128
    c.prm.micro_batch_size = 16
    c.eval.every = 20
    c.eval.batch_size = 128
    c.checkpoint.every = 20
    c.logprob_chunk = 128
    c.packing.enabled = True  # layers on the real tokens only, the head on the response tokens only
    return c
