from warpserve.spec_decode.ngram import NgramIndex


def test_longest_suffix_wins_and_latest_occurrence() -> None:
    index = NgramIndex(1, 3)
    tokens = [1, 2, 3, 9, 2, 3, 7, 8, 5, 1, 2, 3]
    # [1, 2, 3] occurred at 0..2, followed by 9: the 3-gram beats the later [2, 3] -> 7.
    assert index.lookup(tokens, 3) == [9, 2, 3]
    assert index.lookup([*tokens, 4, 2, 3], 2) == [4, 2]  # only [2, 3]: latest at 10..11


def test_no_match_and_short_continuations() -> None:
    index = NgramIndex(2, 4)
    assert index.lookup([1, 2, 3, 4], 5) == []
    assert index.lookup([1, 2, 3, 4, 1, 2], 5) == [3, 4, 1, 2]  # stops at the known end
    assert NgramIndex(2, 4).lookup([7], 3) == []


def test_incremental_equals_from_scratch() -> None:
    tokens = [5, 6, 5, 6, 7, 5, 6, 5, 8, 5, 6]
    incremental = NgramIndex(1, 3)
    for end in range(1, len(tokens) + 1):
        assert incremental.lookup(tokens[:end], 4) == NgramIndex(1, 3).lookup(tokens[:end], 4)
