"""The paper's comparisons in miniature, on the built-in task (primejax.experiments.replication).

    python bench/replicate.py [--seeds 3] [--steps 100] [--variants all] [--workdir replication_runs]

makes the SFT start once (the demo's data and model, seed 0), trains the PRM of `prime_frozen`
offline for each seed, then runs every variant for every seed from that start with the same
rollout budget (`--steps` iterations of 16 prompts × 4 samples), seed-major so that a stopped run
has every variant for its first seeds. A rerun skips the runs that finished. It writes to `--out`
(default bench/replication/): results.json (every run's curves and end values), tables.md (the
tables of bench/REPLICATION.md) and the plots; and prints the tables.

`--smoke` shrinks everything (a tiny model, a few steps) to check that every variant runs.
"""

import argparse
import json
import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from primejax.experiments.replication import (  # noqa: E402
    VARIANTS,
    apply,
    offline_prm_overrides,
    run_summary,
    steps_to_reach,
)

# JAX and the trainer are imported in the functions that use them: every verifier worker re-imports this
# script (multiprocessing does so with a script's main module), and those imports took 2.5 s a worker.
DEMO_CONFIG = os.path.join(ROOT, "configs", "demo.py")
SMOKE_CONFIG = os.path.join(ROOT, "tests", "train_config.py")
# The pairs the paper compares (§4.2, §5.1, §5.3, App. B.2): (without, with).
PAIRS = [("rloo_outcome", "prime"), ("reinforce", "reinforce_prime"), ("grpo", "grpo_prime"),
         ("rloo_outcome", "prime_value"), ("prime_frozen", "prime"), ("prime_before", "prime")]


def log(*args):
    print(*args, flush=True)


def base_config(args):
    from primejax.train.config import load_config

    config = load_config(args.base_config)
    config.demo.seed = 0
    config.log.progress = False
    if args.smoke:
        config.steps, config.eval.every = args.steps, args.steps
    else:
        config.steps, config.eval.every = args.steps, args.eval_every
    return config


def offline_prm(start, seed, workdir, steps):
    """Trains the PRM with the policy held at the SFT model; returns the directory of its export."""
    from primejax.train.export import export_model
    from primejax.train.loop import Trainer

    path = os.path.join(workdir, "prm")
    if not os.path.isfile(os.path.join(path, "config.json")):
        config = apply(start, {**offline_prm_overrides(steps), "seed": seed})
        trainer = Trainer(config, workdir)
        trainer.run()
        export_model(path, trainer.state["prm"].params, trainer.configs.prm, trainer.tokenizer)
    return path


def run(config, workdir):
    """Trains one variant and seed unless it finished before; returns its wall time in seconds."""
    from primejax.train.loop import Trainer

    done = os.path.join(workdir, "wall_seconds.json")
    if os.path.isfile(done):
        with open(done) as f:
            return json.load(f)
    shutil.rmtree(workdir, ignore_errors=True)
    start = time.perf_counter()
    Trainer(config, workdir).run()
    seconds = time.perf_counter() - start
    with open(done, "w") as f:
        json.dump(seconds, f)
    return seconds


def mean_std(values, scale=1.0, digits=3, signed=False):
    values = np.asarray([v for v in values if v is not None], np.float64) * scale
    if not len(values):
        return "–"
    sign = "+" if signed else ""
    return f"{values.mean():{sign}.{digits}f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.{digits}f}"


