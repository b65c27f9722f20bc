// One whole decode step of a Llama-family model in one call (the "fused" decode backend).
//
// Why: a SmolLM2-135M decode step in eager PyTorch is about a thousand small operator
// calls (30 layers x ~35 ops), each a few microseconds of dispatch, on top of streaming the
// weights from memory. Here the step is a handful of loops per layer over buffers that stay
// in cache, and the weights are read once per step in whatever format they are stored
// (fp32, int8 per output channel, int4 group-wise), dequantized in registers.
//
// Rows: B independent query tokens (plain decodes, or draft-verification rows whose K/V
// are written before any row attends, exactly as the eager path does). Every row's result
// depends only on its own inputs and its own sequence's K/V, never on the rest of the
// batch (no reduction crosses rows), so batch == single holds bit for bit.
//
// Weight formats (nn.Linear layout [N, K]):
//   kind 0: fp32 [N, K]
//   kind 1: int8 [N, K], w = q * scale[n]                      (quant/primitives.py)
//   kind 2: int4 nibbles [N, K/2] (low nibble: column j, high: column K/2 + j),
//           w = q * scale[n, g] + offset[n, g], offset = zero - 8 * scale
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "attention.h"  // attend(), exp256(); defines WS_AVX2 where AVX2 + FMA are on

namespace {

using warpserve::attend;
#ifdef WS_AVX2
using warpserve::exp256;
#endif

enum Kind : int64_t { kF32 = 0, kI8 = 1, kI4 = 2 };

struct Linear {
  int64_t kind = kF32, n = 0, k = 0, group = 0;
  torch::Tensor w, scale, offset, bias;  // kept alive here; raw pointers below
  const void* wp = nullptr;
  const float* sp = nullptr;
  const float* op = nullptr;
  const float* bp = nullptr;
};

struct Layer {
  torch::Tensor in_norm, post_norm, kv_cache;  // kv_cache [2, num_blocks, block_size, Hkv, D]
  int64_t qkv, o, gate_up, down;               // indices into FusedModel::linears_
};


inline const void* panel_ptr(const Linear& L, int64_t p) {
  const int64_t bytes = L.kind == kF32 ? 4 * 16 : L.kind == kI8 ? 16 : 8;  // per input k
  return static_cast<const uint8_t*>(L.wp) + p * L.k * bytes;
}

// Weight (n = 16p + j, k) of a packed linear as fp32 (int8: not yet scaled).
inline float weight_at(const Linear& L, int64_t p, int64_t k, int64_t j) {
  const void* panel = panel_ptr(L, p);
  if (L.kind == kF32) return static_cast<const float*>(panel)[k * 16 + j];
  if (L.kind == kI8) return static_cast<const int8_t*>(panel)[k * 16 + j];
  const uint8_t byte = static_cast<const uint8_t*>(panel)[k * 8 + (j & 7)];
  const float q = static_cast<float>(j < 8 ? byte & 0x0F : byte >> 4);
  const int64_t idx = (p * (L.k / L.group) + k / L.group) * 16 + j;
  return q * L.sp[idx] + L.op[idx];
}

// ---- Linear layers -------------------------------------------------------------------
//
// Weights are repacked once (add_linear) into panels of 16 output channels, k-major:
// panel p holds rows n = 16p..16p+15 as [K][16], so one load brings the 16 weights of one
// input k (int8: 16 bytes; int4: 8 bytes, byte j = n j | n j+8 << 4), and the product is an
// outer product: broadcast x[b, k], two FMAs per row b, no horizontal sums. Up to 3 rows the
// weights are dequantized in registers (decode is memory-bound: each byte is read once);
// from 4 rows on, each panel is dequantized once into a per-thread fp32 scratch and 6 rows
// at a time run over it (compute-bound: 12 accumulators, 2 weight loads per 12 FMAs).
constexpr int64_t kPanel = 16;

#ifdef WS_AVX2
struct GroupScale {
  __m256 s0, s1, o0, o1;
};

inline GroupScale group_scale(const Linear& L, int64_t p, int64_t g) {
  const int64_t groups = L.k / L.group;
  const float* s = L.sp + (p * groups + g) * kPanel;
  const float* o = L.op + (p * groups + g) * kPanel;
  return {_mm256_loadu_ps(s), _mm256_loadu_ps(s + 8), _mm256_loadu_ps(o), _mm256_loadu_ps(o + 8)};
}

// The 16 weights of input k of panel p as two fp32 vectors (int8: not yet scaled).
template <int64_t KIND>
inline void load_w(const void* panel, int64_t k, const GroupScale& gs, __m256& w0, __m256& w1) {
  if constexpr (KIND == kF32) {
    const float* w = static_cast<const float*>(panel) + k * kPanel;
    w0 = _mm256_loadu_ps(w);
    w1 = _mm256_loadu_ps(w + 8);
  } else if constexpr (KIND == kI8) {
    const __m128i v = _mm_loadu_si128(
        reinterpret_cast<const __m128i*>(static_cast<const int8_t*>(panel) + k * kPanel));
    w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
    w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v, 8)));
  } else {
    const __m128i v = _mm_loadl_epi64(
        reinterpret_cast<const __m128i*>(static_cast<const uint8_t*>(panel) + k * 8));
    const __m256i b = _mm256_cvtepu8_epi32(v);
    const __m256 lo = _mm256_cvtepi32_ps(_mm256_and_si256(b, _mm256_set1_epi32(0x0F)));
    const __m256 hi = _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4));
    w0 = _mm256_fmadd_ps(lo, gs.s0, gs.o0);
    w1 = _mm256_fmadd_ps(hi, gs.s1, gs.o1);
  }
}

