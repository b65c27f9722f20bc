"""Build the package's C++ extensions once per machine, cached under cache_dir()/kernels.

Sources are compiled with -march=native (the cache lives on the machine that built it) and
OpenMP, with csrc/ on the include path for the header they share (attention.h). A missing
compiler or a failed build returns None: every caller has a torch path.

A build's folder is named after a digest of csrc/<source> and the headers: checkouts of
different versions on one machine (a worktree at another commit) each keep their own
build instead of recompiling over each other's .so while the other is loading it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from types import ModuleType

from warpserve.config import cache_dir

logger = logging.getLogger(__name__)

CSRC = Path(__file__).with_name("csrc")


def build(name: str, source: str) -> ModuleType | None:
    """Compile (or load the cached build of) csrc/<source> as module `name`."""
    try:
        from torch.utils.cpp_extension import load as load_extension

        build_dir = cache_dir() / "kernels" / f"{name}-{_sources_digest(source)}"
        build_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        module = load_extension(
            name=name,
            sources=[str(CSRC / source)],
            extra_cflags=["-O3", "-march=native", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            extra_include_paths=[str(CSRC)],
            build_directory=str(build_dir),
            verbose=False,
        )
        logger.info(
            "extension %s ready in %.1f s (%s)", name, time.perf_counter() - started, build_dir
        )
        return module
    except Exception as exc:  # any build failure means: use the portable path
        logger.warning("C++ extension %s unavailable (%s); using the torch path", name, exc)
        return None


def _sources_digest(source: str) -> str:
    digest = hashlib.sha256((CSRC / source).read_bytes())
    for header in sorted(CSRC.glob("*.h")):
        digest.update(header.read_bytes())
    return digest.hexdigest()[:12]
