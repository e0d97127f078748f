// softmax_bf16: Y[r, :] = softmax(X[r, :]) over rows of a ROWS × COLS bf16 matrix, fp32 math.
//
// One group of THREADS_PER_ROW threads handles one row; a block holds ROWS_PER_BLOCK groups.
// Numerically stable: every thread computes a partial (max m, sum s of exp(x - m)) over its
// elements, the pairs are merged across the group ((m1,s1)⊕(m2,s2) = (M, s1·e^(m1-M) +
// s2·e^(m2-M))), so a single reduction gives both the row max and the normaliser.
//
//  * Row fits in registers (the common case, e.g. COLS = 4096 with ≥ 64 threads per row): the
//    row is read ONCE into a register cache of raw bf16 vectors, then written: 2 bytes read +
//    2 bytes written per element, the minimum.
//  * Row too long for the cache: an online pass (running max, rescaled sum) streams the row,
//    then a second pass re-reads it (mostly from L1/L2) and writes Y.
//  * Any COLS and any row alignment: the vectorised body starts at the first VEC-aligned element
//    of the row; the few elements before it (head) and after the last full vector (tail) are
//    handled with scalar loads. If X and Y are not equally aligned the whole row goes scalar.
//
// Knobs:
//   THREADS_PER_ROW  threads cooperating on one row (32..1024): more threads = more loads in
//                    flight per row and fewer registers per thread, but a longer reduction
//                    (warp shuffles + a shared-memory step when > 32).
//   VEC              bf16 elements per load/store (1, 2, 4, 8 = 2, 4, 8, 16 bytes): wider
//                    accesses mean fewer memory instructions for the same bytes.
//   ROWS_PER_BLOCK   rows (thread groups) per block: block size = THREADS_PER_ROW·ROWS_PER_BLOCK,
//                    i.e. how work is packed into blocks (occupancy, tail of the grid).
// The register cache size is derived from them (see CACHE_VECS).

#include <cuda_bf16.h>
#include <stdint.h>

#ifndef THREADS_PER_ROW
#define THREADS_PER_ROW 128
#endif
#ifndef VEC
#define VEC 8
#endif
#ifndef ROWS_PER_BLOCK
#define ROWS_PER_BLOCK 2
#endif

constexpr int TPR = THREADS_PER_ROW;
constexpr int RPB = ROWS_PER_BLOCK;
constexpr int NTHREADS = TPR * RPB;
constexpr int WARPS_PER_ROW = TPR / 32;
static_assert(TPR % 32 == 0 && TPR <= 1024, "THREADS_PER_ROW must be a multiple of 32, <= 1024");
static_assert(NTHREADS <= 1024, "THREADS_PER_ROW * ROWS_PER_BLOCK must be <= 1024");
static_assert(VEC == 1 || VEC == 2 || VEC == 4 || VEC == 8, "VEC must be 1, 2, 4 or 8");
static_assert(RPB >= 1 && RPB <= 15, "one named barrier per row group (ids 1..15)");

// Register cache for the single-pass path. Its size is fixed at compile time while COLS is not,
// and ptxas allocates registers for the whole cache whether a row uses it or not, so it is sized
// for occupancy rather than for the row: the kernel asks ptxas for <= 64 registers per thread
// (MIN_BLOCKS below: 32 resident warps per SM, enough bytes in flight for DRAM bandwidth), ~48 of
// which go to everything else. The cache gets min(80, 65536/NTHREADS) - 48 registers, clamped to
// 8..32: 32 for blocks of <= 512 threads, 16 for 1024. A vector takes VEC/2 registers (VEC = 1
// still takes one). E.g. VEC = 8: 8 vectors = 64 elements per thread (4 = 32 with 1024-thread
// blocks), so COLS = 4096 fits with THREADS_PER_ROW >= 64 (>= 128 in 1024-thread blocks).
constexpr int REGS_PER_THREAD = (65536 / NTHREADS) > 80 ? 80 : (65536 / NTHREADS);
constexpr int CACHE_REGS_RAW = REGS_PER_THREAD - 48;
constexpr int CACHE_REGS = CACHE_REGS_RAW < 8 ? 8 : (CACHE_REGS_RAW > 32 ? 32 : CACHE_REGS_RAW);
// __launch_bounds__(NTHREADS, MIN_BLOCKS) caps registers at 65536 / (NTHREADS * MIN_BLOCKS) = 64.
constexpr int MIN_BLOCKS = (1024 / NTHREADS) < 1 ? 1 : (1024 / NTHREADS);
constexpr int REGS_PER_VEC = VEC >= 2 ? VEC / 2 : 1;
constexpr int CACHE_VECS = CACHE_REGS / REGS_PER_VEC;

