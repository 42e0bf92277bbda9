"""Checks primejax logits against Hugging Face transformers on a checkpoint directory.

    python -m primejax.tools.check_logits --hf-dir DIR [--atol 1e-4] [--generate N]
    python -m primejax.tools.check_logits --demo [--workdir workdir]

Loads DIR with transformers (PyTorch, float32, CPU, eager attention) and with primejax, runs both
on the same random batch (left padding of a different length in every row), prints the largest
absolute logit difference over real positions and exits 1 when it exceeds --atol (2 when the
checkpoint cannot be loaded). With `--generate N` it also continues the batch's prompts greedily
for N tokens with both and fails if any token differs. `--demo` first writes a tiny random Qwen2
checkpoint and tokenizer under --workdir, then checks it.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from primejax.models import (
    CheckpointError,
    ModelConfig,
    forward,
    init_params,
    load_hf_checkpoint,
    positions_from_segment_ids,
    save_hf_checkpoint,
)

_forward = jax.jit(forward, static_argnames="config")


def random_batch(vocab_size: int, batch: int = 4, length: int = 48, seed: int = 0):
    """Random tokens [batch, length] and a left-padding mask whose pad lengths differ per row."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab_size, size=(batch, length), dtype=np.int64)
    pads = np.concatenate([[0], rng.choice(np.arange(1, length // 2), size=batch - 1, replace=False)])
    mask = (np.arange(length)[None, :] >= pads[:, None]).astype(np.int64)
    return tokens, mask


def hf_logits(hf_dir: str, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Float32 logits of the transformers model in hf_dir (positions from the mask, as generate does)."""
    import torch
    import transformers

    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        hf_dir, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        raise CheckpointError(f"transformers reports a checkpoint that does not match its config: {problems}")
    model.eval()
    mask_t = torch.from_numpy(mask)
    positions = (mask_t.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(tokens), attention_mask=mask_t, position_ids=positions)
    return out.logits.float().numpy()


def primejax_logits(config: ModelConfig, params, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    segment_ids = jnp.asarray(mask, jnp.int32)
    positions = positions_from_segment_ids(segment_ids)
    with jax.default_matmul_precision("highest"):
        logits, _ = _forward(params, jnp.asarray(tokens, jnp.int32), positions, segment_ids, config=config)
    return np.asarray(logits)


def hf_greedy(hf_dir: str, tokens: np.ndarray, mask: np.ndarray, new_tokens: int) -> np.ndarray:
    """transformers' greedy continuation [B, new_tokens] of left-padded prompts (no early stop)."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32,
                                                              attn_implementation="eager").eval()
    with torch.no_grad():
        out = model.generate(input_ids=torch.from_numpy(tokens), attention_mask=torch.from_numpy(mask),
                             do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             eos_token_id=None, pad_token_id=0)
    return out[:, tokens.shape[1]:].numpy()


def primejax_greedy(config: ModelConfig, params, tokens: np.ndarray, mask: np.ndarray, new_tokens: int) -> np.ndarray:
    from primejax.sampling import SamplingParams, generate

    with jax.default_matmul_precision("highest"):
        rollout = generate(params, tokens, mask, jax.random.key(0), config=config,
                           sampling=SamplingParams(temperature=0.0, max_new_tokens=new_tokens),
                           max_len=tokens.shape[1] + new_tokens)
    return np.asarray(rollout.response_tokens)


def max_abs_diff(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Largest |a - b| over the positions where mask is 1."""
    return float(np.max(np.abs(a - b) * mask[..., None]))


def write_demo_checkpoint(path: str, seed: int = 0) -> None:
    """A tiny random Qwen2 checkpoint (the built-in demo shape) with a local tokenizer.

    Every weight, biases and norm scales included, is perturbed away from its init value so that
    a comparison exercises all of them.
    """
    from primejax.tokenizer import build_demo_tokenizer, demo_corpus

    tokenizer = build_demo_tokenizer(demo_corpus(), vocab_size=300)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, eos_token_ids=tokenizer.eos_ids,
                         pad_token_id=tokenizer.pad_id, initializer_range=0.1)
    key_init, key_noise = jax.random.split(jax.random.key(seed))
    params = init_params(config, key_init)
    leaves, treedef = jax.tree.flatten(params)
    noise = jax.random.split(key_noise, len(leaves))
    leaves = [x + 0.1 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, noise)]
    save_hf_checkpoint(path, jax.tree.unflatten(treedef, leaves), config)
    tokenizer.save(path)


def check(hf_dir: str, atol: float, batch: int, length: int, seed: int, generate: int = 0) -> bool:
    config, params = load_hf_checkpoint(hf_dir, dtype="float32")
    tokens, mask = random_batch(config.vocab_size, batch, length, seed)
    ours = primejax_logits(config, params, tokens, mask)
    theirs = hf_logits(hf_dir, tokens, mask)
    diff = max_abs_diff(ours, theirs, mask)
    agree = float(np.mean((ours.argmax(-1) == theirs.argmax(-1))[mask.astype(bool)]))
    print(f"checkpoint   {hf_dir}")
    print(f"model        {config.model_type}: {config.num_layers} layers, hidden {config.hidden_size}, "
          f"heads {config.num_heads}/{config.num_kv_heads}, vocab {config.vocab_size}, rope {config.rope.rope_type}, "
          f"tied {config.tie_word_embeddings}")
    print(f"batch        {batch} x {length}, left pads {(length - mask.sum(1)).tolist()}")
    print(f"logit scale  max |logit| {np.max(np.abs(theirs) * mask[..., None]):.4f}")
    print(f"max abs diff {diff:.3e} (atol {atol:g})")
    print(f"argmax agree {agree:.4f}")
    ok = diff <= atol
    if generate:
        ours_tokens = primejax_greedy(config, params, tokens, mask, generate)
        theirs_tokens = hf_greedy(hf_dir, tokens, mask, generate)
        differ = ours_tokens != theirs_tokens
        print(f"greedy       {generate} new tokens x {batch} rows: {int(differ.sum())} tokens differ")
        if differ.any():
            row, step = np.argwhere(differ)[0]
            print(f"             first difference: row {row}, step {step}: primejax {ours_tokens[row, step]}, "
                  f"transformers {theirs_tokens[row, step]}")
            ok = False
    print("PASS" if ok else "FAIL: logits differ beyond atol" if diff > atol else "FAIL: greedy tokens differ")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m primejax.tools.check_logits", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--hf-dir", help="Hugging Face checkpoint directory (config.json + *.safetensors)")
    source.add_argument("--demo", action="store_true", help="write a tiny random checkpoint, then check it")
    parser.add_argument("--workdir", default="workdir", help="where --demo writes its checkpoint")
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--generate", type=int, default=0, metavar="N",
                        help="also compare N greedy new tokens with transformers' generate")
    args = parser.parse_args(argv)
    if args.generate < 0:
        parser.error(f"--generate={args.generate} must be >= 0")
    if args.batch < 1 or args.length < 2 * args.batch:
        parser.error(f"--batch={args.batch} --length={args.length}: need batch >= 1 and length >= 2 * batch")
    hf_dir = args.hf_dir
    if args.demo:
        hf_dir = os.path.join(args.workdir, "demo_checkpoint")
        write_demo_checkpoint(hf_dir, args.seed)
        print(f"wrote a tiny random Qwen2 checkpoint and tokenizer to {hf_dir}")
    try:
        ok = check(hf_dir, args.atol, args.batch, args.length, args.seed, args.generate)
    except (FileNotFoundError, ValueError) as e:  # CheckpointError and ConfigError included
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
