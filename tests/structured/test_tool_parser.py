"""The Hermes tool-call parser: any chunking of a text gives the events of the whole text."""

from __future__ import annotations

import random

import pytest

from warpserve.structured.tool_parser import (
    ArgumentsDelta,
    ContentDelta,
    HermesToolParser,
    ToolCallStart,
    parse_all,
)

TWO_CALLS = (
    'Sure.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "d": {"x": 1}}}\n'
    '</tool_call>\n<tool_call>\n{"name": "add", "arguments": {}}\n</tool_call>'
)


def _reassemble(events: list) -> tuple[str | None, list[tuple[str, str]]]:  # noqa: ANN001
    content = "".join(e.text for e in events if isinstance(e, ContentDelta))
    calls: list[list[str]] = []
    for e in events:
        if isinstance(e, ToolCallStart):
            calls.append([e.name, ""])
        elif isinstance(e, ArgumentsDelta):
            calls[e.index][1] += e.text
    return content or None, [(n, a) for n, a in calls]


def test_whole_text() -> None:
    assert parse_all(TWO_CALLS) == (
        "Sure.",
        [("get_weather", '{"city": "Paris", "d": {"x": 1}}'), ("add", "{}")],
    )


@pytest.mark.parametrize(
    "text",
    [
        TWO_CALLS,
        "no calls here, just < and <tool text",
        '<tool_call>\n{"name": "f", "arguments": {"a": "}"}}',  # cut by max_tokens
        '<tool_call>\n{"name": ',  # cut inside the header: stays text
    ],
)
def test_any_chunking_reassembles_to_the_whole(text: str) -> None:
    rng = random.Random(0)
    for _ in range(200):
        parser, events, i = HermesToolParser(), [], 0
        while i < len(text):
            j = i + rng.randint(1, 6)
            events += parser.feed(text[i:j])
            i = j
        events += parser.finish()
        assert _reassemble(events) == parse_all(text)


def test_text_that_only_looks_like_a_tag_is_content() -> None:
    assert parse_all("a <tool b") == ("a <tool b", [])
    assert parse_all('<tool_call>\n{"name": ') == ('<tool_call>\n{"name": ', [])
