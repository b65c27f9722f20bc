"""Hermes tool calls out of generated text, incrementally: text in, events out.

`<tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>` becomes a ToolCallStart
(once the name is known) and ArgumentsDelta pieces (the raw JSON text of the arguments, as
it arrives); anything outside calls is ContentDelta. Text that might be the beginning of
`<tool_call>`, and the tail of a call that might be its closing `}` and end tag, is held
back until it is known. The non-streamed answer is the same parser fed the whole text at
once, so streamed deltas always reassemble to the non-streamed result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from warpserve.structured.tools import CALL_END, CALL_START

# Up to the first character of the arguments' value (lookahead: whitespace before it
# may still be arriving).
_HEADER = re.compile(
    r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*(?=\S)', re.S
)


@dataclass(frozen=True)
class ContentDelta:
    text: str


@dataclass(frozen=True)
class ToolCallStart:
    index: int
    name: str


@dataclass(frozen=True)
class ArgumentsDelta:
    index: int
    text: str


Event = ContentDelta | ToolCallStart | ArgumentsDelta


class HermesToolParser:
    def __init__(self) -> None:
        self._buffer = ""  # text not yet turned into events
        self._in_call = False
        self._header_done = False
        self.num_calls = 0

    def feed(self, text: str) -> list[Event]:
        self._buffer += text
        events: list[Event] = []
        while True:
            before = (self._buffer, self._in_call, self._header_done)
            events.extend(self._step())
            if (self._buffer, self._in_call, self._header_done) == before:
                return events

    def finish(self) -> list[Event]:
        """The end of the text: flush what was held back (an unfinished call keeps its
        partial arguments; an unfinished header is content)."""
        events = self.feed("")
        rest, self._buffer = self._buffer, ""
        if not rest:
            return events
        if self._in_call and self._header_done:
            events.append(ArgumentsDelta(self.num_calls - 1, rest))
        elif self._in_call:
            events.append(self._content(CALL_START + rest))
        else:
            events.append(self._content(rest))
        return [e for e in events if not (isinstance(e, ContentDelta) and not e.text)]

    def _step(self) -> list[Event]:
        if not self._in_call:
            return self._outside()
        if not self._header_done:
            return self._header()
        return self._arguments()

    def _outside(self) -> list[Event]:
        start = self._buffer.find(CALL_START)
        if start >= 0:
            text, self._buffer = self._buffer[:start], self._buffer[start + len(CALL_START) :]
            self._in_call = True
            return [self._content(text)] if text else []
        keep = _partial_suffix(self._buffer, CALL_START)
        text = self._buffer[: len(self._buffer) - keep]
        self._buffer = self._buffer[len(text) :]
        return [self._content(text)] if text else []

    def _header(self) -> list[Event]:
        match = _HEADER.match(self._buffer)
        if match is None:
            return []
        self._buffer = self._buffer[match.end() :]
        self._header_done = True
        self.num_calls += 1
        return [ToolCallStart(self.num_calls - 1, _unescape(match.group(1)))]

    def _arguments(self) -> list[Event]:
        index = self.num_calls - 1
        end = self._buffer.find(CALL_END)
        if end >= 0:
            body, self._buffer = self._buffer[:end], self._buffer[end + len(CALL_END) :]
            self._in_call = self._header_done = False
            args = _strip_wrapper(body)
            return [ArgumentsDelta(index, args)] if args else []
        # Everything from the last "}" on may be the wrapper's closing brace and end tag.
        cut = self._buffer.rfind("}")
        safe = self._buffer if cut < 0 else self._buffer[:cut]
        safe = safe[: len(safe) - _partial_suffix(safe, CALL_END)]
        self._buffer = self._buffer[len(safe) :]
        return [ArgumentsDelta(index, safe)] if safe else []

    def _content(self, text: str) -> ContentDelta:
        # Whitespace between and after calls (the separator) is not content.
        return ContentDelta("" if self.num_calls and not text.strip() else text)


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of tag."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


def _strip_wrapper(body: str) -> str:
    """The arguments' text from what is left before the end tag: drop the wrapper's `}`."""
    body = body.rstrip()
    return body[:-1].rstrip() if body.endswith("}") else body


def _unescape(name: str) -> str:
    return name.replace('\\"', '"').replace("\\\\", "\\")


def parse_all(text: str) -> tuple[str | None, list[tuple[str, str]]]:
    """Content (None when empty) and (name, arguments) of each call of a whole text."""
    parser = HermesToolParser()
    events = parser.feed(text) + parser.finish()
    content = "".join(e.text for e in events if isinstance(e, ContentDelta))
    calls: list[list[str]] = []
    for event in events:
        if isinstance(event, ToolCallStart):
            calls.append([event.name, ""])
        elif isinstance(event, ArgumentsDelta):
            calls[event.index][1] += event.text
    return (content or None), [(name, args) for name, args in calls]