// out[b][16] = panel p . x[b] for b < BT, weights dequantized in registers.
template <int64_t KIND, int BT>
void panel_direct(const Linear& L, int64_t p, const float* x, int64_t ldx, float* out) {
  const int64_t K = L.k, G = KIND == kI4 ? L.group : K;
  const void* panel = panel_ptr(L, p);
  __m256 a[2][BT][2];
  _Pragma("GCC unroll 2") for (int u = 0; u < 2; ++u)
    _Pragma("GCC unroll 8") for (int b = 0; b < BT; ++b) a[u][b][0] = a[u][b][1] = _mm256_setzero_ps();
  GroupScale gs{};
  for (int64_t g0 = 0; g0 < K; g0 += G) {
    if constexpr (KIND == kI4) gs = group_scale(L, p, g0 / G);
    for (int64_t k = g0; k < g0 + G; k += 2) {
      __m256 w0, w1, v0, v1;
      load_w<KIND>(panel, k, gs, w0, w1);
      load_w<KIND>(panel, k + 1, gs, v0, v1);
      _Pragma("GCC unroll 8") for (int b = 0; b < BT; ++b) {
        const __m256 xb = _mm256_broadcast_ss(x + b * ldx + k);
        const __m256 xc = _mm256_broadcast_ss(x + b * ldx + k + 1);
        a[0][b][0] = _mm256_fmadd_ps(w0, xb, a[0][b][0]);
        a[0][b][1] = _mm256_fmadd_ps(w1, xb, a[0][b][1]);
        a[1][b][0] = _mm256_fmadd_ps(v0, xc, a[1][b][0]);
        a[1][b][1] = _mm256_fmadd_ps(v1, xc, a[1][b][1]);
      }
    }
  }
  _Pragma("GCC unroll 8") for (int b = 0; b < BT; ++b) {
    _mm256_storeu_ps(out + b * kPanel, _mm256_add_ps(a[0][b][0], a[1][b][0]));
    _mm256_storeu_ps(out + b * kPanel + 8, _mm256_add_ps(a[0][b][1], a[1][b][1]));
  }
}

