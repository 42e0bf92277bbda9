"""The memory allocator of a benchmark run: both sides of a comparison share the process, and so the
allocator. `--reexec-tcmalloc` restarts the script under tcmalloc, `--reexec-huge-pages` under glibc
malloc with transparent huge pages for its mappings, before jax and torch load.

Huge pages matter on CPU: XLA maps each execution's temporary buffer afresh (2.6 GB for one PRIME
update step of the small Qwen2 shape) and with 4 KiB pages a step takes ~900k page faults; with
`glibc.malloc.hugetlb=1` malloc advises huge pages for its mappings and a step takes ~15k.
"""

import os
import shlex
import sys

TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
HUGE_PAGES = "glibc.malloc.hugetlb=1"


def _reexec(flag: str, env: dict) -> None:
    argv = [a for a in sys.argv if a != flag]
    os.execve(sys.executable, [sys.executable, *argv], {**os.environ, **env})


def reexec_under_tcmalloc() -> None:
    """With --reexec-tcmalloc in the arguments, restarts the script with LD_PRELOAD set to tcmalloc."""
    if "--reexec-tcmalloc" in sys.argv[1:] and os.path.exists(TCMALLOC) and not os.environ.get("LD_PRELOAD"):
        _reexec("--reexec-tcmalloc", {"LD_PRELOAD": TCMALLOC})


def reexec_with_huge_pages() -> None:
    """With --reexec-huge-pages in the arguments, restarts the script with GLIBC_TUNABLES asking glibc
    malloc for transparent huge pages."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if "--reexec-huge-pages" in sys.argv[1:] and HUGE_PAGES not in tunables:
        _reexec("--reexec-huge-pages", {"GLIBC_TUNABLES": ":".join(filter(None, [tunables, HUGE_PAGES]))})


def describe() -> str:
    """The allocator this process runs under, in words."""
    preload, tunables = os.environ.get("LD_PRELOAD", ""), os.environ.get("GLIBC_TUNABLES", "")
    name = "tcmalloc" if "tcmalloc" in preload else "glibc malloc"
    return name + (" with transparent huge pages (GLIBC_TUNABLES=" + tunables + ")" if HUGE_PAGES in tunables else "")


def command_prefix() -> str:
    """The environment settings of the allocator, as they prefix the command that reproduces the run."""
    return "".join(f"{k}={shlex.quote(os.environ[k])} " for k in ("LD_PRELOAD", "GLIBC_TUNABLES") if os.environ.get(k))
