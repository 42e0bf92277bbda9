"""Which reward function scores an example, and with which options and time bound.

Examples follow the Eurus-2-RL-Data convention: `ability` ("math", "code") names the reward function, as the
official PRIME code dispatches; failing that, `data_source` is matched by prefix (numina_* -> math;
apps, taco, codecontests, codeforces -> code), as verl's recipe dispatches. Users add their own:

    @REWARD_FUNCTIONS.register("sql")
    def sql_reward(response, ground_truth, *, dialect="sqlite"): ...    # -> Verdict or a float in [0, 1]
    add_data_source_route("spider", "sql")
    VerifierConfig(extra={"sql": {"timeout_seconds": 2.0, "dialect": "postgres"}})

A reward function runs in a verifier worker process, so it must be importable there: define it in a module
(or in a script's `__main__` guarded by `if __name__ == "__main__":`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from primejax.registry import Registry
from primejax.sandbox import ISOLATION_MODES, SandboxLimits, time_budget
from primejax.verifiers.code_reward import code_reward
from primejax.verifiers.math_reward import math_reward

REWARD_FUNCTIONS = Registry("reward function", "(response: str, ground_truth, *, options...) -> Verdict | float")
REWARD_FUNCTIONS.register("math")(math_reward)
REWARD_FUNCTIONS.register("code")(code_reward)

DATA_SOURCE_ROUTES: dict[str, str] = {
    "numina": "math",
    "apps": "code",
    "taco": "code",
    "codecontests": "code",
    "codeforces": "code",
}
DEFAULT_EXTRA_TIMEOUT_SECONDS = 5.0
_UNBOUNDED_TESTS = 100               # the time bound assumed for `max_tests=None`


def add_data_source_route(prefix: str, reward: str) -> None:
    """Routes examples whose data_source is `prefix` or starts with `prefix_` to the reward function `reward`."""
    REWARD_FUNCTIONS.get(reward)
    DATA_SOURCE_ROUTES[prefix] = reward


def route(ability: str | None, data_source: str | None) -> str:
    """The name of the reward function for an example; ValueError naming both fields if there is none."""
    if ability and ability in REWARD_FUNCTIONS:
        return ability
    if data_source:
        for prefix, name in DATA_SOURCE_ROUTES.items():
            if data_source == prefix or data_source.startswith(prefix + "_"):
                return name
    raise ValueError(f"no reward function for ability={ability!r}, data_source={data_source!r}; abilities: "
                     f"{', '.join(REWARD_FUNCTIONS.names())}; data_source prefixes: {', '.join(DATA_SOURCE_ROUTES)}")


@dataclasses.dataclass(frozen=True)
class VerifierConfig:
    """Options of the built-in verifiers, and of users' (`extra`: name -> options, with `timeout_seconds`).

    A code item's time bound is the sandbox's budget for `code_max_tests` tests (100 when None); with
    `code_max_tests=None` on problems with more tests, set `code_total_timeout_seconds` as well.
    """

    math_timeout_seconds: float = 1.0
    math_rel_tol: float = 1e-4
    math_max_answer_chars: int = 1000
    code_limits: SandboxLimits = dataclasses.field(default_factory=SandboxLimits)
    code_max_tests: int | None = 10
    code_isolation: str = "auto"
    code_total_timeout_seconds: float | None = None
    worker_memory_mb: int = 1024
    extra: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for name in ("math_timeout_seconds", "math_rel_tol", "math_max_answer_chars", "worker_memory_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"VerifierConfig.{name} must be a positive number, got {value!r}")
        if self.code_max_tests is not None and (not isinstance(self.code_max_tests, int) or self.code_max_tests < 1):
            raise ValueError(f"VerifierConfig.code_max_tests must be a positive integer or None, "
                             f"got {self.code_max_tests!r}")
        if self.code_isolation not in ISOLATION_MODES:
            raise ValueError(f"VerifierConfig.code_isolation must be one of {', '.join(ISOLATION_MODES)}, "
                             f"got {self.code_isolation!r}")
        for name in self.extra:
            REWARD_FUNCTIONS.get(name)


@dataclasses.dataclass(frozen=True)
class BoundReward:
    """A reward function with its options fixed, and the time one call may take."""

    fn: Callable
    timeout_seconds: float


def bound_reward(name: str, config: VerifierConfig) -> BoundReward:
    """The reward `name` bound to `config`'s options for it."""
    if name == "math":
        return BoundReward(REWARD_FUNCTIONS.bind("math", rel_tol=config.math_rel_tol,
                                                 max_answer_chars=config.math_max_answer_chars),
                           config.math_timeout_seconds)
    if name == "code":
        fn = REWARD_FUNCTIONS.bind("code", limits=config.code_limits, max_tests=config.code_max_tests,
                                   isolation=config.code_isolation,
                                   total_timeout_seconds=config.code_total_timeout_seconds)
        tests = config.code_max_tests or _UNBOUNDED_TESTS
        return BoundReward(fn, time_budget(tests, config.code_limits, config.code_total_timeout_seconds))
    options = dict(config.extra.get(name, {}))
    timeout = options.pop("timeout_seconds", DEFAULT_EXTRA_TIMEOUT_SECONDS)
    return BoundReward(REWARD_FUNCTIONS.bind(name, **options), timeout)