// int4, few rows: sum q * x over each group in fp32, then scale once per group and add the
// group's offset times the group's sum of x: w = q * s + o, so panel . x =
// sum_g (s_g * sum_k q x + o_g * sum_k x). Two FMAs fewer per input than dequantizing.
template <int BT>
void panel_direct_i4(const Linear& L, int64_t p, const float* x, int64_t ldx,
                     const float* xsum, float* out) {
  constexpr int U = BT == 1 ? 2 : 1;  // inputs per iteration (independent accumulators)
  const int64_t G = L.group, groups = L.k / G;
  const uint8_t* panel = static_cast<const uint8_t*>(panel_ptr(L, p));
  const __m256i low = _mm256_set1_epi32(0x0F);
  __m256 acc[BT][2];
  _Pragma("GCC unroll 8") for (int b = 0; b < BT; ++b) acc[b][0] = acc[b][1] = _mm256_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    __m256 sum[U][BT][2];
    _Pragma("GCC unroll 2") for (int u = 0; u < U; ++u)
      _Pragma("GCC unroll 8") for (int b = 0; b < BT; ++b)
        sum[u][b][0] = sum[u][b][1] = _mm256_setzero_ps();
    for (int64_t k = g * G; k < (g + 1) * G; k += U) {
      _Pragma("GCC unroll 2") for (int u = 0; u < U; ++u) {
        const __m256i q = _mm256_cvtepu8_epi32(
            _mm_loadl_epi64(reinterpret_cast<const __m128i*>(panel + (k + u) * 8)));
        const __m256 lo = _mm256_cvtepi32_ps(_mm256_and_si256(q, low));
        const __m256 hi = _mm256_cvtepi32_ps(_mm256_srli_epi32(q, 4));
        _Pragma("GCC unroll 8") for (int b = 0; b < BT; ++b) {
          const __m256 xb = _mm256_broadcast_ss(x + b * ldx + k + u);
          sum[u][b][0] = _mm256_fmadd_ps(lo, xb, sum[u][b][0]);
          sum[u][b][1] = _mm256_fmadd_ps(hi, xb, sum[u][b][1]);
        }
      }
    }
    const GroupScale gs = group_scale(L, p, g);
    _Pragma("GCC unroll 8") for (int b = 0; b < BT; ++b) {
      __m256 s0 = sum[0][b][0], s1 = sum[0][b][1];
      if constexpr (U == 2) {
        s0 = _mm256_add_ps(s0, sum[1][b][0]);
        s1 = _mm256_add_ps(s1, sum[1][b][1]);
      }
      const __m256 xs = _mm256_broadcast_ss(xsum + b * groups + g);
      acc[b][0] = _mm256_fmadd_ps(gs.o0, xs, _mm256_fmadd_ps(s0, gs.s0, acc[b][0]));
      acc[b][1] = _mm256_fmadd_ps(gs.o1, xs, _mm256_fmadd_ps(s1, gs.s1, acc[b][1]));
    }
  }
  _Pragma("GCC unroll 8") for (int b = 0; b < BT; ++b) {
    _mm256_storeu_ps(out + b * kPanel, acc[b][0]);
    _mm256_storeu_ps(out + b * kPanel + 8, acc[b][1]);
  }
}

// The whole panel p as fp32 [K][16] (int8: not yet scaled).
template <int64_t KIND>
void panel_fill(const Linear& L, int64_t p, float* scratch) {
  const int64_t K = L.k, G = KIND == kI4 ? L.group : K;
  const void* panel = panel_ptr(L, p);
  GroupScale gs{};
  for (int64_t g0 = 0; g0 < K; g0 += G) {
    if constexpr (KIND == kI4) gs = group_scale(L, p, g0 / G);
    for (int64_t k = g0; k < g0 + G; ++k) {
      __m256 w0, w1;
      load_w<KIND>(panel, k, gs, w0, w1);
      _mm256_storeu_ps(scratch + k * kPanel, w0);
      _mm256_storeu_ps(scratch + k * kPanel + 8, w1);
    }
  }
}

