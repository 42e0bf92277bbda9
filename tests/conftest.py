"""Shared fixtures: tiny random Hugging Face checkpoints, made by transformers inside the tests."""

import os

# The tests run on the CPU; with libtpu installed (for the planner's tests) JAX would otherwise probe for a TPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

from tests import hf_models

# Compiled programs persist across runs of the suite (CPU compiles dominate its time).
jax.config.update("jax_compilation_cache_dir", os.path.join(os.path.dirname(__file__), "..", ".cache", "jax"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


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
