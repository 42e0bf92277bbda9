"""Sample → verify → filter: the rollout batch of one iteration (SPEC §1 steps 1–3, §6).

Prompts are generated in rounds of ⌈batch_size · oversample_factor⌉, n responses each, and every
response is scored by the verifier pool. Then, by `filter.mode`:

- `refill` ([OFF], default): groups passing the filters (accuracy band, truncation) are collected
  over rounds until `batch_size` have passed; surplus passing prompts go to the refill buffer *as
  prompts* (their responses are discarded) and are generated first next iteration. If `max_rounds`
  rounds leave the batch short, the most recent failing groups fill it (counted in the metrics).
- `oversample_select` ([RCP]): one round; passing groups first, failing ones fill the rest.

Verification overlaps device work where that is free: when the next round is needed whatever this
round's scores are, its generation is dispatched before waiting for the verifier.

On several processes every process runs this same code on the same prompt order: each generation
round is one global program over the mesh, every process verifies its share of the rows in its own
pool, and the scores are all-gathered, so every process takes the same filtering decisions and holds
the same refill buffer; `put_global` then places only each process's shards of the batch.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import ml_collections
import numpy as np

from primejax import algo
from primejax.data import PromptDataset, PromptIterator
from primejax.models import ModelConfig
from primejax.models.params import Params
from primejax.parallel.placement import gather_shares, process_share, put_global, to_host
from primejax.parallel.rules import Layout
from primejax.sampling import Rollout, SamplingParams, bucket, decode_rows, generate, pad_prompts
from primejax.tokenizer import Tokenizer
from primejax.train.logprobs import Sequences
from primejax.verifiers import Sample, VerifierPool


@dataclasses.dataclass
class Generated:
    """One round on the host: prompt indices [G], rows [G·n] (numpy) and their verifier scores."""

    prompts: list[int]
    prompt_tokens: np.ndarray
    prompt_mask: np.ndarray
    response_tokens: np.ndarray
    response_mask: np.ndarray
    truncated: np.ndarray
    acc: np.ndarray
    errors: int

    def groups(self, keep: np.ndarray, n: int) -> Generated:
        """The groups where `keep` [G] is set."""
        rows = np.repeat(keep, n)
        return dataclasses.replace(
            self, prompts=[p for p, k in zip(self.prompts, keep) if k],
            **{f: getattr(self, f)[rows] for f in ("prompt_tokens", "prompt_mask", "response_tokens", "response_mask",
                                                   "truncated", "acc")})


@dataclasses.dataclass
class RolloutBatch:
    """The iteration's training batch: exactly batch_size groups of n rows."""

    prompts: list[int]
    sequences: Sequences
    acc: np.ndarray
    truncated: np.ndarray
    stats: dict[str, float]


def to_sequences(prompt_tokens: np.ndarray, prompt_mask: np.ndarray, response_tokens: np.ndarray,
                 response_mask: np.ndarray, prompt_length: int, pad_id: int) -> Sequences:
    """[prompt ; response] rows with the prompt left-padded (or trimmed of padding) to `prompt_length`."""
    width = prompt_tokens.shape[1]
    if width < prompt_length:
        grow = prompt_length - width
        prompt_tokens = np.pad(prompt_tokens, ((0, 0), (grow, 0)), constant_values=pad_id)
        prompt_mask = np.pad(prompt_mask, ((0, 0), (grow, 0)))
    elif width > prompt_length:
        if prompt_mask[:, :width - prompt_length].any():
            raise ValueError(f"a prompt is longer than prompt_length={prompt_length}")
        prompt_tokens, prompt_mask = prompt_tokens[:, -prompt_length:], prompt_mask[:, -prompt_length:]
    return Sequences(tokens=np.concatenate([prompt_tokens, response_tokens], 1).astype(np.int32),
                     segment_ids=np.concatenate([prompt_mask, response_mask], 1).astype(np.int32),
                     response_mask=response_mask.astype(np.int32))


