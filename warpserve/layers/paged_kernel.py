"""The C++ paged decode-attention kernel: built on first use, cached on disk, optional.

If the compiler is missing or the build fails, `load()` returns None and attention falls
back to gather + scaled_dot_product_attention (slower, same results within rounding).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from warpserve.config import cache_dir

logger = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("csrc") / "paged_attention.cpp"


@functools.cache
def load():
    """The compiled module (with paged_decode_attention), or None if it cannot be built."""
    try:
        from torch.utils.cpp_extension import load as load_extension

        build_dir = cache_dir() / "kernels" / "paged_attention"
        build_dir.mkdir(parents=True, exist_ok=True)
        return load_extension(
            name="warpserve_paged_attention",
            sources=[str(_SOURCE)],
            extra_cflags=["-O3", "-march=native", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            build_directory=str(build_dir),
            verbose=False,
        )
    except Exception as exc:  # any build failure means: use the portable path
        logger.warning("paged attention kernel unavailable (%s); using the torch path", exc)
        return None
