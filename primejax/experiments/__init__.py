"""Experiments run on primejax: `replication` compares PRIME with its baselines on the built-in task."""
