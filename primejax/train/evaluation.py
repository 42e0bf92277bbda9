"""Held-out evaluation: pass@1 with greedy decoding and avg@k with sampling (SPEC §7, last lines).

    pass@1 = mean over prompts of the verifier score of the greedy response
    avg@k  = mean over prompts and k samples (temperature 0.3, top-p 0.95 by default: the
             maintainers' recommendation for small sets such as AIME)

both overall and per `data_source`. Prompts are run in fixed-size batches (the last one padded
with repeats whose results are dropped), so evaluation compiles one program per setting. On several
processes each verifies its share of the rows and the scores are all-gathered.
"""

from __future__ import annotations

from collections import defaultdict

import jax
import ml_collections
import numpy as np

from primejax.data import PromptDataset
from primejax.models import ModelConfig
from primejax.models.params import Params
from primejax.parallel.placement import to_host
from primejax.parallel.rules import Layout
from primejax.sampling import SamplingParams, bucket
from primejax.tokenizer import Tokenizer
from primejax.train.rollouts import dispatch, submit_share
from primejax.verifiers import VerifierPool


class Evaluator:
    """Scores a policy on a held-out prompt set."""

    def __init__(self, config: ml_collections.ConfigDict, dataset: PromptDataset, tokenizer: Tokenizer,
                 model_config: ModelConfig, pool: VerifierPool, layout: Layout | None = None):
        e = config.eval
        self.layout = layout
        self.dataset = dataset
        self.tokenizer = tokenizer
        self.model_config = model_config
        self.pool = pool
        self.indices = list(range(len(dataset) if not e.max_prompts else min(e.max_prompts, len(dataset))))
        # Fixed-size batches, rounded up to a multiple of the mesh's batch shards (padded with repeats).
        shards = layout.batch_shards if layout is not None else 1
        self.batch_size = -(-min(e.batch_size, len(self.indices)) // shards) * shards
        self.prompt_length = bucket(config.data.max_prompt_length)
        length = e.max_response_length or config.rollout.max_response_length
        common = {"max_new_tokens": length, "eos_ids": tokenizer.eos_ids, "pad_id": tokenizer.pad_id}
        self.settings = {"pass@1": SamplingParams(temperature=0.0, n=1, **common)}
        if e.avg_k:
            self.settings[f"avg@{e.avg_k}"] = SamplingParams(temperature=e.temperature, top_p=e.top_p, n=e.avg_k,
                                                             **common)

    def _scores(self, params: Params, sampling: SamplingParams, key: jax.Array) -> np.ndarray:
        """Verifier scores [prompts, n] of every evaluation prompt."""
        scores = []
        for start in range(0, len(self.indices), self.batch_size):
            batch = self.indices[start:start + self.batch_size]
            padded = batch + [batch[0]] * (self.batch_size - len(batch))
            rollout = dispatch(params, [self.dataset.tokens(i) for i in padded], jax.random.fold_in(key, start),
                               self.tokenizer, self.prompt_length, self.model_config, sampling, self.layout)
            rows = len(batch) * sampling.n
            host = {f: to_host(getattr(rollout, f))[:rows] for f in ("response_tokens", "response_mask")}
            acc, _ = submit_share(self.pool, self.tokenizer, self.dataset, batch, sampling.n, host).result()
            scores.append(acc.reshape(len(batch), sampling.n))
        return np.concatenate(scores)

    def evaluate(self, params: Params, key: jax.Array) -> dict[str, float]:
        """`eval/pass@1`, `eval/avg@k` (when set) and the same per data source."""
        metrics = {}
        sources = [self.dataset.record(i).data_source for i in self.indices]
        for name, sampling in self.settings.items():
            per_prompt = self._scores(params, sampling, key).mean(-1)
            metrics[f"eval/{name}"] = float(per_prompt.mean())
            by_source = defaultdict(list)
            for source, value in zip(sources, per_prompt):
                by_source[source].append(value)
            if len(by_source) > 1:
                metrics |= {f"eval/{source}/{name}": float(np.mean(v)) for source, v in by_source.items()}
        return metrics