constexpr float LOG2E = 1.4426950408889634f;

// A VEC-wide bundle of bf16 values moved with one load/store instruction, kept as raw bits
// (pairs in 32-bit words; element 2j is the low half of word j).
template <int V> struct alignas(2 * V) Pack { uint32_t w[V / 2]; };
template <> struct alignas(2) Pack<1> { uint16_t w[1]; };
using Vec = Pack<VEC>;

__device__ __forceinline__ float lo_f(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float hi_f(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }

// Element e as float.
__device__ __forceinline__ float elem(const Vec& v, int e) {
  if constexpr (VEC == 1) return __uint_as_float((uint32_t)v.w[0] << 16);
  else return (e & 1) ? hi_f(v.w[e >> 1]) : lo_f(v.w[e >> 1]);
}
// The same through volatile asm, for the write pass: the compiler must not reuse (CSE) the
// floats converted in pass 1, or it keeps VEC floats per cached vector alive across the
// reduction (2x the registers of the raw cache) instead of re-deriving them from raw bits.
__device__ __forceinline__ float elem_fresh(const Vec& v, int e) {
  uint32_t r;
  if constexpr (VEC == 1) {
    asm volatile("shl.b32 %0, %1, 16;" : "=r"(r) : "r"((uint32_t)v.w[0]));
  } else if (e & 1) {
    asm volatile("and.b32 %0, %1, 0xffff0000;" : "=r"(r) : "r"((uint32_t)v.w[e >> 1]));
  } else {
    asm volatile("shl.b32 %0, %1, 16;" : "=r"(r) : "r"((uint32_t)v.w[e >> 1]));
  }
  return __uint_as_float(r);
}
// Max of the VEC elements, computed on packed bf16 pairs (exact: a max of bf16 is a bf16).
__device__ __forceinline__ float vmax(const Vec& v) {
  if constexpr (VEC == 1) {
    return elem(v, 0);
  } else {
    __nv_bfloat162 m = *reinterpret_cast<const __nv_bfloat162*>(&v.w[0]);
#pragma unroll
    for (int j = 1; j < VEC / 2; ++j) m = __hmax2(m, *reinterpret_cast<const __nv_bfloat162*>(&v.w[j]));
    const uint32_t mw = *reinterpret_cast<const uint32_t*>(&m);
    return fmaxf(lo_f(mw), hi_f(mw));
  }
}
// Pack VEC floats (rounded to nearest) into a Vec.
__device__ __forceinline__ Vec pack(const float (&f)[VEC]) {
  Vec o;
  if constexpr (VEC == 1) {
    const __nv_bfloat16 b = __float2bfloat16_rn(f[0]);
    o.w[0] = *reinterpret_cast<const uint16_t*>(&b);
  } else {
#pragma unroll
    for (int j = 0; j < VEC / 2; ++j) {
      const __nv_bfloat162 b = __floats2bfloat162_rn(f[2 * j], f[2 * j + 1]);
      o.w[j] = *reinterpret_cast<const uint32_t*>(&b);
    }
  }
  return o;
}

__device__ __forceinline__ float ex2(float x) { return exp2f(x); }

// Merge partial (m2, s2) into (m, s). -inf marks "no elements yet".
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
  const float mn = fmaxf(m, m2);
  if (mn == -INFINITY) return;
  s = s * ex2((m - mn) * LOG2E) + s2 * ex2((m2 - mn) * LOG2E);
  m = mn;
}

__device__ __forceinline__ void group_barrier(int group) {
  if constexpr (RPB == 1) {
    __syncthreads();
  } else {
    // Named barrier per row group (id 0 is __syncthreads'), so groups never wait on each other
    // (a group whose row is past ROWS has left; the others must not count on it).
    asm volatile("bar.sync %0, %1;\n" ::"r"(group + 1), "n"(TPR) : "memory");
  }
}

