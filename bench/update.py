"""PRIME update speed: primejax's step functions against the same work in PyTorch eager, same process.

What it measures, per dtype:
  * One PRIME update on a rollout batch of B rows of P prompt + R response positions: the log-probs
    of the policy (with its entropy), the reference and the PRM in one pass each; one PRM step
    (CE of sigma(beta * sum_t q) against the outcome, AdamW after clipping at 10); one policy step
    (PPO clip, seq-mean-token-mean, AdamW with weight decay 0.01 after clipping at 1). Each step
    is one optimizer step on the whole batch (mini-batch = micro-batch = B).
  * primejax: `make_steps` of `primejax.train.steps` (score, prm_update, policy_update as the
    trainer jits them), optimizers from `make_optimizer` on the trainer's default `prm` and
    `actor` sections; scoring makes `--chunk` response positions of logits at once, and the update
    steps make all of them at once and keep them for their backward pass (`keep_logits`,
    B * R * V * 4 bytes, as PyTorch keeps its [B, R, V] logits) unless `--remake-logits` asks them
    to remake them `--chunk` positions at a time.
    They compile with the XLA options of the trainer's default `cpu_products` ("auto": oneDNN
    products in float32 on x86-64, YNNPACK in bfloat16; `primejax.train.steps.cpu_compiler_options`), and
    the update steps run the layers as its default `update_layers` says ("auto": unrolled on CPU).
  * primejax packed (`packing.enabled`): the same steps on the real tokens only, in streams of the
    sizes the trainer's loop would choose (`primejax.train.packing`, the default buckets); its
    GFLOP/s counts the streams' tokens and scored positions. Both primejax sides run every round.
  * PyTorch: three `transformers` Qwen2ForCausalLM loaded from the same weights (saved with
    `save_hf_checkpoint`), sdpa attention, eager. Scoring runs under no_grad with
    `logits_to_keep = R + 1`, so both sides apply the output head to the response only; then
    log_softmax and gather (and the entropy of the policy). The PRM and policy steps are a
    forward and backward each, `clip_grad_norm_` and `torch.optim.AdamW` (its default kernel).
  * The batch: prompts left-padded to P (lengths P/2..P), responses right-padded to R (lengths
    R/2..R), random tokens; position ids are the positions within each row's real tokens on both
    sides. Outcome labels acc in {0, 1} and advantages (one per row, spread over its tokens) are
    random and shared.
  * Warm-up: one update per side (primejax compiles; compile time = first update minus a
    steady-state one). Then rounds, each timing one primejax update and one PyTorch update.
    Reported: median time and tokens/s (B * (P + R) / time) per side, the median over rounds of
    the per-round ratio PyTorch time / primejax time, and the same per phase.
  * Agreement: the first update's log-probs of both sides (max abs difference) and both sides'
    losses of the first PRM and policy steps are printed, so that the two do the same work.
  * FLOPs, counted analytically for the work both sides do (`primejax.models.flops.forward_flops`;
    with `--remake-logits`, the primejax head's recomputation in the backward pass is not counted):
        forward = 2 * B * (P + R) * layers * kernel params per layer      (q, k, v, o, gate, up, down)
                + 2 * B * R * vocab * hidden                              (output head on the response)
                + 4 * B * (P + R)^2 * heads * head_dim * layers           (scores and weighted values)
        update  = 3 forwards (scoring) + 2 * 3 forwards (a backward pass costs 2 forwards)
    achieved GFLOP/s = update FLOPs / median update time. The matmul peak is measured in every round,
    right after its updates: the faster of a jitted jnp.dot (float32 accumulation, the steps' XLA
    options) and torch.mm of two 2048 x 2048 matrices in the dtype. "% of peak" is the median over
    rounds of the round's GFLOP/s over its peak, so a machine whose speed swings between rounds
    compares each update with the peak of its moment.
  * Both sides share the process and so the allocator; `--reexec-tcmalloc` reruns the script with
    LD_PRELOAD set to tcmalloc (freed memory kept in the process), `--reexec-huge-pages` with glibc
    malloc asked for transparent huge pages (bench/allocator.py says why this matters for XLA on CPU).

Usage (from the repository root):
    python bench/update.py [--rounds 5] [--layers 8] [--dtypes float32,bfloat16] [--remake-logits] [--reexec-tcmalloc]
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
import torch.nn.functional as F
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from primejax.models import ModelConfig, init_params, positions_from_segment_ids, save_hf_checkpoint
from primejax.models.flops import forward_flops, packed_forward_flops
from primejax.train.config import base_config
from primejax.train.logprobs import Sequences
from primejax.train.optim import make_optimizer
from primejax.train.packing import capacity
from primejax.train.steps import (AdvantageOptions, ModelState, PolicyOptions, PrmOptions, cpu_compiler_options,
                                  make_steps, unrolls_update_layers)

SMALL = {"hidden_size": 512, "intermediate_size": 1536, "num_heads": 8, "num_kv_heads": 4, "head_dim": 64}
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
MODELS = ("policy", "reference", "prm")
PHASES = ("score", "prm", "policy")


def log(*args):
    print(*args, flush=True)


def median_time(fn, repeats=3):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peaks(dtype):
    """(jnp.dot FLOP/s, torch.mm FLOP/s) on two 2048 x 2048 matrices of `dtype`, measured now.

    jnp.dot accumulates in float32, as primejax's products do: with bfloat16 operands XLA on CPU
    multiplies several times faster into a float32 result than into a bfloat16 one. It compiles
    with the XLA options the steps compile with, so it multiplies with the same library.
    """
    n = 2048
    a = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
    options = cpu_compiler_options(base_config().cpu_products, dtype, jax.default_backend())
    dot = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32), compiler_options=options)
    t = torch.randn(n, n, dtype=TORCH_DTYPES[dtype])
    return (2 * n**3 / median_time(lambda: dot(a, a).block_until_ready()),
            2 * n**3 / median_time(lambda: torch.mm(t, t)))


def make_batch(config, args):
    """Numpy arrays of one rollout batch: tokens, segment ids, response mask, acc, advantages."""
    rng = np.random.default_rng(args.seed)
    b, p, r = args.batch, args.prompt_len, args.response_len
    prompt_lengths = rng.integers(p // 2, p + 1, b)
    response_lengths = rng.integers(r // 2, r + 1, b)
    prompt_mask = (np.arange(p) >= p - prompt_lengths[:, None]).astype(np.int32)
    response_mask = (np.arange(r) < response_lengths[:, None]).astype(np.int32)
    segment_ids = np.concatenate([prompt_mask, response_mask], axis=1)
    tokens = rng.integers(1, config.vocab_size, (b, p + r)).astype(np.int32) * segment_ids
    acc = rng.integers(0, 2, b).astype(np.float32)
    advantages = np.repeat(rng.standard_normal((b, 1)).astype(np.float32), r, axis=1) * response_mask
    return {"tokens": tokens, "segment_ids": segment_ids, "response_mask": response_mask, "acc": acc,
            "advantages": advantages}


class JaxUpdate:
    """One PRIME update through the trainer's jitted step functions, on the padded rows or packed
    (`packed`: the capacity the trainer's loop would choose, `primejax.train.packing`)."""

    def __init__(self, config, params, data, args, packed):
        c = base_config()
        batch = args.batch
        prm_optimizer = make_optimizer(c.prm, 1000)
        policy_optimizer = make_optimizer(c.actor, 1000)
        self.steps = make_steps(
            policy_config=config, prm_config=config, reference_config=config,
            policy_optimizer=policy_optimizer, prm_optimizer=prm_optimizer,
            prm_options=PrmOptions(loss="ce", beta=c.prm.beta, mini_batch=batch, micro_batch=batch),
            advantage_options=AdvantageOptions(),
            policy_options=PolicyOptions(loss="ppo_clip", agg=c.actor.loss_agg, mini_batch=batch, micro_batch=batch,
                                         shuffle=False),
            chunk=args.chunk, keep_logits=not args.remake_logits,
            unroll_update_layers=unrolls_update_layers(c.update_layers, jax.default_backend()),
            compiler_options=cpu_compiler_options(c.cpu_products, config.compute_dtype, jax.default_backend()))
        # One whole-batch micro-batch in every step, rows in order: one capacity serves all three.
        self.capacity = capacity(data["segment_ids"], data["response_mask"], np.arange(batch)[None], micro_batch=batch,
                                 groups=1, buckets=c.packing.buckets) if packed else None
        self.reference = params["reference"]
        # Copies: the updates donate their states, and both primejax sides start from the same weights.
        policy, prm = (jax.tree.map(jnp.copy, params[name]) for name in ("policy", "prm"))
        self.policy = ModelState(policy, policy_optimizer.init(policy))
        self.prm = ModelState(prm, prm_optimizer.init(prm))
        self.sequences = Sequences(jnp.asarray(data["tokens"]), jnp.asarray(data["segment_ids"]),
                                   jnp.asarray(data["response_mask"]))
        self.acc, self.advantages = jnp.asarray(data["acc"]), jnp.asarray(data["advantages"])
        self.key = jax.random.key(args.seed)

    def run(self):
        """Runs one update; returns ({phase: seconds}, scores, prm loss, policy loss)."""
        times = {}
        start = time.perf_counter()
        scores = jax.block_until_ready(self.steps.score(
            {"policy": self.policy.params, "reference": self.reference, "prm": self.prm.params}, self.sequences,
            capacity=self.capacity))
        times["score"] = time.perf_counter() - start
        start = time.perf_counter()
        self.prm, _, prm_metrics = jax.block_until_ready(self.steps.prm_update(
            self.prm, self.sequences, scores["reference_log_probs"], self.acc, None, None, capacity=self.capacity))
        times["prm"] = time.perf_counter() - start
        start = time.perf_counter()
        self.policy, policy_metrics = jax.block_until_ready(self.steps.policy_update(
            self.policy, self.sequences, scores["policy_log_probs"], scores["reference_log_probs"], self.advantages,
            self.key, capacity=self.capacity))
        times["policy"] = time.perf_counter() - start
        return times, scores, float(prm_metrics["prm/loss"]), float(policy_metrics["actor/pg_loss"])


class TorchUpdate:
    """The same update with `transformers` models in PyTorch eager."""

    def __init__(self, config, params, data, args, dtype):
        self.models = {}
        for name in MODELS:
            with tempfile.TemporaryDirectory() as tmp:
                save_hf_checkpoint(tmp, params[name], config)
                self.models[name] = AutoModelForCausalLM.from_pretrained(tmp, dtype=TORCH_DTYPES[dtype])
        self.models["reference"].eval().requires_grad_(False)
        c = base_config()
        self.beta, self.clip_ratio = c.prm.beta, c.actor.clip_ratio
        self.optimizers = {
            "prm": (torch.optim.AdamW(self.models["prm"].parameters(), lr=c.prm.lr, betas=(c.prm.b1, c.prm.b2),
                                      eps=c.prm.eps, weight_decay=c.prm.weight_decay), c.prm.grad_clip),
            "policy": (torch.optim.AdamW(self.models["policy"].parameters(), lr=c.actor.lr,
                                         betas=(c.actor.b1, c.actor.b2), eps=c.actor.eps,
                                         weight_decay=c.actor.weight_decay), c.actor.grad_clip),
        }
        self.response_len = data["response_mask"].shape[1]
        positions = np.asarray(positions_from_segment_ids(jnp.asarray(data["segment_ids"])))
        self.inputs = {"input_ids": torch.from_numpy(data["tokens"].astype(np.int64)),
                       "attention_mask": torch.from_numpy(data["segment_ids"].astype(np.int64)),
                       "position_ids": torch.from_numpy(positions.astype(np.int64))}
        self.targets = self.inputs["input_ids"][:, -self.response_len:]
        self.mask = torch.from_numpy(data["response_mask"].astype(np.float32))
        self.acc = torch.from_numpy(data["acc"])
        self.advantages = torch.from_numpy(data["advantages"])

    def log_probs(self, model, with_entropy=False):
        """(lp [B, R] float32, entropy [B, R] or None) of the response tokens."""
        logits = model(**self.inputs, logits_to_keep=self.response_len + 1).logits[:, :-1].float()
        log_softmax = torch.log_softmax(logits, dim=-1)
        lp = log_softmax.gather(-1, self.targets[..., None])[..., 0]
        entropy = -(log_softmax.exp() * log_softmax).sum(-1) if with_entropy else None
        return lp, entropy

    def step(self, name, loss):
        optimizer, clip = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.models[name].parameters(), clip)
        optimizer.step()

    def run(self):
        """Runs one update; returns ({phase: seconds}, scores, prm loss, policy loss)."""
        times = {}
        start = time.perf_counter()
        with torch.no_grad():
            policy_lp, entropy = self.log_probs(self.models["policy"], with_entropy=True)
            scores = {"policy_log_probs": policy_lp, "entropy": entropy,
                      "reference_log_probs": self.log_probs(self.models["reference"])[0],
                      "prm_log_probs": self.log_probs(self.models["prm"])[0]}
        times["score"] = time.perf_counter() - start

        start = time.perf_counter()
        q = self.log_probs(self.models["prm"])[0] - scores["reference_log_probs"]
        reward = self.beta * (q * self.mask).sum(-1)
        prm_loss = F.binary_cross_entropy_with_logits(reward, self.acc)
        self.step("prm", prm_loss)
        times["prm"] = time.perf_counter() - start

        start = time.perf_counter()
        ratio = torch.exp(self.log_probs(self.models["policy"])[0] - scores["policy_log_probs"])
        losses = torch.maximum(-self.advantages * ratio,
                               -self.advantages * ratio.clamp(1 - self.clip_ratio, 1 + self.clip_ratio))
        per_sequence = (losses * self.mask).sum(-1) / self.mask.sum(-1).clamp(min=1)
        policy_loss = per_sequence.mean()
        self.step("policy", policy_loss)
        times["policy"] = time.perf_counter() - start
        return times, scores, prm_loss.item(), policy_loss.item()