// out[b][16] = w[K][16] . x[b] for b < BT.
template <int BT>
void panel_tile(const float* w, int64_t K, const float* x, int64_t ldx, float* out) {
  __m256 a[BT][2];
  _Pragma("GCC unroll 8") for (int b = 0; b < BT; ++b) a[b][0] = a[b][1] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const __m256 w0 = _mm256_loadu_ps(w + k * kPanel), w1 = _mm256_loadu_ps(w + k * kPanel + 8);
    _Pragma("GCC unroll 8") for (int b = 0; b < BT; ++b) {
      const __m256 xb = _mm256_broadcast_ss(x + b * ldx + k);
      a[b][0] = _mm256_fmadd_ps(w0, xb, a[b][0]);
      a[b][1] = _mm256_fmadd_ps(w1, xb, a[b][1]);
    }
  }
  _Pragma("GCC unroll 8") for (int b = 0; b < BT; ++b) {
    _mm256_storeu_ps(out + b * kPanel, a[b][0]);
    _mm256_storeu_ps(out + b * kPanel + 8, a[b][1]);
  }
}

void panel_tiles(const float* w, int64_t K, const float* x, int64_t ldx, int64_t B, float* out) {
  int64_t b = 0;
  for (; b + 6 <= B; b += 6) panel_tile<6>(w, K, x + b * ldx, ldx, out + b * kPanel);
  switch (B - b) {
    case 5: panel_tile<5>(w, K, x + b * ldx, ldx, out + b * kPanel); break;
    case 4: panel_tile<4>(w, K, x + b * ldx, ldx, out + b * kPanel); break;
    case 3: panel_tile<3>(w, K, x + b * ldx, ldx, out + b * kPanel); break;
    case 2: panel_tile<2>(w, K, x + b * ldx, ldx, out + b * kPanel); break;
    case 1: panel_tile<1>(w, K, x + b * ldx, ldx, out + b * kPanel); break;
    default: break;
  }
}

template <int64_t KIND>
void panel_product(const Linear& L, int64_t p, const float* x, int64_t ldx, int64_t B,
                   const float* xsum, float* out, std::vector<float>& scratch) {
  if (B <= 3) {
    if constexpr (KIND == kI4) {
      if (B == 3) panel_direct_i4<3>(L, p, x, ldx, xsum, out);
      else if (B == 2) panel_direct_i4<2>(L, p, x, ldx, xsum, out);
      else panel_direct_i4<1>(L, p, x, ldx, xsum, out);
    } else {
      if (B == 3) panel_direct<KIND, 3>(L, p, x, ldx, out);
      else if (B == 2) panel_direct<KIND, 2>(L, p, x, ldx, out);
      else panel_direct<KIND, 1>(L, p, x, ldx, out);
    }
    return;
  }
  const float* w;
  if constexpr (KIND == kF32) {
    w = static_cast<const float*>(panel_ptr(L, p));
  } else {
    panel_fill<KIND>(L, p, scratch.data());
    w = scratch.data();
  }
  panel_tiles(w, L.k, x, ldx, B, out);
}
#else
// Portable path: the same packed layout, plain loops.
template <int64_t KIND>
void panel_product(const Linear& L, int64_t p, const float* x, int64_t ldx, int64_t B,
                   const float*, float* out, std::vector<float>&) {
  const int64_t K = L.k;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < kPanel; ++j) out[b * kPanel + j] = 0.f;
  for (int64_t k = 0; k < K; ++k) {
    float w[kPanel];
    for (int64_t j = 0; j < kPanel; ++j) w[j] = weight_at(L, p, k, j);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < kPanel; ++j) out[b * kPanel + j] += w[j] * x[b * ldx + k];
  }
}
#endif

template <int64_t KIND>
void linear_kind(const Linear& L, const float* x, int64_t ldx, int64_t B, float* y,
                 int64_t ldy, bool accumulate, int nthreads) {
  const int64_t panels = (L.n + kPanel - 1) / kPanel;
  std::vector<float> xsum;  // int4 register path: each row's sum of x over each group
  if (KIND == kI4 && B <= 3) {
    const int64_t G = L.group, groups = L.k / G;
    xsum.assign(B * groups, 0.f);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t k = 0; k < L.k; ++k) xsum[b * groups + k / G] += x[b * ldx + k];
  }
