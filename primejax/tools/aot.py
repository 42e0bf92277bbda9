"""Ahead-of-time plan of a run on a TPU slice, compiled on a CPU host:

    python -m primejax.tools.aot --config=configs/prime_eurus_7b.py --topology=v5p-32 \\
        [--architecture=qwen2.5-math-7b] [--config.key=value ...] [--json=plan.json]

compiles the run's programs (generation, one-pass scoring, PRM update, advantages, policy update)
for the named slice with the TPU compiler of `libtpu` (`pip install "jax[tpu]"`; no TPU is needed)
and prints, per device: the resident state (policy and PRM params and optimizer states, reference,
rollout copy), each program's arguments, outputs and temporaries as XLA's memory analysis gives
them, the estimated peak against the chip's HBM, and the FLOPs of one iteration with the time they
take at 50% of the chip's peak (decoding also bounded by reading the weights and the KV cache from
HBM once per token).

The architecture comes from `model.path`'s `config.json` when that exists, else from
`--architecture` (a name of `primejax.models.architectures`). Topologies: `v4-N`, `v5p-N` (N
TensorCores, two a chip), `v5e-N` / `v5litepod-N`, `v6e-N` (N chips), or `kind:AxBxC`.
"""

from __future__ import annotations

import os

# A planning host has no TPU: keep JAX's own backend on the CPU; libtpu still compiles for the slice.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from primejax.models import ModelConfig, param_shapes  # noqa: E402
from primejax.models.architectures import ARCHITECTURES, architecture  # noqa: E402
from primejax.models.flops import forward_flops, generation_flops  # noqa: E402
from primejax.parallel import make_mesh, param_shardings  # noqa: E402
from primejax.sampling import SamplingParams, bucket  # noqa: E402
from primejax.sampling.sampler import generation_program  # noqa: E402
from primejax.train import config as config_lib  # noqa: E402
from primejax.train import setup  # noqa: E402
from primejax.train.logprobs import Sequences  # noqa: E402
from primejax.train.steps import ModelState, Placement  # noqa: E402

GIB = 2**30
# bf16 peak FLOP/s, HBM bytes and HBM bandwidth per chip (Cloud TPU documentation).
CHIPS = {
    "v4": {"peak": 275e12, "hbm": 32 * GIB, "bandwidth": 1228e9, "dims": 3, "cores_per_chip": 2},
    "v5p": {"peak": 459e12, "hbm": 95 * GIB, "bandwidth": 2765e9, "dims": 3, "cores_per_chip": 2},
    "v5e": {"peak": 197e12, "hbm": 16 * GIB, "bandwidth": 819e9, "dims": 2, "cores_per_chip": 1},
    "v6e": {"peak": 918e12, "hbm": 32 * GIB, "bandwidth": 1640e9, "dims": 2, "cores_per_chip": 1},
}
_SHAPES = {3: {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8", 256: "4x8x8",
               512: "8x8x8"},
           2: {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}}


@dataclasses.dataclass(frozen=True)
class Topology:
    """A TPU slice: chip kind, chip grid, and what the compiler needs to describe it."""

    kind: str
    shape: str

    @property
    def chips(self) -> int:
        return math.prod(int(x) for x in self.shape.split("x"))

    @property
    def spec(self) -> dict[str, float]:
        return CHIPS[self.kind]

    @property
    def name(self) -> str:
        """The slice's accelerator type as Cloud TPU names it (v5p-32, v5litepod-16, ...)."""
        count = self.chips * self.spec["cores_per_chip"]
        return f"{'v5litepod' if self.kind == 'v5e' else self.kind}-{count}"

    def devices(self) -> list:
        """The slice's devices, from libtpu's topology description."""
        from jax.experimental import topologies

        # libtpu reads these when it starts; on a host without TPUs they only quiet its warnings, and
        # let several planners run at once (libtpu otherwise holds a lock file for the TPU chips).
        os.environ.setdefault("TPU_ACCELERATOR_TYPE", self.name)
        os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

        dims = [int(x) for x in self.shape.split("x")]
        per_host = (2, 4, 1) if self.spec["dims"] == 2 and self.chips == 8 else (2, 2, 1)
        per_host = tuple(min(a, b) for a, b in zip(per_host, dims + [1] * (3 - len(dims))))
        description = topologies.get_topology_desc(
            platform="tpu", topology_name=f"{self.kind}:{self.shape}",
            chip_config_name="megacore" if self.spec["dims"] == 3 else "default",
            chips_per_host_bounds=per_host, num_slices=1)
        return list(description.devices)


