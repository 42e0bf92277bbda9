"""Hugging Face checkpoints on local disk: `config.json` + `*.safetensors` <-> (ModelConfig, params).

Reads single-file and sharded (`model.safetensors.index.json`) checkpoints, tensors in bfloat16,
float16 or float32, optionally casting each tensor to a target dtype as it is read. Each weight is
read block by block straight into its device sharding, so host memory holds one block at a time.
Writes a directory that `transformers.AutoModelForCausalLM.from_pretrained` loads.
"""

from __future__ import annotations

import glob
import json
import os
from contextlib import ExitStack
from typing import Any

import jax
import ml_dtypes
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from primejax.models.config import ModelConfig
from primejax.models.params import Params, WeightSpec, get_path, set_path, weight_specs

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

_NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


class CheckpointError(ValueError):
    """A checkpoint that does not match its config; the message names the tensor or file."""


def _is_ignorable(name: str, config: ModelConfig) -> bool:
    # Buffers some older checkpoints carry, and the duplicate head of tied checkpoints.
    return name.endswith("rotary_emb.inv_freq") or (config.tie_word_embeddings and name == "lm_head.weight")


def _list_tensors(path: str) -> dict[str, str]:
    """Maps every tensor name to the safetensors file holding it."""
    index_path = os.path.join(path, INDEX_FILE)
    if os.path.isfile(index_path):
        with open(index_path) as f:
            try:
                weight_map = json.load(f)["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise CheckpointError(f"{index_path!r} is not a valid safetensors index: {e}") from e
        files = {os.path.join(path, name) for name in weight_map.values()}
        for file in sorted(files):
            if not os.path.isfile(file):
                raise CheckpointError(f"{index_path!r} names shard {os.path.basename(file)!r}, which does not exist")
        return {name: os.path.join(path, file) for name, file in weight_map.items()}
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        raise FileNotFoundError(f"checkpoint directory {path!r} has no *.safetensors files")
    out: dict[str, str] = {}
    for file in files:
        with _open(file) as handle:
            out.update(dict.fromkeys(handle.keys(), file))
    return out


def _open(file: str):
    try:
        return safe_open(file, framework="numpy")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read safetensors file {file!r}: {e}") from e


def _numpy_dtype(name: str):
    if name not in _NUMPY_DTYPES:
        raise CheckpointError(f"dtype={name!r} is not one of {', '.join(_NUMPY_DTYPES)}")
    return _NUMPY_DTYPES[name]


def _describe(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" ... ({len(names)} in all)" if len(names) > limit else "")


def _to_ours(tensor: np.ndarray, spec: WeightSpec) -> np.ndarray:
    return tensor.T.reshape(spec.shape) if spec.transpose else tensor.reshape(spec.shape)


def _to_hf(value: np.ndarray, spec: WeightSpec) -> np.ndarray:
    if spec.transpose:
        return np.ascontiguousarray(value.reshape(spec.hf_shape[::-1]).T)
    return value.reshape(spec.hf_shape)


def _merged_groups(ours: tuple[int, ...], theirs: tuple[int, ...]) -> list[list[int]]:
    """Which of our dimensions make up each dimension of `theirs` (ours = theirs with some split)."""
    groups, dim = [], 0
    for size in theirs:
        group, product = [], 1
        while product < size or not group:
            group.append(dim)
            product *= ours[dim]
            dim += 1
        if product != size:
            raise CheckpointError(f"shape {ours} is not a split of {theirs}")
        groups.append(group)
    return groups


def _read_block(handle, name: str, spec: WeightSpec, index: tuple[slice, ...]) -> np.ndarray:
    """The block `index` (slices in our layout of `spec.shape`) of tensor `name`, reading from the file
    only the rows and columns it needs: an index on the leading dimension of a merged group (heads of
    heads × head_dim) reads exactly that range."""
    theirs = spec.hf_shape[::-1] if spec.transpose else spec.hf_shape
    their_index, after = [], []
    for group in _merged_groups(spec.shape, theirs):
        sizes = [spec.shape[d] for d in group]
        start, stop, _ = index[group[0]].indices(sizes[0])
        inner = int(np.prod(sizes[1:], dtype=np.int64))
        their_index.append(slice(start * inner, stop * inner))
        after.extend([slice(None)] + [index[d] for d in group[1:]])
    block = handle.get_slice(name)[tuple(their_index[::-1] if spec.transpose else their_index)]
    if spec.transpose:
        block = block.T
    shape = [len(range(*index[d].indices(spec.shape[d]))) if i == 0 else spec.shape[d]
             for group in _merged_groups(spec.shape, theirs) for i, d in enumerate(group)]
    return block.reshape(shape)[tuple(after)]


def load_hf_checkpoint(
    path: str | os.PathLike, dtype: str | None = None, shardings: Params | None = None, **config_overrides: Any
) -> tuple[ModelConfig, Params]:
    """Loads a Hugging Face checkpoint directory.

    Returns the config and the params pytree. `dtype` (float32, bfloat16, float16) casts every
    tensor; by default the checkpoint's stored `dtype` is kept. `shardings` (a tree like the params,
    or a callable from the config to one) places every weight straight into its sharding: each
    process reads from the files only the blocks of its own devices, so no host ever holds the whole
    model. Without it, weights land on the default device. `config_overrides` replace config
    fields (e.g. compute_dtype="bfloat16").
    """
    path = os.fspath(path)
    config = ModelConfig.from_hf_dir(path, **config_overrides)
    target = _numpy_dtype(dtype or config.dtype)
    locations = _list_tensors(path)
    specs = weight_specs(config)
    expected = {spec.hf_name.format(i=i): spec for spec in specs
                for i in (range(config.num_layers) if spec.per_layer else [0])}
    missing = sorted(set(expected) - set(locations))
    if missing:
        raise CheckpointError(f"checkpoint {path!r} is missing tensors: {_describe(missing)}")
    extra = sorted(n for n in set(locations) - set(expected) if not _is_ignorable(n, config))
    if extra:
        raise CheckpointError(
            f"checkpoint {path!r} has tensors the {config.model_type} config does not use: {_describe(extra)}"
        )
    if callable(shardings):
        shardings = shardings(config)

    params: dict = {}
    with ExitStack() as stack:
        handles = {file: stack.enter_context(_open(file)) for file in sorted(set(locations.values()))}

        def read(name: str, spec: WeightSpec, index: tuple[slice, ...]) -> np.ndarray:
            handle = handles[locations[name]]
            shape = tuple(handle.get_slice(name).get_shape())
            if shape != spec.hf_shape:
                raise CheckpointError(f"tensor {name!r} has shape {shape}, expected {spec.hf_shape}")
            try:
                return _read_block(handle, name, spec, index).astype(target)
            except SafetensorError as e:
                raise CheckpointError(f"cannot read tensor {name!r} from {locations[name]!r}: {e}") from e

        for spec in specs:
            full_shape = spec.full_shape(config.num_layers)
            sharding = (get_path(shardings, spec.path) if shardings is not None
                        else jax.sharding.SingleDeviceSharding(jax.devices()[0]))

            def block(index, spec=spec):
                index = tuple(slice(None) if i is None else i for i in index) + (slice(None),) * len(full_shape)
                if not spec.per_layer:
                    return read(spec.hf_name, spec, index[:len(spec.shape)])
                layers = range(config.num_layers)[index[0]]
                return np.stack([read(spec.hf_name.format(i=i), spec, index[1:1 + len(spec.shape)]) for i in layers])

            set_path(params, spec.path, jax.make_array_from_callback(full_shape, sharding, block))
    return config, params


def save_hf_checkpoint(
    path: str | os.PathLike,
    params: Params,
    config: ModelConfig,
    dtype: str | None = None,
    max_shard_bytes: int | None = None,
) -> None:
    """Writes params as a Hugging Face checkpoint directory.

    `dtype` is the stored dtype (default `config.dtype`). With `max_shard_bytes`, tensors are
    split over `model-0000k-of-0000n.safetensors` files with an index; otherwise one
    `model.safetensors`. Other files in the directory (a tokenizer, say) are kept; weight files of
    an earlier save that the new one does not use are removed after the new ones are in place.
    """
    path = os.fspath(path)
    dtype = dtype or config.dtype
    target = _numpy_dtype(dtype)
    os.makedirs(path, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    for spec in weight_specs(config):
        try:
            value = np.asarray(get_path(params, spec.path))
        except KeyError as e:
            raise CheckpointError(f"params have no weight at {'/'.join(spec.path)}") from e
        expected = spec.full_shape(config.num_layers)
        if value.shape != expected:
            raise CheckpointError(f"param {'/'.join(spec.path)} has shape {value.shape}, expected {expected}")
        value = value.astype(target)
        if spec.per_layer:
            for i in range(config.num_layers):
                tensors[spec.hf_name.format(i=i)] = _to_hf(value[i], spec)
        else:
            tensors[spec.hf_name] = _to_hf(value, spec)

    shards = _split(tensors, max_shard_bytes)
    written = []
    if len(shards) == 1:
        written.append(_write_tensors(path, SINGLE_FILE, shards[0]))
    else:
        weight_map = {}
        for k, shard in enumerate(shards):
            name = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
            written.append(_write_tensors(path, name, shard))
            weight_map.update(dict.fromkeys(shard, name))
        total = sum(t.nbytes for t in tensors.values())
        written.append(_write_json(path, INDEX_FILE, {"metadata": {"total_size": total}, "weight_map": weight_map}))
    hf_config = config.to_hf_dict()
    hf_config["torch_dtype"] = dtype
    written.append(_write_json(path, "config.json", hf_config))
    for stale in glob.glob(os.path.join(path, "*.safetensors")) + [os.path.join(path, INDEX_FILE)]:
        if os.path.basename(stale) not in written and os.path.exists(stale):
            os.remove(stale)


def _split(tensors: dict[str, np.ndarray], max_bytes: int | None) -> list[dict[str, np.ndarray]]:
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        if max_bytes and shards[-1] and size + tensor.nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += tensor.nbytes
    return shards


def _write_tensors(path: str, name: str, tensors: dict[str, np.ndarray]) -> str:
    tmp = os.path.join(path, name + ".tmp")
    save_file(tensors, tmp, metadata={"format": "pt"})
    os.replace(tmp, os.path.join(path, name))
    return name


def _write_json(path: str, name: str, value: dict) -> str:
    tmp = os.path.join(path, name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, os.path.join(path, name))
    return name
