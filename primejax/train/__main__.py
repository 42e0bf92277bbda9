"""`python -m primejax.train --config=configs/NAME.py [--config.key=value ...] [--workdir=DIR]`.

With no flags it runs the built-in demo (`configs/demo.py`) in `./workdir`. Rerunning the same
command resumes from the latest checkpoint in the workdir.
"""

from __future__ import annotations

import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from primejax.parallel import initialize_distributed
from primejax.train.config import DEMO_CONFIG, validate
from primejax.train.demo import prepare_demo
from primejax.train.loop import Trainer

_CONFIG = config_flags.DEFINE_config_file("config", DEMO_CONFIG, "a get_config() file; fields override as "
                                          "--config.key=value", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "workdir", "holds checkpoints, logs, the demo's files and the export")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    config = _CONFIG.value
    validate(config)
    initialize_distributed(config.mesh.distributed)
    workdir = os.path.abspath(_WORKDIR.value)
    if config.demo.enabled:
        config = prepare_demo(config, workdir)
    summary = Trainer(config, workdir).run()
    if jax.process_index() != 0:
        return
    for key in sorted(summary):
        print(f"{key}: {summary[key]:.4f}")
    start, final = summary.get("start/eval/pass@1"), summary.get("final/eval/pass@1")
    if start is not None and final is not None:
        print(f"held-out pass@1: {100 * start:.1f}% at the start (SFT) -> {100 * final:.1f}% after PRIME "
              f"({100 * (final - start):+.1f} points)")
    print(f"exported policy: {os.path.join(workdir, 'export')}")


if __name__ == "__main__":
    app.run(main)
