"""`python -m primejax.sft --config=configs/NAME.py [--config.key=value ...] [--workdir=DIR]`.

Fine-tunes `model.path` on `sft.train_files` (JSONL rows {"prompt": messages or text, "response":
text}) and writes the SFT model with its tokenizer to `sft.output_dir` (default `WORKDIR/sft`), the
directory to give PRIME as `model.path`. With the demo config it makes the built-in demo's SFT model.
"""

from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

from primejax.models import load_hf_checkpoint
from primejax.parallel import Layout, initialize_distributed, make_mesh, param_shardings
from primejax.sft.run import load_sft_examples, run_sft
from primejax.tokenizer import Tokenizer
from primejax.train.config import DEMO_CONFIG, ConfigError, validate
from primejax.train.demo import prepare_demo

_CONFIG = config_flags.DEFINE_config_file("config", DEMO_CONFIG, "a get_config() file; fields override as "
                                          "--config.key=value", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "workdir", "where the SFT model is written unless sft.output_dir is set")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    config = _CONFIG.value
    validate(config)
    initialize_distributed(config.mesh.distributed)
    workdir = os.path.abspath(_WORKDIR.value)
    if config.demo.enabled:
        path = prepare_demo(config, workdir).model.path
    else:
        if not config.sft.train_files:
            raise ConfigError("config.sft.train_files='': name the SFT data (JSONL rows with prompt and response)")
        if not os.path.isdir(config.model.path):
            raise FileNotFoundError(f"model checkpoint directory not found: {config.model.path}")
        examples = load_sft_examples(config.sft.train_files)
        layout = Layout(make_mesh(config.mesh)).with_params(config.model.sharding)
        model_config, params = load_hf_checkpoint(config.model.path, dtype=config.model.dtype,
                                                  shardings=lambda c: param_shardings(c, layout),
                                                  compute_dtype=config.model.compute_dtype, remat=config.model.remat)
        tokenizer = Tokenizer.from_dir(config.model.tokenizer_path or config.model.path)
        path = run_sft(config, params, model_config, tokenizer, examples,
                       config.sft.output_dir or os.path.join(workdir, "sft"), layout)
    print(f"SFT model: {path}")


if __name__ == "__main__":
    app.run(main)