def parse_topology(name: str) -> Topology:
    """`v5p-32`, `v5e-16`, `v5litepod-16`, `v6e-8`, `v4-16`, or `kind:AxBxC`; ValueError naming it otherwise."""
    name = name.strip().lower().replace("v5litepod", "v5e")
    if match := re.fullmatch(r"(v4|v5p|v5e|v6e):(\d+(?:x\d+){1,2})", name):
        kind, shape = match.groups()
        if len(shape.split("x")) != CHIPS[kind]["dims"]:
            raise ValueError(f"--topology={name!r}: a {kind} slice has {CHIPS[kind]['dims']} grid dimensions")
        return Topology(kind, shape)
    if match := re.fullmatch(r"(v4|v5p|v5e|v6e)-(\d+)", name):
        kind, count = match.group(1), int(match.group(2))
        chips = count // CHIPS[kind]["cores_per_chip"]
        shapes = _SHAPES[CHIPS[kind]["dims"]]
        if chips not in shapes:
            raise ValueError(f"--topology={name!r}: no {kind} slice of {chips} chips; sizes: "
                             + ", ".join(f"{kind}-{c * CHIPS[kind]['cores_per_chip']}" for c in shapes))
        return Topology(kind, shapes[chips])
    raise ValueError(f"--topology={name!r}: expected e.g. v5p-32, v5e-16, v6e-8, v4-16 or v5p:2x2x4")


def _bytes_per_device(tree: Any) -> int:
    """Bytes one device holds of a tree of sharded shape structs (the largest shard)."""
    return sum(math.prod(leaf.sharding.shard_shape(leaf.shape)) * jnp.dtype(leaf.dtype).itemsize
               for leaf in jax.tree.leaves(tree))


def _abstract(shapes: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes,
                        shardings)


def _abstract_params(config: ModelConfig, layout) -> Any:
    return _abstract(param_shapes(config, config.dtype), param_shardings(config, layout))


def _memory(lowered) -> dict[str, Any]:
    """XLA's memory analysis of the compiled program, per device. A program the TPU compiler refuses
    for lack of HBM gets the temporaries it asked for and the compiler's message instead."""
    try:
        stats = lowered.compile().memory_analysis()
    except jax.errors.JaxRuntimeError as error:
        needed = re.search(r"HLO temporaries \(([\d.]+)G\)", str(error))
        if "RESOURCE_EXHAUSTED" not in str(error) or needed is None:
            raise
        return {"arguments": 0, "outputs": 0, "aliased": 0, "temporaries": int(float(needed.group(1)) * GIB),
                "error": str(error).split("\n")[0]}
    return {"arguments": stats.argument_size_in_bytes, "outputs": stats.output_size_in_bytes,
            "aliased": stats.alias_size_in_bytes, "temporaries": stats.temp_size_in_bytes}


