"""Shared fixtures: tiny random Hugging Face checkpoints, made by transformers inside the tests."""

import os

# The tests run on the CPU; with libtpu installed (for the planner's tests) JAX would otherwise probe for a TPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

from tests import hf_models

# Compiled programs persist across runs of the suite and are shared with the trainers, notebooks and
# multi-device scripts that tests start as subprocesses (they inherit the environment): CPU compiles
# dominate the suite's time, and many subprocesses compile the programs of the same tiny config.
CACHE_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".cache", "jax"))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", CACHE_DIR)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


@pytest.fixture(scope="session")
def hf_checkpoint(tmp_path_factory):
    """Returns the directory of the named case's checkpoint, writing it on first use."""
    root = tmp_path_factory.mktemp("hf")
    made = {}

    def get(name: str) -> str:
        if name not in made:
            made[name] = str(root / name)
            hf_models.make_model(name).save_pretrained(made[name])
        return made[name]

    return get
