"""Tiny artifacts for the loader tests: random Llama models saved as HF folders and GGUF files
written with `gguf.GGUFWriter`, quantized with `gguf.quants` (or random blocks for the
K-quants, which `gguf.quants` cannot quantize)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as T

# byte offsets of the float16 scale fields in each block format
F16_FIELDS = {
    T.Q4_0: (0,),
    T.Q4_1: (0, 2),
    T.Q5_0: (0,),
    T.Q5_1: (0, 2),
    T.Q8_0: (0,),
    T.Q2_K: (80, 82),
    T.Q3_K: (108,),
    T.Q4_K: (0, 2),
    T.Q5_K: (0, 2),
    T.Q6_K: (208,),
}
QUANTIZABLE = {T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0}  # gguf.quants can write these
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_llama_config(**overrides):
    from transformers import LlamaConfig

    values = dict(
        vocab_size=96,
        hidden_size=256,  # a multiple of 256, so every K-quant fits a row
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=2,
    )
    config = LlamaConfig(**(values | overrides))
    config.architectures = ["LlamaForCausalLM"]
    return config


def tiny_llama_state_dict(config, seed: int = 0) -> dict[str, torch.Tensor]:
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # norms away from 1.0, so a misplaced norm would show
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.uniform_(0.5, 1.5)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def random_blocks(ggml_type: T, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Random bytes in the block layout of `ggml_type`, with finite float16 scales."""
    block_size, block_bytes = GGML_QUANT_SIZES[ggml_type]
    raw = rng.integers(0, 256, size=(rows, cols // block_size * block_bytes), dtype=np.uint8)
    blocks = raw.reshape(-1, block_bytes)
    for start in F16_FIELDS[ggml_type]:
        scales = (rng.standard_normal((blocks.shape[0], 1)) * 0.01).astype(np.float16)
        blocks[:, start : start + 2] = scales.view(np.uint8)
    return raw


def llama_cpp_permute(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """What llama.cpp's converter does to Q/K rows (its rotary layout): the inverse we undo."""
    return (
        weight.reshape(num_heads, 2, weight.shape[0] // num_heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


HF_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
HF_LAYER_TO_GGUF = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_name(hf_name: str) -> str:
    if hf_name in HF_TO_GGUF:
        return HF_TO_GGUF[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{layer}.{HF_LAYER_TO_GGUF[module]}.{kind}"


@dataclass
class TinyGGUF:
    path: Path
    config: object
    original: dict[str, torch.Tensor]  # the HF tensors before permutation and quantization
    raw: dict[str, tuple[T, np.ndarray]] = field(default_factory=dict)  # gguf name -> stored


def tokenizer_vocab() -> tuple[list[str], list[int], list[str]]:
    """A tiny byte-level BPE: (tokens by id, ggml token types, merges)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(["hello world, hello tokens. " * 8, "chat templates say hi"], trainer)
    vocab = tok.get_vocab()
    tokens = sorted(vocab, key=vocab.__getitem__)
    types = [3 if t in SPECIAL_TOKENS else 1 for t in tokens]  # 3: CONTROL, 1: NORMAL
    merges = json.loads(tok.to_str())["model"]["merges"]  # [[left, right], ...]
    return tokens, types, [" ".join(pair) for pair in merges]


def write_gguf(
    path: Path,
    config,
    tensors: dict[str, tuple[T, np.ndarray]],
    architecture: str = "llama",
    with_tokenizer: bool = True,
) -> None:
    """Write config metadata, an optional tokenizer and already-encoded tensors (gguf name ->
    (type, raw array: float data for F32/F16, bytes for block types))."""
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    if with_tokenizer:
        tokens, types, merges = tokenizer_vocab()
        writer.add_tokenizer_model("gpt2")
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(merges)
        writer.add_bos_token_id(tokens.index("<|endoftext|>"))
        writer.add_eos_token_id(tokens.index("<|im_end|>"))
        writer.add_eot_token_id(tokens.index("<|endoftext|>"))
        writer.add_chat_template(CHAT_TEMPLATE)
    for name, (ggml_type, data) in tensors.items():
        if ggml_type in (T.F32, T.F16):
            writer.add_tensor(name, data)
        else:
            writer.add_tensor(name, data, raw_dtype=ggml_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def encode_tensor(values: np.ndarray, ggml_type: T, rng: np.random.Generator) -> np.ndarray:
    if ggml_type == T.F32:
        return values.astype(np.float32)
    if ggml_type == T.F16:
        return values.astype(np.float16)
    if ggml_type == T.BF16:
        return gguf.quants.quantize(values.astype(np.float32), T.BF16)
    if ggml_type in QUANTIZABLE:
        return gguf.quants.quantize(values.astype(np.float32), ggml_type)
    return random_blocks(ggml_type, values.shape[0], values.shape[1], rng)


# Which type each tensor of the tiny model is stored as: every supported block type appears,
# layer 1's attention is exact (F32) so the permutation round trip can be checked bit for bit.
TYPE_PLAN = {
    "token_embd.weight": T.Q8_0,
    "output.weight": T.Q6_K,
    "blk.0.attn_q.weight": T.Q4_K,
    "blk.0.attn_k.weight": T.Q4_0,
    "blk.0.attn_v.weight": T.Q4_1,
    "blk.0.attn_output.weight": T.Q5_K,
    "blk.0.ffn_gate.weight": T.Q2_K,
    "blk.0.ffn_up.weight": T.Q3_K,
    "blk.0.ffn_down.weight": T.Q5_0,
    "blk.1.attn_q.weight": T.F32,
    "blk.1.attn_k.weight": T.F32,
    "blk.1.attn_v.weight": T.F16,
    "blk.1.attn_output.weight": T.BF16,
    "blk.1.ffn_gate.weight": T.Q5_1,
    "blk.1.ffn_up.weight": T.Q8_0,
    "blk.1.ffn_down.weight": T.Q6_K,
}


def build_tiny_gguf(path: Path, tie: bool = False, seed: int = 0) -> TinyGGUF:
    config = tiny_llama_config(tie_word_embeddings=tie)
    original = tiny_llama_state_dict(config, seed)
    rng = np.random.default_rng(seed)
    tiny = TinyGGUF(path, config, original)
    for hf_name, tensor in original.items():
        if tie and hf_name == "lm_head.weight":
            continue
        name = gguf_name(hf_name)
        values = tensor.numpy()
        if ".attn_q." in name:
            values = llama_cpp_permute(values, config.num_attention_heads)
        elif ".attn_k." in name:
            values = llama_cpp_permute(values, config.num_key_value_heads)
        ggml_type = TYPE_PLAN.get(name, T.F32)
        tiny.raw[name] = (ggml_type, encode_tensor(values, ggml_type, rng))
    write_gguf(path, config, tiny.raw)
    return tiny


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> TinyGGUF:
    return build_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")
