"""Hugging Face request bodies: TGI's generate, TEI's embed / rerank / predict, and the
Inference API's `{"inputs", "parameters"}`. Range-checked like TGI, so bad input is a 422
naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from warpserve.server.openai.schemas import INT64_MAX

NonEmpty = Annotated[str, Field(min_length=1)]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)


class TGIGrammar(Body):
    type: Literal["json", "regex", "json_schema"]
    value: str | dict[str, Any]


class GenerateParameters(Body):
    do_sample: bool = False
    max_new_tokens: int | None = Field(None, ge=1, le=INT64_MAX)
    temperature: float | None = Field(None, gt=0.0, le=100.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1, le=1_000_000)
    repetition_penalty: float | None = Field(None, ge=0.01, le=10.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    stop: Annotated[list[NonEmpty], Field(max_length=16)] = []
    seed: int | None = Field(None, ge=0, le=INT64_MAX)
    details: bool = False
    decoder_input_details: bool = False
    return_full_text: bool | None = False
    top_n_tokens: int | None = Field(None, ge=0, le=20)
    truncate: int | None = Field(None, ge=1, le=INT64_MAX)
    best_of: int | None = Field(None, ge=1, le=1)
    typical_p: float | None = Field(None, description="not supported: must be absent")
    watermark: bool = Field(False, description="not supported: must be false")
    grammar: TGIGrammar | None = None  # docs/STRUCTURED.md
    adapter_id: str | None = Field(None, description="not supported: must be absent")


class GenerateRequest(Body):
    inputs: NonEmpty
    parameters: GenerateParameters = GenerateParameters()
    stream: bool = False  # read by the compat route POST /


class TokenizeRequest(Body):
    inputs: NonEmpty
    add_special_tokens: bool = True


TruncationDirection = Literal["right", "Right", "left", "Left"]


class EmbedRequest(Body):
    inputs: NonEmpty | Annotated[list[NonEmpty], Field(min_length=1)]
    normalize: bool = True
    truncate: bool = False
    truncation_direction: TruncationDirection = "right"
    prompt_name: str | None = Field(None, description="not supported: must be absent")
    dimensions: int | None = Field(None, ge=1, le=65536)


class RerankRequest(Body):
    query: NonEmpty
    texts: Annotated[list[NonEmpty], Field(min_length=1)]
    truncate: bool = False
    truncation_direction: TruncationDirection = "right"
    raw_scores: bool = False
    return_text: bool = False


class PredictRequest(Body):
    inputs: NonEmpty | Annotated[list[NonEmpty], Field(min_length=1)]
    truncate: bool = False
    truncation_direction: TruncationDirection = "right"
    raw_scores: bool = False


class InferenceRequest(BaseModel):
    """The Inference API shape; `inputs` and `parameters` are checked per task."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)
    inputs: object = Field(..., description="a string, a list of strings, or a task's object")
    parameters: dict[str, object] | None = None
    stream: bool = False
