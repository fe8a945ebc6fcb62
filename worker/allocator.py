"""glibc's allocator set for a process that frees and re-allocates the same large buffers every pass.

By default glibc returns freed memory to the kernel as soon as 128 KiB lie free at the top of the
heap, and serves large blocks with ``mmap`` (a threshold that moves, up to 32 MiB). A forward
pass allocates its activations, tens of MiB, and frees them at the end, so the next pass
page-faults all of them in again. Measured on a 2-core AMD EPYC with ``python -m
benchmarks.allocator`` (MiniLM-L6 in bf16, 192 IMDB reviews of 300 tokens per run, five
alternating pairs of fresh processes): 131,000 minor page faults and 0.25 s of kernel time per
run with glibc's defaults; with freed memory kept in the process 4,700 faults and 0.05 s, and
the passes 1.04x as fast (the kept side won four pairs of five).

The cost: the process keeps its peak memory between batches instead of shrinking back. A worker
reaches that peak on every batch anyway; ``SENTIQ_WORKER_KEEP_FREED_MEMORY=false`` turns it off.
A user's own trim or mmap threshold or top pad (``MALLOC_*_`` variables or ``GLIBC_TUNABLES``)
wins: when one of them is set, nothing is changed here. Other C libraries (musl, macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
from collections.abc import Mapping

log = logging.getLogger(__name__)

# mallopt(3) parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the heap (reused) rather than from a fresh mmap.
MMAP_THRESHOLD_BYTES = 256 * 1024 * 1024
#: Free memory at the top of the heap is returned to the kernel only beyond this.
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024
#: glibc documents 32 MiB as the largest mmap threshold; newer versions take more.
FALLBACK_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
#: The glibc settings this module would change, as environment variables and as tunables: when
#: a user has set one of them, the allocator is theirs.
_GLIBC_MALLOC_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")
_GLIBC_MALLOC_TUNABLES = (
    "glibc.malloc.trim_threshold",
    "glibc.malloc.mmap_threshold",
    "glibc.malloc.top_pad",
)


def keep_freed_memory(environ: Mapping[str, str] | None = None) -> bool:
    """Keep freed memory in this process for reuse (glibc only); True when it was changed.

    Left alone (False) on other C libraries, or when ``environ`` (default ``os.environ``) sets
    glibc's trim or mmap threshold or top pad, as ``MALLOC_*_`` variables or in ``GLIBC_TUNABLES``.
    """
    environ = os.environ if environ is None else environ
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        log.debug("not glibc: the allocator is left as it is")
        return False
    chosen = [name for name in _GLIBC_MALLOC_VARIABLES if name in environ]
    tunables = environ.get("GLIBC_TUNABLES", "")
    if any(f"{name}=" in tunables for name in _GLIBC_MALLOC_TUNABLES):
        chosen.append("GLIBC_TUNABLES")
    if chosen:
        log.info("allocator left as %s set it", ", ".join(chosen))
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError as error:
        log.debug("libc.so.6 not loadable (%s): the allocator is left as it is", error)
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    # The mmap threshold first: fixing either one ends glibc's dynamic thresholds, and a fixed
    # trim threshold beside the default 128 KiB mmap threshold would send every large block to
    # mmap, worse than the defaults.
    mmap_bytes = MMAP_THRESHOLD_BYTES
    if libc.mallopt(_M_MMAP_THRESHOLD, mmap_bytes) != 1:
        mmap_bytes = FALLBACK_MMAP_THRESHOLD_BYTES
        if libc.mallopt(_M_MMAP_THRESHOLD, mmap_bytes) != 1:
            log.warning(
                "glibc refused an mmap threshold of %d MiB: the allocator is left as it is", mmap_bytes >> 20
            )
            return False
    if libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) != 1:
        log.warning("glibc refused the trim threshold: freed memory may still go back to the kernel")
        return False
    log.info(
        "allocator: freed memory kept for reuse (blocks up to %d MiB from the heap)",
        mmap_bytes >> 20,
    )
    return True
