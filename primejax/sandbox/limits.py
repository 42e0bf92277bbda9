"""Resource limits of one sandboxed program run."""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """Per-test limits, enforced by the kernel (rlimits, tmpfs sizes) and by the supervisor (clocks, pipes).

    Each test of a program runs in a fresh process with these limits; `max_processes` counts every
    process and thread the test starts, daemons included.
    """

    timeout_seconds: float = 5.0          # wall clock per test; the reference's per-test alarm
    cpu_seconds: float = 5.0              # RLIMIT_CPU per process, rounded up to whole seconds
    memory_mb: int = 1024                 # RLIMIT_AS: address space per process
    file_size_mb: int = 16                # RLIMIT_FSIZE: largest file a test may write
    disk_mb: int = 64                     # size of the private tmpfs holding the working directory
    max_processes: int = 64               # RLIMIT_NPROC: processes and threads of the sandbox
    max_open_files: int = 256             # RLIMIT_NOFILE
    stdout_bytes: int = 8 << 20           # stdout beyond this kills the test ("output limit")
    stderr_bytes: int = 64 << 10          # stderr kept (the tail); more is discarded, not fatal

    def __post_init__(self):
        positive = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
                raise ValueError(f"SandboxLimits.{name} must be a positive number, got {value!r}")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> SandboxLimits:
        return cls(**data)
