"""KV caches and weights on huge pages: the advice changes placement, never contents."""

import torch

from warpserve.execution.memory import HUGE_PAGE, on_huge_pages, zeros_on_huge_pages


def test_zeros_on_huge_pages_is_zeros() -> None:
    for shape, dtype in [((2, 3), torch.float32), ((2, 64, 16, 3, 64), torch.float32)]:
        tensor = zeros_on_huge_pages(shape, dtype)
        assert tensor.shape == shape and tensor.dtype == dtype and tensor.is_contiguous()
        assert not tensor.any()
    big = zeros_on_huge_pages((3 * HUGE_PAGE // 4 + 5,), torch.float32)  # spans > 2 pages
    big[-1] = 1.0
    assert big.sum() == 1.0


def test_on_huge_pages_copies() -> None:
    for shape in [(5, 7), (HUGE_PAGE // 4 + 3, 2)]:  # under one page; over two
        tensor = torch.randn(shape)
        copy = on_huge_pages(tensor)
        assert copy.is_contiguous() and torch.equal(copy, tensor)
        assert copy.data_ptr() != tensor.data_ptr()
    big = on_huge_pages(torch.ones(HUGE_PAGE + 1, dtype=torch.uint8))
    assert big.data_ptr() % HUGE_PAGE == 0  # starts on a page: every full 2 MB can be huge