#pragma omp parallel num_threads(nthreads)
  {
    std::vector<float> scratch(KIND == kF32 || B <= 3 ? 0 : L.k * kPanel);
    std::vector<float> out(B * kPanel);
#pragma omp for schedule(static)
    for (int64_t p = 0; p < panels; ++p) {
      panel_product<KIND>(L, p, x, ldx, B, xsum.data(), out.data(), scratch);
      const int64_t n0 = p * kPanel, width = std::min(kPanel, L.n - n0);
      for (int64_t b = 0; b < B; ++b) {
        float* dst = y + b * ldy + n0;
        const float* src = out.data() + b * kPanel;
        for (int64_t j = 0; j < width; ++j) {
          float v = src[j];
          if (KIND == kI8) v *= L.sp[n0 + j];
          if (L.bp) v += L.bp[n0 + j];
          dst[j] = accumulate ? dst[j] + v : v;
        }
      }
    }
  }
}

// y[b, n] (+)= x[b, :] . W[n, :] (+ bias[n]) for b < B, n < N; rows of x at stride ldx.
void linear(const Linear& L, const float* x, int64_t ldx, int64_t B, float* y, int64_t ldy,
            bool accumulate, int nthreads) {
  if (L.kind == kF32) linear_kind<kF32>(L, x, ldx, B, y, ldy, accumulate, nthreads);
  else if (L.kind == kI8) linear_kind<kI8>(L, x, ldx, B, y, ldy, accumulate, nthreads);
  else linear_kind<kI4>(L, x, ldx, B, y, ldy, accumulate, nthreads);
}

// out = weight * x / rms(x), as Transformers' LlamaRMSNorm computes it in fp32.
void rms_norm(const float* x, const float* weight, int64_t H, float eps, float* out) {
  float ss = 0.f;
  for (int64_t i = 0; i < H; ++i) ss += x[i] * x[i];
  const float inv = 1.f / std::sqrt(ss / static_cast<float>(H) + eps);
  for (int64_t i = 0; i < H; ++i) out[i] = weight[i] * (x[i] * inv);
}

// Rotate heads [num_heads, D] in place by cos/sin rows [D] (rotate_half convention).
void rope(float* x, int64_t num_heads, int64_t D, const float* cos, const float* sin) {
  const int64_t half = D / 2;
  for (int64_t h = 0; h < num_heads; ++h) {
    float* v = x + h * D;
    for (int64_t d = 0; d < half; ++d) {
      const float a = v[d], b = v[d + half];
      v[d] = a * cos[d] - b * sin[d];
      v[d + half] = b * cos[d + half] + a * sin[d + half];
    }
  }
}

inline float silu(float x) { return x / (1.f + std::exp(-x)); }

// row[i] = silu(row[i]) * row[n + i] for i < n (the gate and up halves of gate_up).
void silu_mul(float* row, int64_t n) {
  int64_t i = 0;
#ifdef WS_AVX2
  const __m256 one = _mm256_set1_ps(1.f), limit = _mm256_set1_ps(88.f);
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(row + i);
    const __m256 e = exp256(_mm256_min_ps(_mm256_sub_ps(_mm256_setzero_ps(), x), limit));
    const __m256 act = _mm256_div_ps(x, _mm256_add_ps(one, e));
    _mm256_storeu_ps(row + i, _mm256_mul_ps(act, _mm256_loadu_ps(row + n + i)));
  }
#endif
  for (; i < n; ++i) row[i] = silu(row[i]) * row[n + i];
}

}  // namespace

class FusedModel {
 public:
  FusedModel(int64_t hidden, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
             int64_t intermediate, double eps, torch::Tensor embed, torch::Tensor final_norm,
             torch::Tensor cos, torch::Tensor sin)
      : hidden_(hidden), heads_(num_heads), kv_heads_(num_kv_heads), head_dim_(head_dim),
        inter_(intermediate), eps_(static_cast<float>(eps)), embed_(contig_f32(embed)),
        final_norm_(contig_f32(final_norm)), cos_(contig_f32(cos)), sin_(contig_f32(sin)) {
    TORCH_CHECK(num_heads % num_kv_heads == 0 && num_heads / num_kv_heads <= 64,
                "num_heads must be a multiple of num_kv_heads (at most 64 per KV head)");
    TORCH_CHECK(head_dim % 2 == 0, "head_dim must be even");
  }

