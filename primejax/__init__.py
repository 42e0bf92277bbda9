"""primejax: PRIME (process reinforcement through implicit rewards) for LLM reasoning, in JAX."""

__version__ = "0.1.0"
