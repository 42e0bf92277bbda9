"""Rollout speed: primejax's sampler against Hugging Face `generate` on the same model, same process.

What it measures, per (shape, dtype, batch B):
  * One random Qwen2 model (primejax `init_params`, initializer_range 0.02) is saved with
    `save_hf_checkpoint` and loaded by transformers (default attention, sdpa), so both sides hold
    the same weights in the same dtype. Prompts: B rows of P random tokens, all real (mask all ones).
  * Both sides sample at temperature 1 (no top-k, no top-p) with no end token, so every row gets
    exactly N new tokens (HF: min_new_tokens = max_new_tokens = N; the script checks the lengths).
  * Warm-up: one call per side and length. primejax's first call jit-compiles; its compile time is
    reported as first call minus a steady-state call, and is excluded from every other number.
  * Rounds, interleaved because this machine's speed swings within minutes: each round times
    ours(N), HF(N), ours(N0), HF(N0) with N0 = 16 (the sampler's smallest response bucket).
    Reported: median time and tokens/s (B*N / time) per side, the median of per-round ratios
    HF time / ours, and the time per decode step = median over rounds of (t_N - t_N0) / (N - N0),
    which leaves the prefill out.
  * Machine floor per decode step, measured in this run: matmul peak (jitted 2048^3 matmul in the
    run's dtype) and memory bandwidth (jitted, donated `x * 2.0` on 256 MB of float32, read + write).
    FLOPs = 2 * B * (per-layer q, k, v, o, gate, up, down kernels and biases + lm_head);
    weight bytes = those params * bytes per element; KV read = 2 * layers * B * kv_heads *
    head_dim * bytes * (P + N/2), the cache at the average step.
    floor = max(FLOPs / peak, weight bytes / bandwidth); floor with KV adds the KV read to the bytes.
  * Both sides share the process and so the allocator; `--reexec-tcmalloc` reruns the script with
    LD_PRELOAD set to tcmalloc (freed memory kept in the process).

Usage (from the repository root): python bench/rollout.py [--shapes tiny,small] [--batches 8,64] ...
"""

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time

import allocator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
allocator.reexec_under_tcmalloc()
allocator.reexec_with_huge_pages()
sys.path.insert(0, ROOT)

import jax
import jax.numpy as jnp
import numpy as np
import torch
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from primejax.models import ModelConfig, init_params, save_hf_checkpoint
from primejax.sampling import SamplingParams, generate

SHAPES = {
    "tiny": {"vocab_size": 512, "hidden_size": 128, "intermediate_size": 384, "num_layers": 4, "num_heads": 4,
             "num_kv_heads": 2, "head_dim": 32},
    "small": {"vocab_size": 32000, "hidden_size": 512, "intermediate_size": 1536, "num_layers": 8,
              "num_heads": 8, "num_kv_heads": 4, "head_dim": 64},
}
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
SHORT = 16  # N0: the short length of the per-step measurement (the sampler's smallest bucket)


def log(*args):
    print(*args, flush=True)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def median_time(fn, repeats=5):
    fn()
    return statistics.median(timed(fn)[0] for _ in range(repeats))


def machine_peaks(dtype):
    """(matmul FLOP/s in `dtype`, memory bytes/s) measured now with jitted JAX kernels."""
    n = 2048
    a = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
    matmul = jax.jit(jnp.matmul)
    flops = 2 * n**3 / median_time(lambda: matmul(a, a).block_until_ready())
    # The input is donated so the output reuses its buffer: a fresh 256 MB output per call would
    # measure first-touch page faults (about 6x slower here) rather than memory bandwidth.
    scale = jax.jit(lambda x: x * 2.0, donate_argnums=0)
    x = [jnp.ones((64 * 2**20,), jnp.float32)]  # 256 MB

    def copy():
        x[0] = scale(x[0]).block_until_ready()

    bandwidth = 2 * x[0].nbytes / median_time(copy)
    return flops, bandwidth


