"""Encoder models (embeddings, classifiers, rerankers) on CPU, end to end.

Build path (`warpserve optimize`, or the service's first start):
    models.py (spec, fp32 PyTorch reference) -> export.py (ONNX) -> optimize.py (ORT
    fusions) -> smooth.py + quantize.py (int8, calibrate.py for activation statistics)
    -> validate.py (accuracy gate against the reference) -> measure.py (side-by-side
    timing) -> report.py; recipes.py names the variants, pipeline.py runs them all,
    artifacts.py says where they are cached.

Request path (`EmbeddingService`, service.py):
    texts -> tokens.py (worker pool, truncation rule, LRU cache) -> batcher.py (token
    budget, length grouping, cancelled texts skipped) -> session.py (ONNX Runtime or
    PyTorch) -> pooled, normalized rows back to the caller in order.

Threads: the caller's event loop; the tokenizer pool; one batcher thread that alone runs
the model (with its own intra-op threads). Nothing here imports the server.
"""
