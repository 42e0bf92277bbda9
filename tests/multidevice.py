"""Runs a script on several CPU devices in a subprocess, so the rest of the suite keeps its single
device (XLA fixes the device count when the backend starts)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_on_cpu_devices(script: str, devices: int) -> None:
    """Runs `script` with `devices` host devices; it must exit 0 and print "ok" last."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": ROOT}
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                            check=False, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