def matmul_params(config):
    """Params a decode step multiplies by: per-layer kernels and biases, and the lm_head."""
    h, f, v = config.hidden_size, config.intermediate_size, config.vocab_size
    q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    per_layer = h * (q + 2 * kv) + (q + 2 * kv) + q * h + 3 * h * f
    return config.num_layers * per_layer + h * v


def run_case(shape, dtype, batch, args):
    """Benchmarks one (shape, dtype, batch); returns the summary row as a dict."""
    n, prompt_len = args.new_tokens, args.prompt_len
    config = ModelConfig(model_type="qwen2", **SHAPES[shape], dtype=dtype, compute_dtype=dtype)
    params = init_params(config, jax.random.key(args.seed), dtype=dtype)
    with tempfile.TemporaryDirectory() as tmp:
        save_hf_checkpoint(tmp, params, config)
        model = AutoModelForCausalLM.from_pretrained(tmp, dtype=TORCH_DTYPES[dtype]).eval()
    rng = np.random.default_rng(args.seed)
    tokens = rng.integers(1, config.vocab_size, (batch, prompt_len), dtype=np.int32)
    mask = np.ones_like(tokens)
    input_ids, attention_mask = torch.from_numpy(tokens.astype(np.int64)), torch.from_numpy(mask.astype(np.int64))
    key = jax.random.key(args.seed)
    torch.manual_seed(args.seed)

    def ours(length):
        sampling = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, n=1, max_new_tokens=length, eos_ids=(),
                                  pad_id=0)
        return jax.block_until_ready(generate(params, tokens, mask, key, config=config, sampling=sampling))

    def hf(length):
        with torch.no_grad():
            return model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=True,
                                  temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=length,
                                  min_new_tokens=length, pad_token_id=0, eos_token_id=None)

    log(f"\n=== {shape} {dtype} B={batch}: {config.num_params / 1e6:.1f}M params, prompts {batch} x {prompt_len} "
        f"random tokens, all real (mask all ones), {n} new tokens, HF attention "
        f"{model.config._attn_implementation}")
    first, rollout = timed(lambda: ours(n))
    compile_s = first - timed(lambda: ours(n))[0]
    ours(SHORT)
    lengths = np.asarray(rollout.response_lengths)
    if rollout.response_tokens.shape != (batch, n) or (lengths != n).any():
        raise RuntimeError(f"primejax generated {sorted(set(lengths.tolist()))} tokens, expected {n}")
    for length in (n, SHORT):
        out = hf(length)
        if out.shape != (batch, prompt_len + length):
            raise RuntimeError(f"HF generated {out.shape[1] - prompt_len} tokens, expected {length}")

    times = {"ours": [], "hf": [], "ours0": [], "hf0": []}
    for r in range(args.rounds):
        for name, fn, length in (("ours", ours, n), ("hf", hf, n), ("ours0", ours, SHORT), ("hf0", hf, SHORT)):
            start = time.perf_counter()
            fn(length)
            times[name].append(time.perf_counter() - start)
        log(f"  round {r}: ours {times['ours'][-1]:.3f}s  HF {times['hf'][-1]:.3f}s  "
            f"(N0={SHORT}: ours {times['ours0'][-1]:.3f}s  HF {times['hf0'][-1]:.3f}s)")

    def step_ms(side):
        return 1e3 * statistics.median((t - t0) / (n - SHORT) for t, t0 in zip(times[side], times[side + "0"]))

    peak, bandwidth = machine_peaks(dtype)
    itemsize = jnp.dtype(dtype).itemsize
    weight_bytes = matmul_params(config) * itemsize
    kv_bytes = 2 * config.num_layers * batch * config.num_kv_heads * config.head_dim * itemsize * (prompt_len + n / 2)
    compute_s = 2 * batch * matmul_params(config) / peak
    floor_ms = 1e3 * max(compute_s, weight_bytes / bandwidth)
    floor_kv_ms = 1e3 * max(compute_s, (weight_bytes + kv_bytes) / bandwidth)
    row = {
        "case": f"{shape} / {dtype} / B={batch}",
        "ours_tps": batch * n / statistics.median(times["ours"]),
        "hf_tps": batch * n / statistics.median(times["hf"]),
        "ratio": statistics.median(h / o for h, o in zip(times["hf"], times["ours"])),
        "ours_step": step_ms("ours"), "hf_step": step_ms("hf"), "floor": floor_ms, "floor_kv": floor_kv_ms,
    }
    log(f"  primejax   {row['ours_tps']:10.0f} tok/s   median {statistics.median(times['ours']):.3f}s   "
        f"step {row['ours_step']:.3f} ms   compile {compile_s:.1f}s")
    log(f"  HF         {row['hf_tps']:10.0f} tok/s   median {statistics.median(times['hf']):.3f}s   "
        f"step {row['hf_step']:.3f} ms")
    log(f"  ratio      {row['ratio']:.2f}x  (median over rounds of HF time / primejax time)")
    log(f"  machine    matmul {peak / 1e9:.1f} GFLOP/s ({dtype}), bandwidth {bandwidth / 1e9:.1f} GB/s")
    log(f"  floor      {floor_ms:.3f} ms/step (compute {1e3 * compute_s:.3f} ms, weights "
        f"{weight_bytes / 1e6:.1f} MB {1e3 * weight_bytes / bandwidth:.3f} ms); with KV read "
        f"{kv_bytes / 1e6:.1f} MB: {floor_kv_ms:.3f} ms")
    log(f"  step/floor primejax {row['ours_step'] / floor_ms:.1f}x   HF {row['hf_step'] / floor_ms:.1f}x")
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="tiny,small", help=f"comma list of {', '.join(SHAPES)}")
    parser.add_argument("--batches", default="8,64", help="comma list of batch sizes")
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128, help=f"N, must exceed N0={SHORT}")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma list of float32, bfloat16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reexec-tcmalloc", action="store_true",
                        help=f"rerun the whole script with LD_PRELOAD={allocator.TCMALLOC} TCMALLOC_RELEASE_RATE=0")
    parser.add_argument("--reexec-huge-pages", action="store_true",
                        help=f"rerun the whole script with GLIBC_TUNABLES={allocator.HUGE_PAGES}")
    args = parser.parse_args()
    shapes, dtypes = args.shapes.split(","), args.dtypes.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    if not set(shapes) <= set(SHAPES) or not set(dtypes) <= set(TORCH_DTYPES):
        parser.error(f"shapes must be among {list(SHAPES)}, dtypes among {list(TORCH_DTYPES)}")
    if args.new_tokens <= SHORT:
        parser.error(f"--new-tokens must exceed {SHORT} (the short length of the per-step measurement)")

    command = allocator.command_prefix() + "python " + shlex.join(sys.argv)
    torch.set_num_threads(os.cpu_count())
    hf_logging.disable_progress_bar()
    log(f"command: {command}")
    log(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {os.cpu_count()} cpus; "
        f"allocator: {allocator.describe()}, shared")
    rows = [run_case(s, d, b, args) for s in shapes for d in dtypes for b in batches]

    log("\n| shape / dtype / batch | ours tok/s | HF tok/s | HF time / ours | ours step ms | HF step ms "
        "| floor ms | floor+KV ms | ours step / floor |")
    log("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        log(f"| {r['case']} | {r['ours_tps']:.0f} | {r['hf_tps']:.0f} | {r['ratio']:.2f} | {r['ours_step']:.2f} "
            f"| {r['hf_step']:.2f} | {r['floor']:.3f} | {r['floor_kv']:.3f} | {r['ours_step'] / r['floor']:.1f} |")
    log(f"\ncommand: {command}")


if __name__ == "__main__":
    main()
