"""Server-sent events: the response that streams, closes its engine streams, and never 500s."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable

from fastapi.responses import StreamingResponse

from warpserve.server.errors import APIError
from warpserve.server.generation import StreamGroup

logger = logging.getLogger(__name__)

DONE = "data: [DONE]\n\n"


def event(payload: object, prefix: str = "data: ") -> str:
    return f"{prefix}{json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


def sse_response(
    group: StreamGroup,
    events: AsyncIterator[str],
    error_event: Callable[[APIError], str],
    done: str | None = DONE,
) -> StreamingResponse:
    """Stream `events`; an error after the headers went out becomes one last error event."""

    async def body() -> AsyncIterator[str]:
        try:
            async for chunk in events:
                yield chunk
        except APIError as err:
            yield error_event(err)
        finally:
            await group.close()
        if done is not None:
            yield done

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)