extern "C" __global__ void __launch_bounds__(NTHREADS, MIN_BLOCKS)
softmax_bf16_kernel(const __nv_bfloat16* __restrict__ X, __nv_bfloat16* __restrict__ Y,
                    int ROWS, int COLS) {
  __shared__ float red_m[RPB][WARPS_PER_ROW];
  __shared__ float red_s[RPB][WARPS_PER_ROW];

  const int group = threadIdx.x / TPR;
  const int t = threadIdx.x % TPR;
  const int row = blockIdx.x * RPB + group;
  if (row >= ROWS) return;  // the whole group leaves together (named barriers stay consistent)

  const __nv_bfloat16* x = X + (size_t)row * COLS;
  __nv_bfloat16* y = Y + (size_t)row * COLS;

  // Split the row into head (scalar) | nv aligned vectors | tail (scalar).
  constexpr int VB = VEC * 2;  // vector bytes
  int head, nv;
  if (VEC > 1 && ((reinterpret_cast<uintptr_t>(x) ^ reinterpret_cast<uintptr_t>(y)) % VB) == 0) {
    const int mis = (int)((reinterpret_cast<uintptr_t>(x) % VB) / 2);
    head = min(mis == 0 ? 0 : VEC - mis, COLS);
    nv = (COLS - head) / VEC;
  } else {
    head = (VEC == 1) ? 0 : COLS;  // VEC == 1: everything is "vector"; misaligned: all scalar
    nv = (VEC == 1) ? COLS : 0;
  }
  const int tail = head + nv * VEC;
  const Vec* xv = reinterpret_cast<const Vec*>(x + head);
  Vec* yv = reinterpret_cast<Vec*>(y + head);

  // ---- pass 1: partial (max, sum) per thread ------------------------------------------
  float m = -INFINITY, s = 0.f;
  Vec cache[CACHE_VECS];
  const bool fits = nv <= CACHE_VECS * TPR;  // same for the whole group
  if (fits) {
    // Issue all loads first (memory-level parallelism), then reduce from registers.
#pragma unroll
    for (int k = 0; k < CACHE_VECS; ++k) {
      const int i = t + k * TPR;
      if (i < nv) cache[k] = xv[i];
    }
    float lm = -INFINITY;
#pragma unroll
    for (int k = 0; k < CACHE_VECS; ++k)
      if (t + k * TPR < nv) lm = fmaxf(lm, vmax(cache[k]));
    float ls = 0.f;
    const float ml = lm * LOG2E;
#pragma unroll
    for (int k = 0; k < CACHE_VECS; ++k) {
      if (t + k * TPR < nv) {
#pragma unroll
        for (int e = 0; e < VEC; ++e) ls += ex2(fmaf(elem(cache[k], e), LOG2E, -ml));
      }
    }
    m = lm;
    s = ls;
  } else {
    // Online: per vector, rescale the running sum only when the max grows.
#pragma unroll 4
    for (int i = t; i < nv; i += TPR) {
      const Vec v = xv[i];
      const float vm = vmax(v);
      if (vm > m) {
        s *= ex2((m - vm) * LOG2E);
        m = vm;
      }
      const float ml = m * LOG2E;
#pragma unroll
      for (int e = 0; e < VEC; ++e) s += ex2(fmaf(elem(v, e), LOG2E, -ml));
    }
  }
  // Scalar head and tail (fewer than VEC elements each, unless the row is all scalar).
  for (int j = t; j < head; j += TPR) merge(m, s, __bfloat162float(x[j]), 1.f);
  for (int j = tail + t; j < COLS; j += TPR) merge(m, s, __bfloat162float(x[j]), 1.f);

  // ---- reduce (m, s) over the group -----------------------------------------------------
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, off);
    const float s2 = __shfl_xor_sync(0xffffffffu, s, off);
    merge(m, s, m2, s2);
  }
  if constexpr (WARPS_PER_ROW > 1) {
    const int w = t / 32;
    if ((t & 31) == 0) {
      red_m[group][w] = m;
      red_s[group][w] = s;
    }
    group_barrier(group);
    m = red_m[group][0];
    s = red_s[group][0];
#pragma unroll
    for (int k = 1; k < WARPS_PER_ROW; ++k) merge(m, s, red_m[group][k], red_s[group][k]);
  }
  const float ml = m * LOG2E;
  const float inv = 1.f / s;

  // ---- pass 2: write Y ----------------------------------------------------------------
  if (fits) {
#pragma unroll
    for (int k = 0; k < CACHE_VECS; ++k) {
      const int i = t + k * TPR;
      if (i < nv) {
        float f[VEC];
#pragma unroll
        for (int e = 0; e < VEC; ++e) f[e] = ex2(fmaf(elem_fresh(cache[k], e), LOG2E, -ml)) * inv;
        yv[i] = pack(f);
      }
    }
  } else {
#pragma unroll 4
    for (int i = t; i < nv; i += TPR) {
      const Vec v = xv[i];
      float f[VEC];
#pragma unroll
      for (int e = 0; e < VEC; ++e) f[e] = ex2(fmaf(elem(v, e), LOG2E, -ml)) * inv;
      yv[i] = pack(f);
    }
  }
  for (int j = t; j < head; j += TPR)
    y[j] = __float2bfloat16_rn(ex2(fmaf(__bfloat162float(x[j]), LOG2E, -ml)) * inv);
  for (int j = tail + t; j < COLS; j += TPR)
    y[j] = __float2bfloat16_rn(ex2(fmaf(__bfloat162float(x[j]), LOG2E, -ml)) * inv);
}
