"""Fault injection for reliability tests (`warpserve bench soak`): POST /debug/stall.

Registered only when `ServerConfig.enable_debug_faults` is set (WARPSERVE_DEBUG_FAULTS=1),
so a default server has no such route. A stall makes the engine thread's next step sleep
first, as a step stuck in a kernel would: requests wait, /health reports the stall, and
the HTTP side must keep answering.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from warpserve.server.errors import APIError
from warpserve.server.state import get_state

router = APIRouter(tags=["debug"])
MAX_STALL_S = 60.0


@router.post("/debug/stall")
async def stall(request: Request, seconds: float = Query(gt=0.0, le=MAX_STALL_S)) -> JSONResponse:
    engine = get_state(request).require_engine(None)
    stall_next_step(getattr(engine, "engine", None), seconds)
    return JSONResponse({"stalled_next_step_s": seconds})


def stall_next_step(step_owner: object, seconds: float) -> None:
    """Make `step_owner.step()` (AsyncLLM's LLMEngine, called by the engine thread) sleep
    `seconds` before its next run, once."""
    step: Callable[[], object] | None = getattr(step_owner, "step", None)
    if step is None:
        raise APIError(501, "this engine has no step to stall")

    def stalled_step() -> object:
        vars(step_owner).pop("step", None)  # one step only: the class's method again
        time.sleep(seconds)
        return step()

    step_owner.step = stalled_step  # type: ignore[attr-defined]