  // kind 0: w fp32 [N, K]; 1: w int8 [N, K], scale [N]; 2: w uint8 [N, K/2], scale and
  // offset [N, K/G]. bias: [N] or an empty tensor. place(t): a contiguous copy of the
  // repacked weight where it should live (execution/memory.py: on 2 MB pages). Returns the
  // linear's index.
  int64_t add_linear(int64_t kind, torch::Tensor w, torch::Tensor scale, torch::Tensor offset,
                     torch::Tensor bias, int64_t group, const pybind11::function& place) {
    Linear L;
    L.kind = kind;
    L.n = w.size(0);
    L.k = kind == kI4 ? w.size(1) * 2 : w.size(1);
    L.group = group;
    TORCH_CHECK(L.k % 2 == 0, "in_features must be even");
    const int64_t P = (L.n + kPanel - 1) / kPanel;
    auto panels = [&](const torch::Tensor& t) {  // [N, C] -> [P, C, 16], zero rows pad N
      auto padded = torch::zeros({P * kPanel, t.size(1)}, t.options());
      padded.slice(0, 0, L.n).copy_(t);
      return padded.view({P, kPanel, t.size(1)}).transpose(1, 2).contiguous();
    };
    if (kind == kF32) {
      TORCH_CHECK(w.scalar_type() == torch::kFloat32, "kind 0 needs float32 weights");
      L.w = panels(w);
    } else if (kind == kI8) {
      TORCH_CHECK(w.scalar_type() == torch::kInt8 && scale.numel() == L.n, "bad int8 weight");
      L.w = panels(w);
      L.scale = torch::zeros({P * kPanel}, torch::kFloat32);
      L.scale.slice(0, 0, L.n).copy_(scale.reshape({-1}));
      L.sp = L.scale.data_ptr<float>();
    } else {
      TORCH_CHECK(kind == kI4 && w.scalar_type() == torch::kUInt8, "bad weight kind");
      TORCH_CHECK(group >= 8 && group % 8 == 0 && L.k % group == 0,
                  "int4 group size must be a multiple of 8 dividing in_features");
      TORCH_CHECK(scale.numel() == L.n * (L.k / group) && offset.numel() == scale.numel(),
                  "bad int4 scales");
      const auto packed = w.contiguous();  // [N, K/2]: column j low nibble, K/2 + j high
      const auto q = torch::cat({torch::bitwise_and(packed, 15),
                                 torch::bitwise_right_shift(packed, 4)}, 1);  // [N, K]
      const auto t = panels(q);                                                // [P, K, 16]
      L.w = torch::bitwise_or(t.slice(2, 0, 8), torch::bitwise_left_shift(t.slice(2, 8, 16), 4))
                .contiguous();  // [P, K, 8]: byte j = n j | n j+8 << 4
      L.scale = panels(contig_f32(scale).view({L.n, -1}));  // [P, K/G, 16]
      L.offset = panels(contig_f32(offset).view({L.n, -1}));
      L.sp = L.scale.data_ptr<float>();
      L.op = L.offset.data_ptr<float>();
    }
    torch::Tensor placed = place(L.w).cast<torch::Tensor>();
    TORCH_CHECK(placed.is_contiguous() && placed.sizes() == L.w.sizes() &&
                    placed.scalar_type() == L.w.scalar_type(),
                "place() must return a contiguous copy of its tensor");
    L.w = placed;
    L.wp = L.w.data_ptr();
    if (bias.numel()) {
      L.bias = contig_f32(bias);
      L.bp = L.bias.data_ptr<float>();
    }
    linears_.push_back(std::move(L));
    return static_cast<int64_t>(linears_.size()) - 1;
  }