class RolloutCollector:
    """Produces each iteration's filtered batch; holds the prompt iterator and the refill buffer."""

    def __init__(self, config: ml_collections.ConfigDict, dataset: PromptDataset, iterator: PromptIterator,
                 tokenizer: Tokenizer, model_config: ModelConfig, pool: VerifierPool, layout: Layout | None = None):
        self.config = config
        self.layout = layout
        self.dataset = dataset
        self.iterator = iterator
        self.tokenizer = tokenizer
        self.model_config = model_config
        self.pool = pool
        self.buffer: list[int] = []
        r = config.rollout
        self.n = r.n
        self.prompt_length = bucket(config.data.max_prompt_length)
        self.round_size = math.ceil(r.batch_size * r.oversample_factor)
        self.sampling = SamplingParams(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k, n=r.n,
                                       max_new_tokens=r.max_response_length, eos_ids=tokenizer.eos_ids,
                                       pad_id=tokenizer.pad_id)

    def state(self) -> dict:
        return {"iterator": self.iterator.state(), "buffer": list(self.buffer)}

    def restore(self, state: dict) -> None:
        self.iterator.restore(state["iterator"])
        self.buffer = [int(i) for i in state["buffer"]]

    def _next_prompts(self) -> list[int]:
        take = self.buffer[:self.round_size]
        self.buffer = self.buffer[len(take):]
        return take + self.iterator.take(self.round_size - len(take))

    def _dispatch(self, params: Params, prompts: list[int], key: jax.Array) -> Rollout:
        return dispatch(params, [self.dataset.tokens(i) for i in prompts], key, self.tokenizer, self.prompt_length,
                        self.model_config, self.sampling, self.layout)

    def _verify(self, prompts: list[int], rollout: Rollout):
        """Pulls the rollout to the host and submits this process's share of its responses; returns
        (host arrays, pending verification)."""
        host = to_host({f: getattr(rollout, f) for f in ("prompt_tokens", "prompt_mask", "response_tokens",
                                                          "response_mask", "truncated")})
        return host, submit_share(self.pool, self.tokenizer, self.dataset, prompts, self.n, host)

    def _keep(self, generated: Generated) -> np.ndarray:
        f, n = self.config.filter, self.n
        keep = np.ones(len(generated.prompts), bool)
        if f.accuracy:
            keep &= np.asarray(algo.accuracy_filter(generated.acc, n, lower=f.accuracy_lower, upper=f.accuracy_upper))
        if f.truncation:
            keep &= np.asarray(algo.truncation_filter(generated.response_mask.sum(-1), n,
                                                      max_response_length=self.sampling.max_new_tokens,
                                                      rule=f.truncation_rule))
        return keep

    def collect(self, params: Params, key: jax.Array) -> RolloutBatch:
        """Generates, verifies and filters until the batch is full (see the module doc)."""
        target = self.config.rollout.batch_size
        rounds = 1 if self.config.filter.mode == "oversample_select" else self.config.rollout.max_rounds
        passed: list[Generated] = []
        failed: list[Generated] = []
        scores: list[np.ndarray] = []
        stats = {"generated_prompts": 0, "rounds": 0, "verify_errors": 0, "generate_seconds": 0.0,
                 "verify_wait_seconds": 0.0, "response_tokens": 0}
        prompts = self._next_prompts()
        start = time.perf_counter()
        rollout = self._dispatch(params, prompts, jax.random.fold_in(key, 0))
        for round_index in range(rounds):
            host, future = self._verify(prompts, rollout)
            stats["generate_seconds"] += time.perf_counter() - start
            count = sum(len(g.prompts) for g in passed)
            next_prompts, next_rollout = None, None
            if count + len(prompts) < target and round_index + 1 < rounds:
                # Needed whatever this round's scores are: generate it while the verifier works.
                next_prompts = self._next_prompts()
                start = time.perf_counter()
                next_rollout = self._dispatch(params, next_prompts, jax.random.fold_in(key, round_index + 1))
            wait = time.perf_counter()
            acc, errors = future.result()
            stats["verify_wait_seconds"] += time.perf_counter() - wait
            generated = Generated(prompts=prompts, **host, acc=acc, errors=int(errors.sum()))
            stats["rounds"] += 1
            stats["generated_prompts"] += len(prompts)
            stats["verify_errors"] += generated.errors
            stats["response_tokens"] += int(generated.response_mask.sum())
            scores.append(generated.acc)
            keep = self._keep(generated)
            passed.append(generated.groups(keep, self.n))
            failed.append(generated.groups(~keep, self.n))
            if sum(len(g.prompts) for g in passed) >= target or round_index + 1 == rounds:
                break
            if next_rollout is None:
                next_prompts = self._next_prompts()
                start = time.perf_counter()
                next_rollout = self._dispatch(params, next_prompts, jax.random.fold_in(key, round_index + 1))
            prompts, rollout = next_prompts, next_rollout
        stats["outcome_all_mean"] = float(np.concatenate(scores).mean())
        return self._assemble(passed, failed, target, stats)

    def _assemble(self, passed: list[Generated], failed: list[Generated], target: int, stats: dict) -> RolloutBatch:
        groups = _concat(passed)
        num_passed = len(groups.prompts) if groups else 0
        if num_passed > target:
            # [OFF] add_to_buffer: surplus prompts are re-generated next iteration.
            self.buffer = groups.prompts[target:] + self.buffer
            groups = groups.groups(np.arange(num_passed) < target, self.n)
        filled = 0
        if num_passed < target:
            fill = _concat(failed[::-1])
            need = target - num_passed
            filled = need
            fill = fill.groups(np.arange(len(fill.prompts)) < need, self.n)
            groups = _concat([g for g in (groups, fill) if g is not None and g.prompts])
        stats.update(filled_groups=filled, pass_rate=num_passed / stats["generated_prompts"])
        sequences = to_sequences(groups.prompt_tokens, groups.prompt_mask, groups.response_tokens,
                                 groups.response_mask, self.prompt_length, self.tokenizer.pad_id)
        return RolloutBatch(prompts=groups.prompts, sequences=sequences, acc=groups.acc, truncated=groups.truncated,
                            stats=stats)


