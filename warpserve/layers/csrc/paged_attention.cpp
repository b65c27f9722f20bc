// Decode attention that reads K/V in place through block tables (no gather copy).
//
// One task per (sequence, KV head): the G = Hq / Hkv query heads that share the KV head
// are scored together, so each key and value vector is loaded once per group (attend() in
// attention.h, the same code the fused decode step runs). Every sequence's result depends
// only on its own data, never on the rest of the batch.
#include <torch/extension.h>
#include <omp.h>

#include <vector>

#include "attention.h"

namespace {

template <typename T>
void run(const torch::Tensor& q, const torch::Tensor& k_cache, const torch::Tensor& v_cache,
         const torch::Tensor& block_tables, const torch::Tensor& context_lens, double scale,
         torch::Tensor& out) {
  const int64_t num_seqs = q.size(0), num_heads = q.size(1), head_dim = q.size(2);
  const int64_t block_size = k_cache.size(1), num_kv_heads = k_cache.size(2);
  const int64_t group = num_heads / num_kv_heads, max_blocks = block_tables.size(1);
  const int64_t max_len = context_lens.max().item<int64_t>();
  const float* q_ptr = q.data_ptr<float>();
  const T* k_ptr = k_cache.data_ptr<T>();
  const T* v_ptr = v_cache.data_ptr<T>();
  const int64_t* tables = block_tables.data_ptr<int64_t>();
  const int64_t* lens = context_lens.data_ptr<int64_t>();
  float* out_ptr = out.data_ptr<float>();
#pragma omp parallel
  {
    std::vector<float> scores(group * max_len);
#pragma omp for schedule(dynamic, 1) collapse(2)
    for (int64_t b = 0; b < num_seqs; ++b) {
      for (int64_t h = 0; h < num_kv_heads; ++h) {
        const int64_t offset = (b * num_heads + h * group) * head_dim;
        warpserve::attend<T>(q_ptr + offset, k_ptr, v_ptr, tables + b * max_blocks, lens[b],
                             block_size, num_kv_heads, head_dim, group, h,
                             static_cast<float>(scale), scores.data(), out_ptr + offset);
      }
    }
  }
}

}  // namespace

// q [B, Hq, D] float32; k_cache, v_cache [num_blocks, block_size, Hkv, D] float32 or
// bfloat16; block_tables [B, max_blocks] int64; context_lens [B] int64 -> [B, Hq, D].
torch::Tensor paged_decode_attention(torch::Tensor q, torch::Tensor k_cache, torch::Tensor v_cache,
                                     torch::Tensor block_tables, torch::Tensor context_lens,
                                     double scale) {
  TORCH_CHECK(q.dim() == 3 && k_cache.dim() == 4, "bad shapes");
  TORCH_CHECK(q.size(1) % k_cache.size(2) == 0, "num_heads must be a multiple of num_kv_heads");
  TORCH_CHECK(q.size(1) / k_cache.size(2) <= 64, "at most 64 query heads per KV head");
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous(), "caches must be contiguous");
  q = q.to(torch::kFloat32).contiguous();
  block_tables = block_tables.contiguous();
  context_lens = context_lens.contiguous();
  auto out = torch::empty_like(q);
  if (q.size(0) == 0) return out;
  if (k_cache.scalar_type() == torch::kBFloat16) {
    run<at::BFloat16>(q, k_cache, v_cache, block_tables, context_lens, scale, out);
  } else {
    TORCH_CHECK(k_cache.scalar_type() == torch::kFloat32, "cache must be float32 or bfloat16");
    run<float>(q, k_cache, v_cache, block_tables, context_lens, scale, out);
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("paged_decode_attention", &paged_decode_attention, "paged decode attention (CPU)");
}