def run_case(dtype, args):
    """Benchmarks one dtype; returns the summary row as a dict."""
    config = ModelConfig(model_type="qwen2", vocab_size=args.vocab, num_layers=args.layers, **SMALL, dtype=dtype,
                         compute_dtype=dtype)
    keys = jax.random.split(jax.random.key(args.seed), len(MODELS))
    params = {name: init_params(config, key, dtype=dtype) for name, key in zip(MODELS, keys)}
    data = make_batch(config, args)
    tokens = args.batch * (args.prompt_len + args.response_len)
    log(f"\n=== {dtype}: Qwen2 vocab {config.vocab_size}, hidden {config.hidden_size}, mlp "
        f"{config.intermediate_size}, {config.num_layers} layers, {config.num_heads} heads / {config.num_kv_heads} kv "
        f"heads x {config.head_dim}; {config.num_params / 1e6:.1f}M params per model; batch {args.batch} x "
        f"({args.prompt_len} prompt + {args.response_len} response) = {tokens} tokens, "
        f"{int(data['segment_ids'].sum())} real; logits chunk {args.chunk} positions, "
        + ("remade by chunk in the backward pass" if args.remake_logits else
           "in scoring; the updates make all at once and keep them for the backward pass"))
    sides = {"padded": JaxUpdate(config, params, data, args, packed=False),
             "packed": JaxUpdate(config, params, data, args, packed=True),
             "torch": TorchUpdate(config, params, data, args, dtype)}
    del params
    flops = {"padded": 9 * forward_flops(config, args.batch, args.prompt_len, args.response_len)}
    flops["torch"] = flops["padded"]
    cap = sides["packed"].capacity
    flops["packed"] = 9 * packed_forward_flops(config, args.batch, args.prompt_len + args.response_len,
                                               tokens=cap.groups * cap.tokens, scored=cap.groups * cap.responses)
    log(f"  packed     streams of {cap.tokens} token slots ({int(data['segment_ids'].sum())} real tokens) and "
        f"{cap.responses} response slots ({int(data['response_mask'].sum())} real)")

    compile_s, first = {}, {}
    for name in ("padded", "packed"):
        start = time.perf_counter()
        first[name] = sides[name].run()
        compile_s[name] = time.perf_counter() - start - sum(sides[name].run()[0].values())
    first["torch"] = sides["torch"].run()
    mask = data["response_mask"].astype(bool)
    for name in ("padded", "packed"):
        for score in ("policy_log_probs", "reference_log_probs", "prm_log_probs", "entropy"):
            diff = np.abs(np.asarray(first[name][1][score]) - first["torch"][1][score].numpy())[mask].max()
            log(f"  agreement  {name} {score}: max |primejax - torch| = {diff:.2e}")
        log(f"  agreement  {name} first PRM loss {first[name][2]:.6f} vs {first['torch'][2]:.6f}; first policy loss "
            f"{first[name][3]:.6f} vs {first['torch'][3]:.6f}")

    times, peaks = {side: [] for side in sides}, []
    for r in range(args.rounds):
        for side, update in sides.items():
            times[side].append(update.run()[0])
        peaks.append(matmul_peaks(dtype))
        log(f"  round {r}: " + "   ".join(
            f"{side} {sum(t[-1].values()):.2f}s (" + ", ".join(f"{p} {t[-1][p]:.2f}" for p in PHASES) + ")"
            for side, t in times.items()) + f"   peak {max(peaks[-1]) / 1e9:.1f} GFLOP/s")

    def total(side):
        return [sum(t.values()) for t in times[side]]

    def ratio(side, phase=None):
        pairs = zip(times["torch"], times[side])
        if phase is None:
            return statistics.median(sum(t.values()) / sum(o.values()) for t, o in pairs)
        return statistics.median(t[phase] / o[phase] for t, o in pairs)

    def share_of_peak(side):
        return statistics.median(flops[side] / t / max(peak) for t, peak in zip(total(side), peaks))

    jax_peak, torch_peak = (statistics.median(p[i] for p in peaks) for i in (0, 1))
    row = {"dtype": dtype, "peak": statistics.median(map(max, peaks)), "sides": {}}
    for side in sides:
        seconds = statistics.median(total(side))
        row["sides"][side] = {"s": seconds, "tps": tokens / seconds, "gflops": flops[side] / seconds / 1e9,
                              "share": share_of_peak(side)}
        if side != "torch":
            row["sides"][side] |= {"ratio": ratio(side), "phases": {p: ratio(side, p) for p in PHASES}}
    for side, name in (("padded", "primejax, padded"), ("packed", "primejax, packed"), ("torch", "PyTorch")):
        r = row["sides"][side]
        phases = ", ".join(f"{p} {statistics.median(t[p] for t in times[side]):.2f}s" for p in PHASES)
        log(f"  {name:17s}{r['tps']:9.0f} tok/s   median {r['s']:.2f}s ({phases})   "
            f"{r['gflops']:.1f} GFLOP/s, {100 * r['share']:.0f}% of peak")
    for side in ("padded", "packed"):
        r = row["sides"][side]
        log(f"  ratio, {side}  {r['ratio']:.2f}x tokens/s (median over rounds of PyTorch time / primejax time); "
            "per phase: " + ", ".join(f"{p} {v:.2f}x" for p, v in r["phases"].items()))
    log(f"  machine    matmul peak {row['peak'] / 1e9:.1f} GFLOP/s ({dtype}, median over rounds; jnp.dot "
        f"{jax_peak / 1e9:.1f}, torch.mm {torch_peak / 1e9:.1f}); update {flops['padded'] / 1e12:.2f} TFLOP padded, "
        f"{flops['packed'] / 1e12:.2f} packed; primejax compile {compile_s['padded']:.1f}s padded, "
        f"{compile_s['packed']:.1f}s packed")
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--response-len", type=int, default=192)
    parser.add_argument("--chunk", type=int, default=32, help="response positions whose logits exist at once")
    parser.add_argument("--remake-logits", action="store_true",
                        help="update steps remake each chunk's logits in the backward pass instead of keeping them")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma list of float32, bfloat16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reexec-tcmalloc", action="store_true",
                        help=f"rerun the whole script with LD_PRELOAD={allocator.TCMALLOC} TCMALLOC_RELEASE_RATE=0")
    parser.add_argument("--reexec-huge-pages", action="store_true",
                        help=f"rerun the whole script with GLIBC_TUNABLES={allocator.HUGE_PAGES}")
    args = parser.parse_args()
    dtypes = args.dtypes.split(",")
    if not set(dtypes) <= set(TORCH_DTYPES):
        parser.error(f"dtypes must be among {list(TORCH_DTYPES)}")

    command = allocator.command_prefix() + "python " + shlex.join(sys.argv)
    torch.set_num_threads(os.cpu_count())
    hf_logging.disable_progress_bar()
    log(f"command: {command}")
    log(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {os.cpu_count()} cpus; "
        f"allocator: {allocator.describe()}, shared")
    rows = [run_case(d, args) for d in dtypes]

    log("\n| dtype | primejax | tok/s | PyTorch tok/s | ratio | score | PRM step | policy step "
        "| GFLOP/s | PyTorch GFLOP/s | matmul peak GFLOP/s | % of peak | PyTorch % of peak |")
    log("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        theirs = r["sides"]["torch"]
        for side in ("padded", "packed"):
            ours = r["sides"][side]
            log(f"| {r['dtype']} | {side} | {ours['tps']:.0f} | {theirs['tps']:.0f} | {ours['ratio']:.2f} | "
                + " | ".join(f"{ours['phases'][p]:.2f}" for p in PHASES)
                + f" | {ours['gflops']:.1f} | {theirs['gflops']:.1f} | {r['peak'] / 1e9:.1f} | "
                f"{100 * ours['share']:.0f}% | {100 * theirs['share']:.0f}% |")
    log(f"\ncommand: {command}")


if __name__ == "__main__":
    main()