def plan(c: ml_collections.ConfigDict, model: ModelConfig, devices: list, chip: dict[str, float]) -> dict[str, Any]:
    """Compiles the run's programs for `devices` and returns the plan (see the module doc)."""
    config_lib.validate(c)
    mesh = make_mesh(c.mesh, devices)
    layouts = setup.layouts(c, mesh)
    config_lib.validate_for_mesh(c, layouts.policy.batch_shards)
    configs = setup.model_configs(c, model.replace(dtype=c.model.dtype, compute_dtype=c.model.compute_dtype,
                                                   remat=c.model.remat))
    actor_optimizer, prm_optimizer = setup.optimizers(c)
    uses_prm = config_lib.uses_prm(c)
    params = {"policy": _abstract_params(configs.policy, layouts.policy)}
    resident = {"policy params": _bytes_per_device(params["policy"])}
    shardings = {"policy": setup.state_shardings(actor_optimizer, params["policy"], configs.policy, layouts.policy)}
    states = {"policy": ModelState(params["policy"], _abstract(jax.eval_shape(actor_optimizer.init, params["policy"]),
                                                               shardings["policy"].opt_state))}
    resident["policy optimizer"] = _bytes_per_device(states["policy"].opt_state)
    if uses_prm:
        params["prm"] = _abstract_params(configs.prm, layouts.prm)
        shardings["prm"] = setup.state_shardings(prm_optimizer, params["prm"], configs.prm, layouts.prm)
        states["prm"] = ModelState(params["prm"], _abstract(jax.eval_shape(prm_optimizer.init, params["prm"]),
                                                            shardings["prm"].opt_state))
        resident["PRM params"] = _bytes_per_device(params["prm"])
        resident["PRM optimizer"] = _bytes_per_device(states["prm"].opt_state)
    if c.reference.type == "freeze":
        params["reference"] = _abstract_params(configs.reference, layouts.reference)
        resident["reference params"] = _bytes_per_device(params["reference"])
    generation_params = params["policy"]
    if setup.rollout_copies(c):
        generation_params = _abstract_params(configs.rollout, layouts.rollout)
        resident["rollout copy of the policy"] = _bytes_per_device(generation_params)

    placement = Placement(layouts.policy, policy=shardings["policy"], prm=shardings.get("prm"))
    steps = setup.build_steps(c, configs, actor_optimizer, prm_optimizer, placement)
    rows_sharding = placement.rows()
    rows, prompt_len, response_len = c.rollout.batch_size * c.rollout.n, bucket(c.data.max_prompt_length), \
        c.rollout.max_response_length

    def array(shape, dtype):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=rows_sharding)

    sequences = Sequences(array((rows, prompt_len + response_len), jnp.int32),
                          array((rows, prompt_len + response_len), jnp.int32), array((rows, response_len), jnp.int32))
    per_row, per_token = array((rows,), jnp.float32), array((rows, response_len), jnp.float32)
    round_prompts = math.ceil(c.rollout.batch_size * c.rollout.oversample_factor)
    sampling = SamplingParams(temperature=c.rollout.temperature, top_p=c.rollout.top_p, top_k=c.rollout.top_k,
                              n=c.rollout.n, max_new_tokens=bucket(response_len), eos_ids=(0,), pad_id=0)
    prompts = jax.ShapeDtypeStruct((round_prompts, prompt_len), jnp.int32,
                                   sharding=layouts.rollout.rows((round_prompts, prompt_len)))
    key = jax.ShapeDtypeStruct((), jax.eval_shape(lambda: jax.random.key(0)).dtype, sharding=layouts.policy.replicated())
    limit = jax.ShapeDtypeStruct((), jnp.int32, sharding=layouts.policy.replicated())

    scored = {"policy": states["policy"].params}
    if "reference" in params:
        scored["reference"] = params["reference"]
    if uses_prm and c.prm.schedule in ("none", "reverse"):
        scored["prm"] = states["prm"].params
    lowered = {
        "generate": generation_program.lower(generation_params, prompts, prompts, key, limit, config=configs.rollout,
                                             sampling=sampling, layout=layouts.rollout),
        "score": steps.score.lower(scored, sequences),
        "advantages": steps.advantages.lower(per_token if uses_prm else None, per_token, per_row, sequences.response_mask),
        "policy_update": steps.policy_update.lower(states["policy"], sequences, per_token,
                                                   per_token if c.actor.kl_coef else None, per_token, key),
    }
    if uses_prm and c.prm.schedule != "none":
        group = per_row if c.prm.schedule == "reverse" else None
        lowered["prm_update"] = steps.prm_update.lower(states["prm"], sequences, per_token, per_row, group, group)
    programs = {}
    for name, program in lowered.items():
        logging.info("compiling %s", name)
        programs[name] = _memory(program)

    # FLOPs of one iteration (one generation round), over the whole slice.
    passes = 3 + (1 if c.model.remat != "none" else 0)  # forward + backward (+ the recomputed forward)
    forward = forward_flops(configs.policy, rows, prompt_len, response_len)
    flops = {"generate": generation_flops(configs.rollout, round_prompts, c.rollout.n, prompt_len, response_len),
             "score": len(scored) * forward, "policy_update": c.actor.epochs * passes * forward}
    if "prm_update" in programs:
        flops["prm_update"] = passes * forward + (forward if c.prm.schedule == "before" else 0)
    chips = len(devices)
    seconds = {name: value / chips / (0.5 * chip["peak"]) for name, value in flops.items()}
    # Decoding reads every weight shard and, on average, half the KV cache once per token.
    rollout = configs.rollout
    cache = jax.ShapeDtypeStruct(
        (rows, rollout.num_kv_heads, prompt_len + response_len // 2, rollout.head_dim), rollout.compute_dtype,
        sharding=layouts.rollout.sharding(("batch", "act_kv_heads", "cache_len", "head_dim"),
                                          (rows, rollout.num_kv_heads, prompt_len + response_len, rollout.head_dim)))
    per_token_bytes = _bytes_per_device(generation_params) + 2 * rollout.num_layers * _bytes_per_device(cache)
    decode_bound = response_len * per_token_bytes / chip["bandwidth"]
    seconds["generate"] = max(seconds["generate"], decode_bound)
    state = sum(resident.values())
    peak = state + max(p["temporaries"] + p["outputs"] - p["aliased"] for p in programs.values())
    return {"mesh": dict(mesh.shape), "devices": chips, "hbm_per_device": chip["hbm"], "resident": resident,
            "programs": programs, "peak_per_device": peak,
            "fits": peak <= chip["hbm"] and not any("error" in p for p in programs.values()), "flops": flops,
            "seconds_at_50pct_mfu": seconds, "decode_bandwidth_bound_seconds": decode_bound,
            "iteration_seconds": sum(seconds.values())}


def report(result: dict[str, Any], topology: str, model: str) -> str:
    """The plan as text."""
    lines = [f"plan for {model} on {topology}: mesh {result['mesh']} ({result['devices']} devices, "
             f"{result['hbm_per_device'] / GIB:.0f} GiB HBM each)", "", "resident state per device:"]
    lines += [f"  {name:28s} {value / GIB:8.3f} GiB" for name, value in result["resident"].items()]
    lines += ["", f"  {'program':16s} {'arguments':>10s} {'outputs':>10s} {'aliased':>10s} {'temporaries':>12s}"
              "   (GiB per device, XLA memory analysis)"]
    for name, m in result["programs"].items():
        if "error" in m:
            lines.append(f"  {name:16s} does not fit: {m['temporaries'] / GIB:.2f} GiB of temporaries ({m['error']})")
            continue
        lines.append(f"  {name:16s} " + " ".join(f"{m[k] / GIB:10.3f}" for k in ("arguments", "outputs", "aliased"))
                     + f" {m['temporaries'] / GIB:12.3f}")
    lines += ["", f"estimated peak per device: {result['peak_per_device'] / GIB:.2f} GiB of "
              f"{result['hbm_per_device'] / GIB:.0f} GiB -> {'fits' if result['fits'] else 'DOES NOT FIT'}",
              "  (resident state + the largest program's temporaries and new outputs)", "",
              "one iteration (one generation round), FLOPs over the slice and time at 50% MFU:"]
    for name, value in result["flops"].items():
        lines.append(f"  {name:16s} {value / 1e15:10.1f} PFLOP {result['seconds_at_50pct_mfu'][name]:10.1f} s")
    lines.append(f"  (generate: the larger of the FLOP time and {result['decode_bandwidth_bound_seconds']:.1f} s of "
                 "reading weights and KV cache per token)")
    lines.append(f"  total {result['iteration_seconds']:.1f} s per iteration")
    return "\n".join(lines)


_CONFIG = config_flags.DEFINE_config_file("config", None, "a get_config() file", lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", None, "the TPU slice, e.g. v5p-32")
_ARCHITECTURE = flags.DEFINE_string("architecture", None, f"one of {', '.join(sorted(ARCHITECTURES))}, when "
                                    "model.path has no config.json")
_JSON = flags.DEFINE_string("json", None, "also write the plan as JSON here")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if _CONFIG.value is None or _TOPOLOGY.value is None:
        raise app.UsageError("--config and --topology are required")
    c = _CONFIG.value
    topology = parse_topology(_TOPOLOGY.value)
    path = c.model.path
    if path and os.path.isfile(os.path.join(path, "config.json")):
        model, name = ModelConfig.from_hf_dir(path), path
    elif _ARCHITECTURE.value:
        model, name = architecture(_ARCHITECTURE.value), _ARCHITECTURE.value
    else:
        raise app.UsageError(f"config.model.path={path!r} has no config.json: name --architecture "
                             f"({', '.join(sorted(ARCHITECTURES))})")
    if not c.model.path or not c.data.train_files:
        # Planning needs no weights or data: stand-ins satisfy the run's own checks.
        c = ml_collections.ConfigDict(c.to_dict())
        c.model.path, c.data.train_files = c.model.path or name, c.data.train_files or "planning.jsonl"
    try:
        devices = topology.devices()
    except Exception as error:  # libtpu missing or too old for this slice
        sys.exit(f"cannot describe {_TOPOLOGY.value} with libtpu ({error}); install it: pip install 'jax[tpu]'")
    result = plan(c, model, devices, topology.spec)
    print(report(result, _TOPOLOGY.value, name))
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump({"topology": _TOPOLOGY.value, "model": name, **result}, f, indent=2, default=str)


if __name__ == "__main__":
    app.run(main)
