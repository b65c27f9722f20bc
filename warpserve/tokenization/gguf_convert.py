"""A GGUF file's tokenizer as a Transformers fast tokenizer, converted once and kept on disk.

The conversion (vocabulary and merges out of the GGUF metadata, rebuilt as a `tokenizers`
BPE/Unigram model with the file's special tokens and chat template) is Transformers' own, so
we tokenize exactly as `AutoTokenizer.from_pretrained(..., gguf_file=...)` does. It takes
seconds, so the result is saved under `<cache>/tokenizers/<key>/` where the key hashes the
file's path, size and mtime (and the Transformers version that converted it); reloading a
saved tokenizer.json takes a fraction of a second. Entries are capped, least recently used
evicted first.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from pathlib import Path

import transformers
from transformers import PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the conversion below changes, to ignore older entries
MAX_CACHED_TOKENIZERS = 16


def load_gguf_tokenizer(
    gguf_path: Path, cache_root: Path, max_entries: int = MAX_CACHED_TOKENIZERS
) -> PreTrainedTokenizerFast:
    """The tokenizer of `gguf_path`, from `cache_root` if converted before."""
    entry = cache_root / cache_key(gguf_path)
    if (entry / "tokenizer.json").is_file():
        try:
            hf = PreTrainedTokenizerFast.from_pretrained(str(entry), local_files_only=True)
        except (OSError, ValueError) as exc:  # a damaged entry: convert again
            logger.warning("ignoring cached tokenizer %s: %s", entry, exc)
        else:
            os.utime(entry)  # mtime is the LRU clock
            return hf
    hf = convert_gguf_tokenizer(gguf_path)
    shutil.rmtree(entry, ignore_errors=True)  # a damaged entry would block the rename
    _store(hf, entry)
    evict_oldest(cache_root, max_entries)
    return hf


def convert_gguf_tokenizer(gguf_path: Path) -> PreTrainedTokenizerFast:
    from transformers.integrations.gguf import convert_gguf_tokenizer as convert
    from transformers.integrations.gguf import get_gguf_tokenizer

    architecture, tokenizer_dict, tokenizer_config = get_gguf_tokenizer(str(gguf_path))
    backend, extra_kwargs = convert(architecture, tokenizer_dict)
    return PreTrainedTokenizerFast(tokenizer_object=backend, **tokenizer_config, **extra_kwargs)


def cache_key(gguf_path: Path) -> str:
    stat = gguf_path.stat()
    identity = f"{gguf_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    identity += f"|{transformers.__version__}|{FORMAT_VERSION}"
    return hashlib.sha256(identity.encode()).hexdigest()[:24]


def evict_oldest(cache_root: Path, max_entries: int) -> list[Path]:
    """Delete the least recently used entries beyond `max_entries`; returns what was deleted."""
    entries = [p for p in cache_root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    entries.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)
    evicted = entries[max_entries:]
    for path in evicted:
        shutil.rmtree(path, ignore_errors=True)
    return evicted


def _store(hf: PreTrainedTokenizerFast, entry: Path) -> None:
    """Write to a temporary folder, then rename: readers never see a half-written entry."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = entry.parent / f".staging-{entry.name}-{uuid.uuid4().hex[:8]}"
    try:
        hf.save_pretrained(str(staging))
        os.replace(staging, entry)
    except OSError as exc:  # another process stored it first, or the disk is read-only
        logger.debug("not caching tokenizer at %s: %s", entry, exc)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