def dispatch(params: Params, prompts: list[list[int]], key: jax.Array, tokenizer: Tokenizer, prompt_length: int,
             model_config: ModelConfig, sampling: SamplingParams, layout: Layout | None) -> Rollout:
    """Starts generating `sampling.n` responses to each tokenized prompt (left-padded to
    `prompt_length`), the prompts laid over the layout's batch axes; returns the rollout (in flight)."""
    tokens, mask = pad_prompts(prompts, tokenizer.pad_id, prompt_length)
    if layout is not None:
        tokens, mask = put_global((tokens, mask), layout.rows(tokens.shape))
    return generate(params, tokens, mask, key, config=model_config, sampling=sampling,
                    max_len=prompt_length + sampling.max_new_tokens, layout=layout)


class PendingScores:
    """This process's verification of its share of a round's rows; `result()` gathers every process's
    scores into (scores [rows] float32, errors [rows] bool), the same on every process.

    A round in which every verification failed for a reason other than its time limit means the
    verifiers cannot run at all (a worker that cannot import them, a sandbox that cannot start):
    `result()` raises then, on every process, rather than train on rewards that are all 0."""

    _OK, _TIMEOUT, _FAILED = 0.0, 1.0, 2.0

    def __init__(self, future, rows: int):
        self.future, self.rows = future, rows

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        verdicts = self.future.result()
        local = np.asarray([(v.score, self._status(v)) for v in verdicts], np.float32).reshape(-1, 2)
        gathered = gather_shares(local, self.rows)
        if self.rows and np.all(gathered[:, 1] == self._FAILED):
            reasons = sorted({v.error for v in verdicts})
            raise RuntimeError(f"every one of the {self.rows} verifications of a rollout round failed, so the "
                               f"verifiers cannot run here; this process's reasons: {reasons[:3]} (check that "
                               "`python -c 'import primejax.verifiers'` works from a fresh shell)")
        return gathered[:, 0], gathered[:, 1] != self._OK

    @classmethod
    def _status(cls, verdict) -> float:
        if verdict.error is None:
            return cls._OK
        return cls._TIMEOUT if verdict.error == "timeout" else cls._FAILED


def submit_share(pool: VerifierPool, tokenizer: Tokenizer, dataset: PromptDataset, prompts: list[int], n: int,
                 host: dict[str, np.ndarray]) -> PendingScores:
    """Decodes this process's share of the response rows (row r answers `prompts[r // n]`) and submits
    them to the pool."""
    rows = len(host["response_tokens"])
    share = process_share(rows)
    texts = decode_rows(tokenizer, host["response_tokens"][share.start:share.stop],
                        host["response_mask"][share.start:share.stop])
    samples = []
    for row, text in zip(share, texts):
        record = dataset.record(prompts[row // n])
        samples.append(Sample(response=text, ground_truth=record.ground_truth, ability=record.ability,
                              data_source=record.data_source))
    return PendingScores(pool.submit(samples), rows)


def _concat(parts: list[Generated]) -> Generated | None:
    parts = [p for p in parts if p is not None and p.prompts]
    if not parts:
        return None
    width = max(p.prompt_tokens.shape[1] for p in parts)

    def left_pad(x, value):
        return np.pad(x, ((0, 0), (width - x.shape[1], 0)), constant_values=value)

    return Generated(
        prompts=[i for p in parts for i in p.prompts],
        prompt_tokens=np.concatenate([left_pad(p.prompt_tokens, 0) for p in parts]),
        prompt_mask=np.concatenate([left_pad(p.prompt_mask, 0) for p in parts]),
        **{f: np.concatenate([getattr(p, f) for p in parts]) for f in ("response_tokens", "response_mask",
                                                                        "truncated", "acc")},
        errors=sum(p.errors for p in parts))