def tables(results, window):
    """The report's tables (markdown) from the runs' summaries."""
    lines = ["| variant | final training reward | held-out pass@1, start → final | PRM accuracy, first → last "
             f"{window} steps | s / iteration | PRM update s / iteration |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for variant, runs in results.items():
        runs = list(runs.values())
        prm_first = [np.mean(r["prm_accuracy"][:window]) if r["prm_accuracy"] else None for r in runs]
        prm_last = [np.mean(r["prm_accuracy"][-window:]) if r["prm_accuracy"] else None for r in runs]
        prm = "–" if prm_first[0] is None else f"{mean_std(prm_first)} → {mean_std(prm_last)}"
        lines.append(f"| {variant} | {mean_std([r['final_reward'] for r in runs])} | "
                     f"{mean_std([r['start_pass_at_1'] for r in runs], 100, 1)} → "
                     f"{mean_std([r['final_pass_at_1'] for r in runs], 100, 1)} | {prm} | "
                     f"{mean_std([r['seconds_per_step'] for r in runs], digits=2)} | "
                     f"{mean_std([r['prm_seconds_per_step'] for r in runs], digits=2)} |")
    lines += ["", "| comparison (without → with) | final training reward, with − without | "
              "held-out pass@1, with − without (points) |", "| --- | ---: | ---: |"]
    for without, with_ in PAIRS:
        if without not in results or with_ not in results:
            continue
        seeds = sorted(set(results[without]) & set(results[with_]))
        rewards = [results[with_][s]["final_reward"] - results[without][s]["final_reward"] for s in seeds]
        passes = [results[with_][s]["final_pass_at_1"] - results[without][s]["final_pass_at_1"] for s in seeds]
        lines.append(f"| {without} → {with_} | {mean_std(rewards, signed=True)} | "
                     f"{mean_std(passes, 100, 1, signed=True)} |")
    if "rloo_outcome" in results and "prime" in results:
        seeds = sorted(set(results["rloo_outcome"]) & set(results["prime"]))
        target = np.mean([results["rloo_outcome"][s]["final_reward"] for s in seeds])
        steps = len(results["prime"][seeds[0]]["reward"])
        reached = [steps_to_reach(np.asarray(results["prime"][s]["reward"]), target, window) for s in seeds]
        ratio = [r / steps if r is not None else None for r in reached]
        overhead = [results["prime"][s]["seconds_per_step"] / results["rloo_outcome"][s]["seconds_per_step"] - 1
                    for s in seeds]
        lines += ["", f"Outcome-only RLOO's final training reward (mean of its last {window} steps, over seeds): "
                  f"{target:.3f}. PRIME's smoothed training reward ({window}-step trailing mean) first reaches it "
                  f"at step {', '.join('never' if r is None else str(r) for r in reached)} of {steps} "
                  f"(per seed): a fraction {mean_std(ratio, digits=2)} of the steps (the paper: 0.4). Time per "
                  f"iteration of PRIME against outcome-only RLOO: {mean_std(overhead, 100, 1, signed=True)}% "
                  "(the paper: +24%)."]
    return "\n".join(lines)


def plots(results, window, out):
    """PNG plots of the curves next to the report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from primejax.experiments.replication import smoothed

    def band(ax, variant, key, label=None):
        curves = np.asarray([smoothed(np.asarray(r[key]), window) for r in results[variant].values()])
        steps = np.arange(1, curves.shape[1] + 1)
        ax.plot(steps, curves.mean(0), label=label or variant)
        ax.fill_between(steps, curves.mean(0) - curves.std(0), curves.mean(0) + curves.std(0), alpha=0.2)

    figure, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for variant in ("rloo_outcome", "prime", "prime_before", "prime_frozen"):
        if variant in results:
            band(axes[0], variant, "reward")
    axes[0].set(title=f"training outcome reward ({window}-step mean; band: ± std over seeds)", xlabel="iteration")
    axes[0].legend()
    for variant in ("prime", "prime_before", "prime_frozen"):
        if variant in results and next(iter(results[variant].values()))["prm_accuracy"]:
            band(axes[1], variant, "prm_accuracy")
    axes[1].set(title="PRM pairwise accuracy on each new batch", xlabel="iteration")
    axes[1].legend()
    names = list(results)
    finals = [[r["final_pass_at_1"] * 100 for r in results[v].values()] for v in names]
    starts = np.mean([r["start_pass_at_1"] * 100 for v in names for r in results[v].values()])
    axes[2].bar(range(len(names)), [np.mean(f) for f in finals], yerr=[np.std(f) for f in finals], capsize=3)
    axes[2].axhline(starts, color="gray", linestyle="--", label="SFT start")
    axes[2].set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes[2].set(title="held-out pass@1 (%) at the end")
    axes[2].legend()
    figure.tight_layout()
    figure.savefig(os.path.join(out, "curves.png"), dpi=110)

    figure, axes = plt.subplots(1, 4, figsize=(16, 3.8), sharey=True)
    for ax, (without, with_) in zip(axes, PAIRS[:4]):
        for variant in (without, with_):
            if variant in results:
                band(ax, variant, "reward")
        ax.set(title=f"{without} vs {with_}", xlabel="iteration")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("training outcome reward")
    figure.tight_layout()
    figure.savefig(os.path.join(out, "algorithms.png"), dpi=110)


def main():
    import jax

    from primejax.train.demo import prepare_demo

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--offline-prm-steps", type=int, default=30)
    parser.add_argument("--window", type=int, default=10, help="steps averaged for end values and smoothing")
    parser.add_argument("--variants", default="all", help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--workdir", default=os.path.join(ROOT, "replication_runs"))
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "replication"))
    parser.add_argument("--base-config", default=DEMO_CONFIG)
    parser.add_argument("--smoke", action="store_true", help="tiny model and task, a few steps: does every variant run")
    args = parser.parse_args()
    variants = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    if args.smoke:
        args.base_config, args.window, args.offline_prm_steps = SMOKE_CONFIG, 1, 1
    jax.config.update("jax_compilation_cache_dir", os.path.join(ROOT, ".cache", "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    os.makedirs(args.out, exist_ok=True)

    clock = time.perf_counter()
    start = prepare_demo(base_config(args), args.workdir)
    log(f"SFT start ready ({time.perf_counter() - clock:.0f} s): {start.model.path}")
    wall = {}
    for seed in range(args.seeds):
        for variant in variants:
            overrides = {**VARIANTS[variant], "seed": seed}
            if variant == "prime_frozen":
                prm_dir = os.path.join(args.workdir, "offline_prm", str(seed))
                overrides["prm.path"] = offline_prm(start, seed, prm_dir, args.offline_prm_steps)
            workdir = os.path.join(args.workdir, variant, str(seed))
            wall[variant, seed] = run(apply(start, overrides), workdir)
            summary = run_summary(workdir, args.window)
            log(f"{variant} seed {seed}: {wall[variant, seed]:.0f} s, final reward {summary['final_reward']:.3f}, "
                f"pass@1 {summary['start_pass_at_1']:.3f} -> {summary['final_pass_at_1']:.3f}")
    results = {v: {s: run_summary(os.path.join(args.workdir, v, str(s)), args.window) | {"wall_seconds": wall[v, s]}
                   for s in range(args.seeds)} for v in variants}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    text = tables(results, args.window)
    with open(os.path.join(args.out, "tables.md"), "w") as f:
        f.write(text + "\n")
    plots(results, args.window, args.out)
    log(text)
    log(f"\nall runs: {(time.perf_counter() - clock) / 60:.1f} min (this invocation); command: python "
        + " ".join(sys.argv))


if __name__ == "__main__":
    main()
