"""A sandbox for model-written programs: each test runs in a fresh, confined process, never in the caller's.

    from primejax.sandbox import SandboxLimits, run_program
    run = run_program("print(sum(map(int, input().split())))", ["1 2\n"], limits=SandboxLimits(timeout_seconds=2))
    run.tests[0].stdout        # '3\n'
    run.isolation              # namespaces (namespaces: mount, network, pid, ipc, uts; uid ...; landlock ABI 7; ...)

See `supervisor.py` for the two isolation modes and README.md ("The code sandbox") for what they guarantee
and what they do not.
"""

import importlib

# Exports load on first use: the supervisor process imports this package at the start of every sandboxed
# program, and needs none of the caller-side modules (subprocess, dataclasses, sysconfig) it would pull in.
_EXPORTS = {
    "ISOLATION_MODES": "api",
    "Isolation": "api",
    "SandboxRun": "api",
    "TestOutcome": "api",
    "python_paths": "api",
    "run_program": "api",
    "time_budget": "api",
    "SandboxLimits": "limits",
}
__all__ = ["ISOLATION_MODES", "Isolation", "SandboxLimits", "SandboxRun", "TestOutcome", "python_paths",
           "run_program", "time_budget"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'primejax.sandbox' has no attribute {name!r}")
    return getattr(importlib.import_module(f"primejax.sandbox.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
