"""Writing a trained model out as a Hugging Face directory (weights, config and tokenizer)."""

from __future__ import annotations

import os
import shutil

import jax

from primejax.models import ModelConfig, save_hf_checkpoint
from primejax.models.params import Params
from primejax.parallel.placement import to_host
from primejax.tokenizer import Tokenizer


def export_model(path: str | os.PathLike, params: Params, config: ModelConfig, tokenizer: Tokenizer) -> str:
    """Writes `path` as a directory `transformers` and `load_hf_checkpoint` load, atomically: the files
    go to a sibling temporary directory that then replaces `path`, so a crash leaves the old export or
    none, never a partial one. Returns the path.

    Every process must call it (sharded params are gathered); process 0 writes.
    """
    path = os.path.abspath(os.fspath(path))
    params = to_host(params)
    if jax.process_index() != 0:
        return path
    staging = f"{path}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    save_hf_checkpoint(staging, params, config)
    tokenizer.save(staging)
    if os.path.exists(path):
        retired = f"{path}.old"
        shutil.rmtree(retired, ignore_errors=True)
        os.rename(path, retired)
        os.rename(staging, path)
        shutil.rmtree(retired)
    else:
        os.rename(staging, path)
    return path
