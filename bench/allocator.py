"""The memory allocator of a benchmark run: both sides of a comparison share the process, and so the
allocator; `--reexec-tcmalloc` restarts the script under tcmalloc before jax and torch load."""

import os
import sys

TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"


def reexec_under_tcmalloc() -> None:
    """With --reexec-tcmalloc in the arguments, restarts the script with LD_PRELOAD set to tcmalloc."""
    if "--reexec-tcmalloc" in sys.argv[1:] and os.path.exists(TCMALLOC) and not os.environ.get("LD_PRELOAD"):
        argv = [a for a in sys.argv if a != "--reexec-tcmalloc"]
        os.execve(sys.executable, [sys.executable, *argv], {**os.environ, "LD_PRELOAD": TCMALLOC})
