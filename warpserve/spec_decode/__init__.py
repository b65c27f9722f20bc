"""Speculative decoding: proposers (n-gram prompt lookup, a draft model, layer skipping),
lossless verification by rejection sampling, and a per-request adaptive draft length."""
