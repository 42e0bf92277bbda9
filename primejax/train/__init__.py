"""The PRIME trainer: `python -m primejax.train`."""
