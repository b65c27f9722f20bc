// Decode attention over a paged K/V cache: G query heads that share one KV head attend
// over their sequence's keys and values, read in place through its block table.
//
// One implementation for both callers: paged_attention.cpp (the eager modules' decode
// kernel) and fused_decode.cpp (the fused decode step). `attend` picks the vectorized
// path for float caches where it applies (AVX2 + FMA, head_dim % 8 == 0, block size a
// power of two), else the scalar one. Each call depends only on its own sequence's data.
//
// Cache layout: [num_blocks, block_size, Hkv, D] (k_cache and v_cache each); q and out
// [G, D] for the G query heads of KV head kv_head; scores: room for G * context_len.
#pragma once

#include <torch/extension.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define WS_AVX2 1
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

namespace warpserve {

template <typename T>
inline float to_float(T x) { return static_cast<float>(x); }

// Two passes over the context: scores (into `scores`), then softmax-weighted values.
template <typename T>
inline void attend_scalar(const float* q, const T* k_cache, const T* v_cache,
                          const int64_t* table, int64_t context_len, int64_t block_size,
                          int64_t num_kv_heads, int64_t D, int64_t G, int64_t kv_head,
                          float scale, float* scores, float* out) {
  const int64_t stride = num_kv_heads * D;
  float max_score[64];
  for (int64_t g = 0; g < G; ++g) max_score[g] = -std::numeric_limits<float>::infinity();
  for (int64_t t = 0; t < context_len; ++t) {
    const int64_t slot = table[t / block_size] * block_size + t % block_size;
    const T* k = k_cache + slot * stride + kv_head * D;
    for (int64_t g = 0; g < G; ++g) {
      const float* qg = q + g * D;
      float acc = 0.f;
#pragma omp simd reduction(+ : acc)
      for (int64_t d = 0; d < D; ++d) acc += qg[d] * to_float(k[d]);
      acc *= scale;
      scores[g * context_len + t] = acc;
      if (acc > max_score[g]) max_score[g] = acc;
    }
  }
  for (int64_t g = 0; g < G; ++g) {
    float* s = scores + g * context_len;
    float sum = 0.f;
    for (int64_t t = 0; t < context_len; ++t) {
      s[t] = std::exp(s[t] - max_score[g]);
      sum += s[t];
    }
    const float inv = 1.f / sum;
    for (int64_t t = 0; t < context_len; ++t) s[t] *= inv;
    float* o = out + g * D;
    for (int64_t d = 0; d < D; ++d) o[d] = 0.f;
  }
  for (int64_t t = 0; t < context_len; ++t) {
    const int64_t slot = table[t / block_size] * block_size + t % block_size;
    const T* v = v_cache + slot * stride + kv_head * D;
    for (int64_t g = 0; g < G; ++g) {
      const float p = scores[g * context_len + t];
      float* o = out + g * D;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) o[d] += p * to_float(v[d]);
    }
  }
}

#ifdef WS_AVX2
// exp(x) for 8 lanes: Cephes' range reduction and degree-5 polynomial (~1 ulp for the
// softmax's x <= 0), the approach of most vectorized math libraries.
inline __m256 exp256(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
  const __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500E-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.f)));
  const __m256i e = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// The 8 horizontal sums of a[0..7] as one vector.
inline __m256 hsum8(const __m256* a) {
  const __m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  const __m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20), _mm256_permute2f128_ps(t0, t1, 0x31));
}

// Scores of 8 keys against one query head: 8 independent dot products, 8 dimensions at
// a time, so 8 FMA chains are in flight (one chain per key would wait on FMA latency).
template <int NV>
inline __m256 scores8(const float* q, const float* const* k) {
  __m256 acc[8];
  const __m256 q0 = _mm256_loadu_ps(q);
  _Pragma("GCC unroll 8") for (int j = 0; j < 8; ++j) acc[j] = _mm256_mul_ps(q0, _mm256_loadu_ps(k[j]));
  _Pragma("GCC unroll 16") for (int i = 1; i < NV; ++i) {
    const __m256 qi = _mm256_loadu_ps(q + 8 * i);
    _Pragma("GCC unroll 8") for (int j = 0; j < 8; ++j)
      acc[j] = _mm256_fmadd_ps(qi, _mm256_loadu_ps(k[j] + 8 * i), acc[j]);
  }
  return hsum8(acc);
}

// o[0..W*8) = sum_t p[t] * v_t[0..W*8) for W vectors of 8 dimensions: W independent
// chains, two positions per iteration (2W chains) so that FMA latency is hidden.
template <int W>
inline void weighted_sum(const float* p, const float* v_cache, const int64_t* rows,
                         int64_t n, int64_t offset, float* out) {
  __m256 a[2][W];
  _Pragma("GCC unroll 8") for (int w = 0; w < W; ++w) a[0][w] = a[1][w] = _mm256_setzero_ps();
  int64_t t = 0;
  for (; t + 2 <= n; t += 2) {
    const float* v0 = v_cache + rows[t] + offset;
    const float* v1 = v_cache + rows[t + 1] + offset;
    const __m256 p0 = _mm256_broadcast_ss(p + t), p1 = _mm256_broadcast_ss(p + t + 1);
    _Pragma("GCC unroll 8") for (int w = 0; w < W; ++w) {
      a[0][w] = _mm256_fmadd_ps(p0, _mm256_loadu_ps(v0 + 8 * w), a[0][w]);
      a[1][w] = _mm256_fmadd_ps(p1, _mm256_loadu_ps(v1 + 8 * w), a[1][w]);
    }
  }
  if (t < n) {
    const float* v0 = v_cache + rows[t] + offset;
    const __m256 p0 = _mm256_broadcast_ss(p + t);
    _Pragma("GCC unroll 8") for (int w = 0; w < W; ++w)
      a[0][w] = _mm256_fmadd_ps(p0, _mm256_loadu_ps(v0 + 8 * w), a[0][w]);
  }
  _Pragma("GCC unroll 8") for (int w = 0; w < W; ++w)
    _mm256_storeu_ps(out + 8 * w, _mm256_add_ps(a[0][w], a[1][w]));
}

