"""Structured output: JSON schema, regex, choice, grammar and tool-call constraints,
enforced token by token in the sampler. See docs/STRUCTURED.md."""
