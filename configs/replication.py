"""The replication's variants (primejax.experiments.replication) as configs: the built-in demo with
the data and SFT model of seed 0 for every run, and the variant's keys.

    python -m primejax.train --config=configs/replication.py:rloo_outcome --config.seed=1 --workdir=runs/rloo_1

`prime_frozen` also needs `--config.prm.path=DIR`, the offline PRM `bench/replicate.py` writes.
"""

from primejax.experiments.replication import VARIANTS, apply
from primejax.train.config import DEMO_CONFIG, load_config


def get_config(variant="prime"):
    if variant not in VARIANTS:
        raise KeyError(f"unknown variant {variant!r}; variants: {', '.join(VARIANTS)}")
    config = apply(load_config(DEMO_CONFIG), VARIANTS[variant])
    config.demo.seed = 0
    return config
