"""Every failure a client can see, in one exception type and two JSON shapes.

OpenAI routes answer `{"error": {"message", "type", "param", "code"}}`. The Hugging Face
routes (TGI, TEI, the Inference API) answer TGI's `{"error": message, "error_type": kind}`,
which `huggingface_hub.InferenceClient` turns into its typed exceptions.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}
_TGI_TYPES = {400: "validation", 422: "validation", 429: "overloaded", 413: "validation"}
# Routes whose errors use TGI's shape; everything else uses OpenAI's.
HF_PATHS = ("/generate", "/generate_stream", "/tokenize", "/embed", "/rerank", "/predict")


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers

    def openai_body(self) -> dict[str, object]:
        kind = _OPENAI_TYPES.get(self.status, "invalid_request_error")
        return {
            "error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        }

    def tgi_body(self) -> dict[str, object]:
        return {"error": self.message, "error_type": _TGI_TYPES.get(self.status, self.code or "")}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def from_value_error(exc: ValueError, renames: dict[str, str] | None = None) -> APIError:
    """A ValueError from SamplingParams or the engine: its first word names the field."""
    message = str(exc)
    field = message.split(" ", 1)[0]
    if renames and field in renames:
        message = renames[field] + message[len(field) :]
        field = renames[field]
    param = field if field.isidentifier() else None
    return bad_request(message, param=param)


def overloaded(retry_after_s: int, message: str = "the server is overloaded") -> APIError:
    return APIError(
        429,
        f"{message}; retry after {retry_after_s} s",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(retry_after_s)},
    )


def unavailable(message: str, retry_after_s: int | None = None) -> APIError:
    headers = None if retry_after_s is None else {"Retry-After": str(retry_after_s)}
    return APIError(503, message, code="service_unavailable", headers=headers)


def unknown_model(name: str, served: list[str]) -> APIError:
    return bad_request(
        f"model '{name}' is not served here; available: {', '.join(served)}",
        param="model",
        code="model_not_found",
    )


def is_hf_path(path: str) -> bool:
    return path == "/" or path.startswith("/models/") or path in HF_PATHS


def error_response(request: Request, err: APIError) -> JSONResponse:
    body = err.tgi_body() if is_hf_path(request.url.path) else err.openai_body()
    return JSONResponse(body, status_code=err.status, headers=err.headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _on_api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _on_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _on_http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _on_unexpected)


async def _on_api_error(request: Request, exc: APIError) -> JSONResponse:
    return error_response(request, exc)


async def _on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    # OpenAI routes answer 400 like OpenAI and vLLM; the TGI family answers 422 like TGI.
    status = 422 if is_hf_path(request.url.path) else 400
    return error_response(request, validation_error(exc.errors(), status))


def validation_error(errors: object, status: int = 400) -> APIError:
    first = next(iter(errors), None) if isinstance(errors, list | tuple) else None
    if not isinstance(first, dict):
        return APIError(status, "invalid request body")
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    if first.get("type") == "json_invalid":
        return APIError(status, f"malformed JSON: {first.get('msg', '')}")
    param = ".".join(loc) or None
    where = f"{param}: " if param else ""
    return APIError(status, f"{where}{first.get('msg', 'invalid value')}", param=param)


async def _on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    err = APIError(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
    return error_response(request, err)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error serving %s", request.url.path, exc_info=exc)
    return error_response(request, APIError(500, "internal server error"))
