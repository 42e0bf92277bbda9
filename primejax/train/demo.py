"""The built-in demo: multi-step arithmetic, a tokenizer and a model made locally, an SFT warm start.

`prepare_demo(config, workdir)` writes, under `workdir/demo/` and only what is missing:

    train.jsonl, eval.jsonl   generated problems (`primejax.data.arithmetic`), disjoint splits
    sft/                      a Hugging Face directory: the tokenizer and the SFT model, trained from a
                              random init for `sft.steps` steps on worked solutions, a share
                              `demo.answer_only_fraction` of them cut to the final answer

and returns the config pointed at them, so PRIME then runs exactly as on a user's model and data.
Nothing is downloaded. On several processes, process 0 makes them while the others wait.
"""

from __future__ import annotations

import os

import jax
import ml_collections
from jax.experimental import multihost_utils

from primejax.data import arithmetic
from primejax.models import ModelConfig
from primejax.parallel import Layout, init_params_sharded, make_mesh
from primejax.sampling import bucket
from primejax.sft import run_sft
from primejax.tokenizer import build_demo_tokenizer


def _difficulty(d: ml_collections.ConfigDict) -> dict[str, int | str | bool]:
    return {"min_ops": d.min_ops, "max_ops": d.max_ops, "max_operand": d.max_operand, "max_value": d.max_value,
            "operators": d.operators, "chain": d.chain}


def prepare_demo(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
    """Makes the demo's data and SFT model if missing; returns a copy of `config` that uses them."""
    if jax.process_index() == 0:
        _make_demo(config, workdir)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("primejax demo files")
    return _pointed_at_demo(config, workdir)


def _paths(workdir: str) -> tuple[str, str, str]:
    root = os.path.join(os.path.abspath(workdir), "demo")
    return os.path.join(root, "train.jsonl"), os.path.join(root, "eval.jsonl"), os.path.join(root, "sft")


def _make_demo(config: ml_collections.ConfigDict, workdir: str) -> None:
    d = config.demo
    seed = d.seed if d.seed >= 0 else config.seed
    train_path, eval_path, sft_dir = _paths(workdir)
    train_rows = arithmetic.make_rows(d.train_size, seed=seed, split="train", **_difficulty(d))
    if not os.path.isfile(train_path):
        arithmetic.write_jsonl(train_rows, train_path)
    if not os.path.isfile(eval_path):
        arithmetic.write_jsonl(arithmetic.make_rows(d.eval_size, seed=seed, split="eval", **_difficulty(d)),
                               eval_path)
    if not os.path.isfile(os.path.join(sft_dir, "config.json")):
        sft_rows = arithmetic.make_rows(d.sft_size, seed=seed + 1, split="train", **_difficulty(d))
        tokenizer = build_demo_tokenizer(arithmetic.tokenizer_corpus(train_rows + sft_rows), vocab_size=d.vocab_size)
        model_config = ModelConfig(
            vocab_size=tokenizer.vocab_size, hidden_size=d.hidden_size, intermediate_size=d.intermediate_size,
            num_layers=d.num_layers, num_heads=d.num_heads, num_kv_heads=d.num_kv_heads,
            head_dim=d.hidden_size // d.num_heads,
            max_position_embeddings=bucket(config.data.max_prompt_length) + config.rollout.max_response_length,
            eos_token_ids=tokenizer.eos_ids, pad_token_id=tokenizer.pad_id)
        # Process 0 alone makes the demo's model, data-parallel over its own devices.
        local = Layout(make_mesh({"data": -1, "fsdp": 1, "tensor": 1}, jax.local_devices()))
        params = init_params_sharded(model_config, jax.random.key(seed), local)
        examples = arithmetic.sft_examples(sft_rows, answer_only_fraction=d.answer_only_fraction, seed=seed)
        sft_config = ml_collections.ConfigDict(config.to_dict())
        sft_config.seed = seed
        run_sft(sft_config, params, model_config, tokenizer, examples, sft_dir, local)


def _pointed_at_demo(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
    train_path, eval_path, sft_dir = _paths(workdir)
    demo = ml_collections.ConfigDict(config.to_dict())
    demo.model.path = sft_dir
    demo.model.tokenizer_path = ""
    demo.data.train_files = train_path
    demo.data.eval_files = eval_path
    return demo