  void add_layer(torch::Tensor in_norm, torch::Tensor post_norm, torch::Tensor kv_cache,
                 int64_t qkv, int64_t o, int64_t gate_up, int64_t down) {
    TORCH_CHECK(kv_cache.scalar_type() == torch::kFloat32 && kv_cache.is_contiguous() &&
                    kv_cache.dim() == 5,
                "kv_cache must be a contiguous float32 [2, blocks, block_size, Hkv, D]");
    const int64_t block_size = kv_cache.size(2);
    TORCH_CHECK(block_size > 0 && (block_size & (block_size - 1)) == 0,
                "block_size must be a power of two");
    layers_.push_back({contig_f32(in_norm), contig_f32(post_norm), kv_cache, qkv, o, gate_up,
                       down});
  }

  void set_lm_head(int64_t index) { lm_head_ = index; }

  // y = x @ W^T (+ bias) through linear `index` alone (tests and kernel measurements).
  torch::Tensor run_linear(int64_t index, torch::Tensor x) const {
    const Linear& L = linears_.at(index);
    x = x.to(torch::kFloat32).contiguous();
    TORCH_CHECK(x.dim() == 2 && x.size(1) == L.k, "x must be [M, in_features]");
    auto y = torch::empty({x.size(0), L.n}, torch::kFloat32);
    linear(L, x.data_ptr<float>(), L.k, x.size(0), y.data_ptr<float>(), L.n, false,
           at::get_num_threads());
    return y;
  }

