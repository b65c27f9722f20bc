"""warpserve: a fast CPU-first inference engine and API server for Transformers models."""

__version__ = "0.1.0"
