"""The memory allocator of a benchmark run: both sides of a comparison share the process, and so the
allocator. `--reexec-tcmalloc` restarts the script under tcmalloc, `--reexec-huge-pages` under glibc
malloc with transparent huge pages for its mappings, before jax and torch load.

Huge pages matter on CPU: XLA maps each execution's temporary buffer afresh (2.6 GB for one PRIME
update step of the small Qwen2 shape) and with 4 KiB pages a step takes ~900k page faults; with
`glibc.malloc.hugetlb=1` malloc advises huge pages for its mappings and a step takes ~15k.

In a virtual machine that hands the guest's free memory back to the host, glibc's unmapping of that
buffer costs more: the first execution after a phase that used less memory (the PRM step after
scoring, or after the PyTorch side) touches memory the host has to supply again, and took 8 s
instead of 5 s. tcmalloc with TCMALLOC_RELEASE_RATE=0 keeps freed memory in the process.
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
    """With --reexec-tcmalloc in the arguments, restarts the script with LD_PRELOAD set to tcmalloc
    and TCMALLOC_RELEASE_RATE=0, so that freed memory stays in the process (see the module doc)."""
    if "--reexec-tcmalloc" not in sys.argv[1:] or os.environ.get("LD_PRELOAD"):
        return
    if not os.path.exists(TCMALLOC):
        sys.exit(f"--reexec-tcmalloc: {TCMALLOC} does not exist (Debian/Ubuntu: apt-get install libtcmalloc-minimal4)")
    _reexec("--reexec-tcmalloc", {"LD_PRELOAD": TCMALLOC, "TCMALLOC_RELEASE_RATE": "0"})


def reexec_with_huge_pages() -> None:
    """With --reexec-huge-pages in the arguments, restarts the script with GLIBC_TUNABLES asking glibc
    malloc for transparent huge pages."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if "--reexec-huge-pages" in sys.argv[1:] and HUGE_PAGES not in tunables:
        _reexec("--reexec-huge-pages", {"GLIBC_TUNABLES": ":".join(filter(None, [tunables, HUGE_PAGES]))})


def describe() -> str:
    """The allocator this process runs under, in words."""
    preload, tunables = os.environ.get("LD_PRELOAD", ""), os.environ.get("GLIBC_TUNABLES", "")
    name = "glibc malloc"
    if "tcmalloc" in preload:
        rate = os.environ.get("TCMALLOC_RELEASE_RATE")
        name = "tcmalloc" + (f" (TCMALLOC_RELEASE_RATE={rate})" if rate is not None else "")
    return name + (" with transparent huge pages (GLIBC_TUNABLES=" + tunables + ")" if HUGE_PAGES in tunables else "")


def command_prefix() -> str:
    """The environment settings of the allocator, as they prefix the command that reproduces the run."""
    names = ("LD_PRELOAD", "TCMALLOC_RELEASE_RATE", "GLIBC_TUNABLES")
    return "".join(f"{k}={shlex.quote(os.environ[k])} " for k in names if os.environ.get(k))
