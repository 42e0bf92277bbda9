"""The built-in demo (the default of `python -m primejax.train`): PRIME on generated multi-step
arithmetic with a ~1M-parameter model made locally, SFT warm start included; CPU, no downloads.

Problems are chains of 4-5 additions and subtractions of digits (`Compute 7 + 5 - 3 + 8 - 6.`),
every running total in [0, 20). The warm start imitates a teacher that works the steps out on 30%
of the problems and states only the answer on the rest (`demo.answer_only_fraction`). A 4-layer
model cannot add five numbers in one go, so the SFT model, which mostly answers straight away, is
mostly wrong, while its worked answers are mostly right; RL rewards right answers and the policy
learns to work them out."""

from primejax.train.config import base_config


def get_config():
    c = base_config()
    c.demo.update({"enabled": True, "min_ops": 4, "max_ops": 5, "max_operand": 9, "max_value": 20, "operators": "+-",
                   "chain": True, "sft_size": 8000, "answer_only_fraction": 0.7})
    c.steps = 100
    c.logprob_chunk = 64
    c.data.max_prompt_length = 32
    c.rollout.batch_size = 16
    c.rollout.n = 4
    c.rollout.max_response_length = 64
    c.rollout.max_rounds = 8
    c.actor.lr = 5e-5  # half the PRM's, as the paper's 5e-7 and 1e-6
    c.actor.mini_batch_size = 64
    c.actor.micro_batch_size = 64
    c.prm.lr = 1e-4
    c.prm.mini_batch_size = 64
    c.prm.micro_batch_size = 64
    c.sft.steps = 700
    c.sft.lr = 1.5e-3
    c.sft.lr_schedule = "constant"
    c.sft.warmup_steps = 20
    c.sft.mini_batch_size = 64
    c.sft.micro_batch_size = 64
    c.eval.every = 25
    c.eval.batch_size = 100
    c.checkpoint.every = 10
    c.verifier.workers = 1
    return c
