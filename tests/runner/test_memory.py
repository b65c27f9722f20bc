"""KV caches and weights on huge pages: the advice changes placement, never contents."""

import torch

from warpserve.runner.memory import HUGE_PAGE, zeros_on_huge_pages


def test_zeros_on_huge_pages_is_zeros() -> None:
    for shape, dtype in [((2, 3), torch.float32), ((2, 64, 16, 3, 64), torch.float32)]:
        tensor = zeros_on_huge_pages(shape, dtype)
        assert tensor.shape == shape and tensor.dtype == dtype and tensor.is_contiguous()
        assert not tensor.any()
    big = zeros_on_huge_pages((3 * HUGE_PAGE // 4 + 5,), torch.float32)  # spans > 2 pages
    big[-1] = 1.0
    assert big.sum() == 1.0