// attend_scalar() for float caches, D % 8 == 0 and a power-of-two block size: scores for 8 keys at a time (one reduction for 8 dot products),
// vectorized exp, and the weighted sum of values 32 dimensions at a time.
template <int NV>
void attend_avx2(const float* q, const float* k_cache, const float* v_cache,
                 const int64_t* table, int64_t n, int64_t block_size, int64_t num_kv_heads,
                 int64_t D, int64_t G, int64_t kv_head, float scale, float* scores,
                 float* out) {
  const int64_t stride = num_kv_heads * D, nv = D / 8;
  // Row offsets of the n positions, once (block_size is a power of two: no division in
  // the loops below, which read every key G times and every value G times).
  static thread_local std::vector<int64_t> rows;
  if (static_cast<int64_t>(rows.size()) < n) rows.resize(n);
  const int shift = __builtin_ctzll(static_cast<unsigned long long>(block_size));
  for (int64_t t = 0; t < n; ++t)
    rows[t] = ((table[t >> shift] << shift) + (t & (block_size - 1))) * stride + kv_head * D;
  const __m256 vscale = _mm256_set1_ps(scale);
  for (int64_t g = 0; g < G; ++g) {
    const float* qg = q + g * D;
    float* s = scores + g * n;
    int64_t t = 0;
    for (; t + 8 <= n; t += 8) {
      const float* k[8];
      for (int j = 0; j < 8; ++j) k[j] = k_cache + rows[t + j];
      __m256 dots;
      if constexpr (NV > 0) {
        dots = scores8<NV>(qg, k);
      } else {  // any D % 8 == 0
        __m256 acc[8];
        for (int j = 0; j < 8; ++j) acc[j] = _mm256_setzero_ps();
        for (int64_t i = 0; i < nv; ++i) {
          const __m256 qi = _mm256_loadu_ps(qg + 8 * i);
          for (int j = 0; j < 8; ++j)
            acc[j] = _mm256_fmadd_ps(qi, _mm256_loadu_ps(k[j] + 8 * i), acc[j]);
        }
        dots = hsum8(acc);
      }
      _mm256_storeu_ps(s + t, _mm256_mul_ps(dots, vscale));
    }
    for (; t < n; ++t) {
      const float* k = k_cache + rows[t];
      float a = 0.f;
      for (int64_t d = 0; d < D; ++d) a += qg[d] * k[d];
      s[t] = a * scale;
    }
    __m256 vmax = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(s + i));
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, vmax);
    float m = lanes[0];
    for (int j = 1; j < 8; ++j) m = std::max(m, lanes[j]);
    for (; i < n; ++i) m = std::max(m, s[i]);
    const __m256 vm = _mm256_set1_ps(m);
    __m256 vsum = _mm256_setzero_ps();
    i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + i), vm));
      _mm256_storeu_ps(s + i, e);
      vsum = _mm256_add_ps(vsum, e);
    }
    float sum = 0.f;
    _mm256_store_ps(lanes, vsum);
    for (int j = 0; j < 8; ++j) sum += lanes[j];
    for (; i < n; ++i) {
      s[i] = std::exp(s[i] - m);
      sum += s[i];
    }
    const __m256 vinv = _mm256_set1_ps(1.f / sum);
    i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(s + i, _mm256_mul_ps(_mm256_loadu_ps(s + i), vinv));
    for (; i < n; ++i) s[i] *= 1.f / sum;
    // Weighted sum of values for this head, 32 dimensions (4 vectors) at a time.
    float* o = out + g * D;
    int64_t c = 0;
    for (; c + 4 <= nv; c += 4) weighted_sum<4>(s, v_cache, rows.data(), n, 8 * c, o + 8 * c);
    for (; c < nv; ++c) weighted_sum<1>(s, v_cache, rows.data(), n, 8 * c, o + 8 * c);
  }
}
#endif

// G <= 64 query heads per KV head (callers check it).
template <typename T>
inline void attend(const float* q, const T* k_cache, const T* v_cache, const int64_t* table,
                   int64_t context_len, int64_t block_size, int64_t num_kv_heads, int64_t D,
                   int64_t G, int64_t kv_head, float scale, float* scores, float* out) {
#ifdef WS_AVX2
  if constexpr (std::is_same_v<T, float>) {
    if ((block_size & (block_size - 1)) == 0 && D % 8 == 0) {
      if (D == 64) {
        attend_avx2<8>(q, k_cache, v_cache, table, context_len, block_size, num_kv_heads, D,
                       G, kv_head, scale, scores, out);
      } else {
        attend_avx2<0>(q, k_cache, v_cache, table, context_len, block_size, num_kv_heads, D,
                       G, kv_head, scale, scores, out);
      }
      return;
    }
  }
#endif
  attend_scalar<T>(q, k_cache, v_cache, table, context_len, block_size, num_kv_heads, D, G,
                   kv_head, scale, scores, out);
}

}  // namespace warpserve
