"""A tiny built-in-demo run for the trainer's tests: a 2-layer model, 4 prompts × 4 samples, 3 steps."""

from primejax.train.config import base_config


def get_config():
    c = base_config()
    c.demo.update({"enabled": True, "train_size": 64, "eval_size": 8, "sft_size": 64, "vocab_size": 300,
                   "hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2,
                   "min_ops": 1, "max_ops": 2, "max_operand": 9, "max_value": 100})
    c.steps = 3
    c.logprob_chunk = 16
    c.data.max_prompt_length = 32
    c.rollout.update({"batch_size": 4, "n": 4, "max_response_length": 32, "max_rounds": 2})
    c.actor.update({"lr": 1e-3, "mini_batch_size": 8, "micro_batch_size": 4})
    c.prm.update({"lr": 1e-3, "mini_batch_size": 8, "micro_batch_size": 8})
    c.sft.update({"steps": 4, "lr": 1e-2, "mini_batch_size": 16, "micro_batch_size": 16, "warmup_steps": 0})
    c.eval.update({"every": 2, "batch_size": 8})
    c.checkpoint.every = 1
    c.verifier.workers = 1
    c.log.progress = False
    return c
