// Decode attention that reads K/V in place through block tables (no gather copy).
//
// One task per (sequence, KV head): the G = Hq / Hkv query heads that share the KV head
// are scored together, so each key and value vector is loaded once per group. Two passes
// over the context: scores (kept in a per-thread buffer), then softmax-weighted values.
// Every sequence's result depends only on its own data, never on the rest of the batch.
#include <torch/extension.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <vector>

namespace {

template <typename T>
inline float to_float(T x) { return static_cast<float>(x); }

template <typename T>
void decode_one(const float* q, const T* k_cache, const T* v_cache, const int64_t* table,
                int64_t context_len, int64_t block_size, int64_t num_kv_heads, int64_t head_dim,
                int64_t group, int64_t kv_head, float scale, float* scores, float* out) {
  const int64_t token_stride = num_kv_heads * head_dim;
  float max_score[64];
  for (int64_t g = 0; g < group; ++g) max_score[g] = -std::numeric_limits<float>::infinity();
  for (int64_t t = 0; t < context_len; ++t) {
    const int64_t slot = table[t / block_size] * block_size + t % block_size;
    const T* k = k_cache + slot * token_stride + kv_head * head_dim;
    for (int64_t g = 0; g < group; ++g) {
      const float* qg = q + g * head_dim;
      float acc = 0.f;
#pragma omp simd reduction(+ : acc)
      for (int64_t d = 0; d < head_dim; ++d) acc += qg[d] * to_float(k[d]);
      acc *= scale;
      scores[g * context_len + t] = acc;
      if (acc > max_score[g]) max_score[g] = acc;
    }
  }
  for (int64_t g = 0; g < group; ++g) {
    float* s = scores + g * context_len;
    float sum = 0.f;
    for (int64_t t = 0; t < context_len; ++t) {
      s[t] = std::exp(s[t] - max_score[g]);
      sum += s[t];
    }
    const float inv = 1.f / sum;
    for (int64_t t = 0; t < context_len; ++t) s[t] *= inv;
    float* o = out + g * head_dim;
    for (int64_t d = 0; d < head_dim; ++d) o[d] = 0.f;
  }
  for (int64_t t = 0; t < context_len; ++t) {
    const int64_t slot = table[t / block_size] * block_size + t % block_size;
    const T* v = v_cache + slot * token_stride + kv_head * head_dim;
    for (int64_t g = 0; g < group; ++g) {
      const float p = scores[g * context_len + t];
      float* o = out + g * head_dim;
#pragma omp simd
      for (int64_t d = 0; d < head_dim; ++d) o[d] += p * to_float(v[d]);
    }
  }
}

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
        decode_one<T>(q_ptr + offset, k_ptr, v_ptr, tables + b * max_blocks, lens[b],
                      block_size, num_kv_heads, head_dim, group, h, static_cast<float>(scale),
                      scores.data(), out_ptr + offset);
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
