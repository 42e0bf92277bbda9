"""Running the supervised warm start and writing the SFT model out (`python -m primejax.sft`)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import partial

import jax
import ml_collections
import numpy as np

from primejax.models import ModelConfig
from primejax.models.params import Params
from primejax.parallel import Layout, make_mesh, opt_state_shardings, param_shardings, put_global
from primejax.parallel.rules import traced_under
from primejax.sft.step import encode_examples, prompt_bucket, sft_step
from primejax.tokenizer import Tokenizer
from primejax.train.config import validate_sft_for_mesh
from primejax.train.export import export_model
from primejax.train.metrics import MetricsWriter
from primejax.train.optim import make_optimizer
from primejax.train.steps import ModelState

Example = tuple[list[dict], str]


class SftDataError(ValueError):
    """A malformed SFT data file; the message names the path, line and field."""


def load_sft_examples(paths: str | Sequence[str]) -> list[Example]:
    """(messages, response) pairs from JSONL files with rows {"prompt": messages or text, "response": text}."""
    paths = [p.strip() for p in paths.split(",")] if isinstance(paths, str) else list(paths)
    examples = []
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"SFT data file not found: {path}")
        with open(path, encoding="utf-8") as f:
            for line_number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SftDataError(f"{path} line {line_number}: not JSON ({e})") from e
                prompt, response = row.get("prompt"), row.get("response")
                if isinstance(prompt, str):
                    prompt = [{"role": "user", "content": prompt}]
                if not isinstance(prompt, list) or not all(isinstance(m, dict) and "content" in m for m in prompt):
                    raise SftDataError(f"{path} line {line_number}: field 'prompt' must be text or chat messages, "
                                       f"got {prompt!r:.80}")
                if not isinstance(response, str):
                    raise SftDataError(f"{path} line {line_number}: field 'response' must be text, got {response!r:.80}")
                examples.append((prompt, response))
    if not examples:
        raise SftDataError(f"no SFT examples in {', '.join(paths)}")
    return examples


def train_sft(config: ml_collections.ConfigDict, params: Params, model_config: ModelConfig, tokenizer: Tokenizer,
              examples: Sequence[Example], workdir: str, layout: Layout | None = None) -> Params:
    """`config.sft.steps` AdamW steps on shuffled mini-batches of `examples`; returns the params.

    Batches are drawn epoch by epoch from a permutation seeded by `config.seed`. Params and the
    optimizer state are sharded by `layout` (default: the config's mesh and `model.sharding`), each
    mini-batch's rows over its batch axes. Metrics go to `workdir/metrics.jsonl` (and TensorBoard).
    """
    s = config.sft
    layout = layout or Layout(make_mesh(config.mesh)).with_params(config.model.sharding)
    validate_sft_for_mesh(config, layout.batch_shards)
    length = s.max_response_length or config.rollout.max_response_length
    prompt_length = prompt_bucket(tokenizer, examples)
    data = encode_examples(tokenizer, examples, length, prompt_length)
    optimizer = make_optimizer(s, s.steps)
    shardings = param_shardings(model_config, layout)
    params = jax.jit(lambda p: p, out_shardings=shardings)(params)
    opt_shardings = opt_state_shardings(optimizer, params, shardings, layout)
    state = ModelState(params, jax.jit(optimizer.init, out_shardings=opt_shardings)(params))
    step_fn = jax.jit(traced_under(partial(sft_step, config=model_config, optimizer=optimizer,
                                           micro_batch=s.micro_batch_size, chunk=config.logprob_chunk,
                                           keep_logits=config.keep_logits), layout),
                      donate_argnums=0, out_shardings=(ModelState(shardings, opt_shardings), layout.replicated()))
    rows = layout.rows((s.mini_batch_size,))
    rng = np.random.default_rng(config.seed)
    order = np.empty(0, np.int64)
    primary = jax.process_index() == 0
    with MetricsWriter(workdir, tensorboard=config.log.tensorboard, enabled=primary) as writer:
        for step in range(1, s.steps + 1):
            if len(order) < s.mini_batch_size:
                order = np.concatenate([order, rng.permutation(len(examples))])
            index, order = order[:s.mini_batch_size], order[s.mini_batch_size:]
            state, metrics = step_fn(state, put_global(jax.tree.map(lambda x, i=index: x[i], data), rows))
            if step % 10 == 0 or step == s.steps:
                metrics = {k: float(v) for k, v in metrics.items()}
                if not np.isfinite(metrics["sft/loss"]):
                    raise FloatingPointError(f"SFT loss is {metrics['sft/loss']} at step {step}; nothing was saved")
                writer.write(step, metrics)
                if primary:
                    print(f"sft step {step}/{s.steps}  loss {metrics['sft/loss']:.4f}", flush=True)
    return state.params


def run_sft(config: ml_collections.ConfigDict, params: Params, model_config: ModelConfig, tokenizer: Tokenizer,
            examples: Sequence[Example], output_dir: str, layout: Layout | None = None) -> str:
    """Trains (see `train_sft`) and exports the model with its tokenizer to `output_dir`; returns it."""
    params = train_sft(config, params, model_config, tokenizer, examples, output_dir + ".logs", layout)
    return export_model(output_dir, params, model_config, tokenizer)
