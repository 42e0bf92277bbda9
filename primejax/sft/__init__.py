"""The supervised warm start PRIME begins from: `python -m primejax.sft --config=configs/NAME.py`."""

from primejax.sft.run import load_sft_examples, run_sft, train_sft
from primejax.sft.step import encode_examples, sft_loss, sft_step

__all__ = ["encode_examples", "load_sft_examples", "run_sft", "sft_loss", "sft_step", "train_sft"]
