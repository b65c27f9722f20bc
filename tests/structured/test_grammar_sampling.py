"""The grammar in the sampler, with SmolLM2's real tokenizer and random logits: constrained
rows only ever take allowed tokens, unconstrained rows are untouched, matchers follow the
rows' outputs (forward and back), and both backends compile or refuse with a reason."""

from __future__ import annotations

import json
import re

import pytest
import torch

from warpserve.request import SamplingParams
from warpserve.sampling.sampler import Sampler
from warpserve.sampling.types import SamplingRow
from warpserve.structured.compiler import GrammarCompiler
from warpserve.structured.spec import GrammarError, GrammarRequest, StructuredKind
from warpserve.weights.loader import open_model_source

K = StructuredKind


@pytest.fixture(scope="module")
def tokenizer():  # noqa: ANN201
    return open_model_source("smollm2-135m-instruct").load_tokenizer()


@pytest.fixture(scope="module")
def compiler(tokenizer) -> GrammarCompiler:  # noqa: ANN001
    return GrammarCompiler.for_tokenizer(tokenizer)


def _generate(sampler, rows, tokenizer, num_steps, seed=0):  # noqa: ANN001, ANN202
    """Sample num_steps tokens per row from seeded random logits; rows stop at EOS."""
    gen = torch.Generator().manual_seed(seed)
    vocab = tokenizer.vocab_size
    for _ in range(num_steps):
        live = [r for r in rows if not (r.output_token_ids and r.output_token_ids[-1] == 2)]
        if not live:
            break
        logits = torch.randn(len(live), vocab, generator=gen) * 3
        for row, tok in zip(live, sampler(logits, live), strict=True):
            row.output_token_ids.append(tok.token_id)
    return [list(r.output_token_ids) for r in rows]


def _row(params: SamplingParams, request_id: str | None) -> SamplingRow:
    """request_id None: the sampler keys the row's matcher by its output list."""
    return SamplingRow(params, None, [1], [], request_id=request_id)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_constrained_rows_only_take_allowed_tokens(tokenizer, compiler, temperature) -> None:  # noqa: ANN001
    spec = compiler.compile(GrammarRequest(K.REGEX, r"(yes|no|maybe) [0-9]{2}"))
    sampler = Sampler(tokenizer.vocab_size, tokenizer.eos_token_ids, seed=1)
    rows = [
        _row(SamplingParams(temperature=temperature, structured=spec), f"r{i}") for i in range(4)
    ]
    outputs = _generate(sampler, rows, tokenizer, 32)
    for ids in outputs:
        assert ids[-1] == 2, "the grammar completes and only EOS is left"
        text = tokenizer.decode(ids)
        assert text.split(" ")[0] in ("yes", "no", "maybe") and text.split(" ")[1].isdigit(), text


def test_json_schema_rows_parse_and_validate(tokenizer, compiler) -> None:  # noqa: ANN001
    jsonschema = pytest.importorskip("jsonschema")
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 0, "maximum": 9},
            "b": {"type": "boolean"},
        },
        "required": ["n", "b"],
        "additionalProperties": False,
    }
    spec = compiler.compile(GrammarRequest(K.JSON_SCHEMA, json.dumps(schema)))
    sampler = Sampler(tokenizer.vocab_size, tokenizer.eos_token_ids, seed=2)
    rows = [_row(SamplingParams(temperature=1.0, structured=spec), f"j{i}") for i in range(3)]
    for ids in _generate(sampler, rows, tokenizer, 40):
        assert ids[-1] == 2
        jsonschema.validate(json.loads(tokenizer.decode(ids)), schema)


def test_unconstrained_rows_are_untouched_by_constrained_neighbours(tokenizer, compiler) -> None:  # noqa: ANN001
    spec = compiler.compile(GrammarRequest(K.JSON_OBJECT, ""))
    plain = [SamplingParams(temperature=0.0), SamplingParams(temperature=1.0, seed=5)]
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, tokenizer.vocab_size, generator=gen)
    alone_sampler = Sampler(tokenizer.vocab_size, [2], seed=0)
    alone = alone_sampler(logits[:2], [_seeded(p, f"p{i}") for i, p in enumerate(plain)])
    mixed_sampler = Sampler(tokenizer.vocab_size, [2], seed=0)
    rows = [_seeded(plain[0], "p0"), _row(SamplingParams(temperature=0.0, structured=spec), "c")]
    rows.append(_seeded(plain[1], "p1"))
    before = logits.clone()
    mixed = mixed_sampler(torch.stack([logits[0], logits[2], logits[1]]), rows)
    assert [mixed[0].token_id, mixed[2].token_id] == [t.token_id for t in alone]
    assert torch.equal(logits, before), "the caller's logits are never modified"
    assert tokenizer.decode([mixed[1].token_id]).startswith("{")