  // token_ids, positions, slot_mapping [B] int64; block_tables [B, max_blocks] int64;
  // context_lens [B] int64 (including this row's token); logit_rows [R] int64 -> [R, V].
  torch::Tensor forward(torch::Tensor token_ids, torch::Tensor positions,
                        torch::Tensor slot_mapping, torch::Tensor block_tables,
                        torch::Tensor context_lens, torch::Tensor logit_rows) {
    const int64_t B = token_ids.size(0);
    const int nt = at::get_num_threads();
    const int64_t H = hidden_, D = head_dim_, Hq = heads_, Hkv = kv_heads_;
    const int64_t q_size = Hq * D, kv_size = Hkv * D, qkv_size = q_size + 2 * kv_size;
    token_ids = token_ids.contiguous();
    positions = positions.contiguous();
    slot_mapping = slot_mapping.contiguous();
    block_tables = block_tables.contiguous();
    context_lens = context_lens.contiguous();
    logit_rows = logit_rows.contiguous();
    const int64_t* tok = token_ids.data_ptr<int64_t>();
    const int64_t* pos = positions.data_ptr<int64_t>();
    const int64_t* slots = slot_mapping.data_ptr<int64_t>();
    const int64_t* tables = block_tables.data_ptr<int64_t>();
    const int64_t* lens = context_lens.data_ptr<int64_t>();
    const int64_t max_blocks = block_tables.size(1);
    int64_t max_len = 0;
    for (int64_t b = 0; b < B; ++b) max_len = std::max(max_len, lens[b]);
    const int64_t vocab = embed_.size(0), max_pos = cos_.size(0);
    for (int64_t b = 0; b < B; ++b) {
      TORCH_CHECK(tok[b] >= 0 && tok[b] < vocab, "token id out of range");
      TORCH_CHECK(pos[b] >= 0 && pos[b] < max_pos, "position out of range");
    }

    std::vector<float> x(B * H), h(B * H), qkv(B * qkv_size), attn(B * q_size),
        gu(B * 2 * inter_);
    const float* emb = embed_.data_ptr<float>();
    for (int64_t b = 0; b < B; ++b) std::copy_n(emb + tok[b] * H, H, x.data() + b * H);
    const float* cos = cos_.data_ptr<float>();
    const float* sin = sin_.data_ptr<float>();
    const int64_t G = Hq / Hkv;
    const float scale = 1.f / std::sqrt(static_cast<float>(D));

    for (const Layer& layer : layers_) {
      const float* in_w = layer.in_norm.data_ptr<float>();
      for (int64_t b = 0; b < B; ++b) rms_norm(&x[b * H], in_w, H, eps_, &h[b * H]);
      linear(linears_[layer.qkv], h.data(), H, B, qkv.data(), qkv_size, false, nt);
      float* k_cache = layer.kv_cache.data_ptr<float>();
      const int64_t cache_half = layer.kv_cache.numel() / 2;
      float* v_cache = k_cache + cache_half;
      const int64_t block_size = layer.kv_cache.size(2);
      for (int64_t b = 0; b < B; ++b) {
        float* row = &qkv[b * qkv_size];
        rope(row, Hq + Hkv, D, cos + pos[b] * D, sin + pos[b] * D);  // q and k are adjacent
        std::copy_n(row + q_size, kv_size, k_cache + slots[b] * kv_size);
        std::copy_n(row + q_size + kv_size, kv_size, v_cache + slots[b] * kv_size);
      }
#pragma omp parallel num_threads(nt)
      {
        static thread_local std::vector<float> scores;
        if (static_cast<int64_t>(scores.size()) < G * max_len) scores.resize(G * max_len);
#pragma omp for schedule(dynamic, 1) collapse(2)
        for (int64_t b = 0; b < B; ++b) {
          for (int64_t kh = 0; kh < Hkv; ++kh) {
            const float* qh = &qkv[b * qkv_size + kh * G * D];
            float* oh = &attn[b * q_size + kh * G * D];
            attend<float>(qh, k_cache, v_cache, tables + b * max_blocks, lens[b], block_size,
                          Hkv, D, G, kh, scale, scores.data(), oh);
          }
        }
      }
      linear(linears_[layer.o], attn.data(), q_size, B, x.data(), H, true, nt);
      const float* post_w = layer.post_norm.data_ptr<float>();
      for (int64_t b = 0; b < B; ++b) rms_norm(&x[b * H], post_w, H, eps_, &h[b * H]);
      linear(linears_[layer.gate_up], h.data(), H, B, gu.data(), 2 * inter_, false, nt);
      for (int64_t b = 0; b < B; ++b) silu_mul(&gu[b * 2 * inter_], inter_);
      linear(linears_[layer.down], gu.data(), 2 * inter_, B, x.data(), H, true, nt);
    }

    const int64_t R = logit_rows.size(0);
    const int64_t* rows = logit_rows.data_ptr<int64_t>();
    const float* fw = final_norm_.data_ptr<float>();
    for (int64_t r = 0; r < R; ++r) {
      TORCH_CHECK(rows[r] >= 0 && rows[r] < B, "logit row out of range");
      rms_norm(&x[rows[r] * H], fw, H, eps_, &h[r * H]);
    }
    const Linear& head = linears_.at(lm_head_);
    auto logits = torch::empty({R, head.n}, torch::kFloat32);
    if (R) linear(head, h.data(), H, R, logits.data_ptr<float>(), head.n, false, nt);
    return logits;
  }

 private:
  static torch::Tensor contig_f32(const torch::Tensor& t) {
    TORCH_CHECK(t.scalar_type() == torch::kFloat32, "expected a float32 tensor");
    return t.contiguous();
  }

  int64_t hidden_, heads_, kv_heads_, head_dim_, inter_;
  float eps_;
  torch::Tensor embed_, final_norm_, cos_, sin_;
  std::vector<Linear> linears_;
  std::vector<Layer> layers_;
  int64_t lm_head_ = -1;
};

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  pybind11::class_<FusedModel>(m, "FusedModel")
      .def(pybind11::init<int64_t, int64_t, int64_t, int64_t, int64_t, double, torch::Tensor,
                          torch::Tensor, torch::Tensor, torch::Tensor>())
      .def("add_linear", &FusedModel::add_linear)
      .def("add_layer", &FusedModel::add_layer)
      .def("set_lm_head", &FusedModel::set_lm_head)
      .def("run_linear", &FusedModel::run_linear,
           pybind11::call_guard<pybind11::gil_scoped_release>())
      .def("forward", &FusedModel::forward, pybind11::call_guard<pybind11::gil_scoped_release>());
}
