"""Pure ASGI middleware: API keys (401) and request size limits (413).

Pure ASGI rather than Starlette's BaseHTTPMiddleware, which would buffer streamed
responses and hide client disconnects from the routes.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from warpserve.server.errors import APIError, is_hf_path

# Probes and scrapers need no key; everything else does when keys are configured.
_OPEN_PATHS = frozenset({"/health", "/ready", "/metrics", "/docs", "/openapi.json"})


def _reply(scope: Scope, err: APIError) -> JSONResponse:
    body = err.tgi_body() if is_hf_path(scope.get("path", "")) else err.openai_body()
    return JSONResponse(body, status_code=err.status, headers=err.headers)


class APIKeyMiddleware:
    def __init__(self, app: ASGIApp, api_keys: tuple[str, ...]) -> None:
        self.app = app
        self._keys = [key.encode() for key in api_keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or scope["path"] in _OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if not self._is_allowed(Headers(scope=scope)):
            err = APIError(
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await _reply(scope, err)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _is_allowed(self, headers: Headers) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            token = headers.get("x-api-key", "")
        given = token.strip().encode()
        # Compare against every key, so timing reveals neither the key nor which matched.
        matches = [hmac.compare_digest(given, key) for key in self._keys]
        return any(matches)


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self._max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_bytes:
            err = APIError(413, self._message())
            await _reply(scope, err)(scope, receive, send)
            return
        await self.app(scope, self._counting(receive), send)

    def _message(self) -> str:
        return f"the request body is larger than {self._max_bytes} bytes"

    def _counting(self, receive: Receive) -> Receive:
        """A chunked body has no Content-Length: count it as it arrives."""
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max_bytes:
                    # FastAPI re-raises HTTPExceptions from body reading (others become
                    # 400s); the app's handler renders it in the route's error shape.
                    raise HTTPException(413, detail=self._message())
            return message

        return counted