def _seeded(params: SamplingParams, request_id: str) -> SamplingRow:
    generator = None if params.seed is None else torch.Generator().manual_seed(params.seed)
    return SamplingRow(params, generator, [1], [], request_id=request_id)


def test_matcher_follows_outputs_forward_and_back(tokenizer, compiler) -> None:  # noqa: ANN001
    spec = compiler.compile(GrammarRequest(K.CHOICE, json.dumps(["alpha beta", "alpha gamma"])))
    sampler = Sampler(tokenizer.vocab_size, [2], seed=0)
    row = _row(SamplingParams(temperature=0.0, structured=spec), "x")
    # Tokens that reached the row without this sampler (drafts, recompute) are caught up.
    row.output_token_ids.extend(tokenizer.encode("alpha gamma", add_special_tokens=False))
    logits = torch.zeros(1, tokenizer.vocab_size)
    assert sampler(logits, [row])[0].token_id == 2  # complete: only EOS is allowed
    del row.output_token_ids[1:]  # rejected tokens: the matcher rolls back to "alpha"
    text = tokenizer.decode([*row.output_token_ids, sampler(logits, [row])[0].token_id])
    assert "alpha beta".startswith(text) or "alpha gamma".startswith(text), text
    assert text != "alpha"
    sampler.release("x")
    assert not sampler.grammar._states


def test_an_output_outside_the_grammar_ends_the_row(tokenizer, compiler) -> None:  # noqa: ANN001
    spec = compiler.compile(GrammarRequest(K.REGEX, "[0-9]+"))
    sampler = Sampler(tokenizer.vocab_size, [2], seed=0)
    row = _row(SamplingParams(temperature=0.0, structured=spec), "bad")
    row.output_token_ids.extend(tokenizer.encode("abc", add_special_tokens=False))
    assert sampler(torch.zeros(1, tokenizer.vocab_size), [row])[0].token_id == 2


@pytest.mark.parametrize(
    ("kind", "source", "words"),
    [
        (K.JSON_SCHEMA, '{"type": "foo"}', "foo"),
        (K.JSON_SCHEMA, '{"type": "array", "uniqueItems": true}', "uniqueItems"),
        (K.REGEX, "[a-", "["),
        (K.GRAMMAR, "root ::= undefined_rule", "undefined_rule"),
    ],
)
def test_bad_constraints_are_refused_with_the_reason(compiler, kind, source, words) -> None:  # noqa: ANN001
    with pytest.raises(GrammarError, match=re.escape(words)):
        compiler.compile(GrammarRequest(kind, source))


def test_llguidance_takes_what_xgrammar_would_not_enforce(compiler) -> None:  # noqa: ANN001
    schema = {
        "allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}}, {"required": ["a"]}]
    }
    spec = compiler.compile(GrammarRequest(K.JSON_SCHEMA, json.dumps(schema)))
    assert spec.grammar.backend == "llguidance"
    plain = compiler.compile(GrammarRequest(K.JSON_SCHEMA, '{"type": "integer"}'))
    assert plain.grammar.backend == "xgrammar"


def test_ebnf_goes_to_xgrammar_and_lark_to_llguidance(tokenizer, compiler) -> None:  # noqa: ANN001
    ebnf = compiler.compile(GrammarRequest(K.GRAMMAR, 'root ::= "yes" | "no"'))
    lark = compiler.compile(GrammarRequest(K.GRAMMAR, 'start: "yes" | "no"'))
    assert (ebnf.grammar.backend, lark.grammar.backend) == ("xgrammar", "llguidance")
    sampler = Sampler(tokenizer.vocab_size, [2], seed=0)
    rows = [_row(SamplingParams(temperature=1.0, structured=lark), "lark")]
    [ids] = _generate(sampler, rows, tokenizer, 8)
    assert tokenizer.decode(ids[:-1]) in ("yes", "no") and ids[-1] == 2


def test_compiles_are_cached_by_request(compiler) -> None:  # noqa: ANN001
    request = GrammarRequest(K.REGEX, "cached[0-9]")
    first = compiler.compile(request)
    hits = compiler.stats.num_cache_hits
    assert compiler.compile(request).grammar is first.grammar
    assert compiler.stats.num_cache_hits == hits + 1
