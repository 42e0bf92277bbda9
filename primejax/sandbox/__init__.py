"""A sandbox for model-written programs: each test runs in a fresh, confined process, never in the caller's.

    from primejax.sandbox import SandboxLimits, run_program
    run = run_program("print(sum(map(int, input().split())))", ["1 2\n"], limits=SandboxLimits(timeout_seconds=2))
    run.tests[0].stdout        # '3\n'
    run.isolation              # namespaces (namespaces: mount, network, pid, ipc, uts; uid ...; landlock ABI 7; ...)

See `supervisor.py` for the two isolation modes and README.md ("The code sandbox") for what they guarantee
and what they do not.
"""

from primejax.sandbox.api import (
    ISOLATION_MODES,
    Isolation,
    SandboxRun,
    TestOutcome,
    python_paths,
    run_program,
    time_budget,
)
from primejax.sandbox.limits import SandboxLimits

__all__ = ["ISOLATION_MODES", "Isolation", "SandboxLimits", "SandboxRun", "TestOutcome", "python_paths",
           "run_program", "time_budget"]
