"""The built-in demo (the default of `python -m primejax.train`): PRIME on generated multi-step
arithmetic with a ~1M-parameter model made locally, SFT warm start included; CPU, no downloads."""

from primejax.train.config import base_config


def get_config():
    c = base_config()
    c.demo.enabled = True
    c.steps = 60
    c.logprob_chunk = 64
    c.data.max_prompt_length = 32
    c.rollout.batch_size = 32
    c.rollout.n = 4
    c.rollout.max_response_length = 64
    c.rollout.max_rounds = 4
    c.actor.lr = 2e-5
    c.actor.mini_batch_size = 64
    c.actor.micro_batch_size = 64
    c.prm.lr = 2e-5
    c.prm.mini_batch_size = 64
    c.prm.micro_batch_size = 64
    c.sft.steps = 300
    c.sft.lr = 3e-3
    c.sft.warmup_steps = 20
    c.sft.mini_batch_size = 32
    c.sft.micro_batch_size = 32
    c.eval.every = 20
    c.eval.batch_size = 100
    c.checkpoint.every = 10
    c.verifier.workers = 1
    return c
