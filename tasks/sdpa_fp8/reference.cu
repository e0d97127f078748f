// Reference for sdpa_fp8: O = softmax(Q·Kᵀ·q_scale·k_scale/√D)·V·v_scale in fp32, from the
// same e4m3 inputs (decoded exactly to fp32), accurate expf, no rounding of P, fp32 output.
// Same arguments as the candidate except O is float*. The head dim and the mask are runtime
// arguments here (the reference is compiled once, without the shape defines).
//
// One block of REF_ROWS warps handles REF_ROWS consecutive query rows of one (batch, head);
// each warp owns one row. Keys go through shared memory in chunks of 32 (decoded to fp32,
// rows padded by one float so lane j reading key j's row is conflict-free). Lane j computes
// the score of key j of the chunk, the warp does an online-softmax update, and lane i then
// accumulates output columns i, i+32, ... with the 32 probabilities broadcast by shuffles.
// Grid: (ceil(S / REF_ROWS), B·H). Work per block ~ 2·S·D·REF_ROWS FMAs: milliseconds for the
// task's largest shape.
#include <stdint.h>

#define REF_ROWS 8
#define REF_CHUNK 32
#define REF_MAXD 128

__device__ __forceinline__ float e4m3_to_f32(uint8_t b) {
  const int sign = b >> 7, e = (b >> 3) & 15, m = b & 7;
  float v;
  if (e == 15 && m == 7) v = __int_as_float(0x7fc00000);  // NaN (e4m3fn has no infinity)
  else if (e == 0) v = ldexpf((float)m, -9);               // subnormal: m/8 · 2^-6
  else v = ldexpf(1.0f + m / 8.0f, e - 7);
  return sign ? -v : v;
}

extern "C" __global__ void __launch_bounds__(REF_ROWS * 32)
sdpa_fp8_ref(const uint8_t* __restrict__ Q, const uint8_t* __restrict__ K, const uint8_t* __restrict__ V,
             float* __restrict__ O, float q_scale, float k_scale, float v_scale, int batch, int heads, int S,
             int head_dim, int causal) {
  __shared__ float ks[REF_CHUNK][REF_MAXD + 1];
  __shared__ float vs[REF_CHUNK][REF_MAXD + 1];
  __shared__ float qs[REF_ROWS][REF_MAXD];
  const int Dh = head_dim;
  if (Dh > REF_MAXD || Dh % 32 != 0) return;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int bh = blockIdx.y;
  const int row0 = blockIdx.x * REF_ROWS;
  const int row = row0 + warp;
  const size_t head = (size_t)bh * S * Dh;

  for (int i = threadIdx.x; i < REF_ROWS * Dh; i += blockDim.x) {
    const int r = i / Dh, d = i % Dh;
    qs[r][d] = (row0 + r < S) ? e4m3_to_f32(Q[head + (size_t)(row0 + r) * Dh + d]) * q_scale : 0.f;
  }
  const float scale = k_scale / sqrtf((float)Dh);
  float m = -INFINITY, l = 0.f;
  float o[REF_MAXD / 32];
#pragma unroll
  for (int i = 0; i < REF_MAXD / 32; ++i) o[i] = 0.f;

  int kend = S;
  if (causal) kend = min(S, row0 + REF_ROWS);
  for (int k0 = 0; k0 < kend; k0 += REF_CHUNK) {
    __syncthreads();
    for (int i = threadIdx.x; i < REF_CHUNK * Dh; i += blockDim.x) {
      const int r = i / Dh, d = i % Dh;
      const int key = k0 + r;
      ks[r][d] = key < S ? e4m3_to_f32(K[head + (size_t)key * Dh + d]) : 0.f;
      vs[r][d] = key < S ? e4m3_to_f32(V[head + (size_t)key * Dh + d]) * v_scale : 0.f;
    }
    __syncthreads();
    if (row >= S) continue;
    const int key = k0 + lane;
    float s = 0.f;
    for (int d = 0; d < Dh; ++d) s = fmaf(qs[warp][d], ks[lane][d], s);
    s *= scale;
    const bool valid = key < S && (!causal || key <= row);
    if (!valid) s = -INFINITY;
    float cm = s;
    for (int off = 16; off > 0; off >>= 1) cm = fmaxf(cm, __shfl_xor_sync(0xffffffffu, cm, off));
    const float mn = fmaxf(m, cm);
    if (mn == -INFINITY) continue;  // nothing valid yet for this row (warp-uniform)
    const float alpha = expf(m - mn);  // m = -inf -> 0
    const float p = valid ? expf(s - mn) : 0.f;
    float ps = p;
    for (int off = 16; off > 0; off >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, off);
    l = l * alpha + ps;
    m = mn;
#pragma unroll
    for (int i = 0; i < REF_MAXD / 32; ++i) o[i] *= alpha;
    for (int j = 0; j < REF_CHUNK; ++j) {
      const float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
      for (int i = 0; i < REF_MAXD / 32; ++i)
        if (i < Dh / 32) o[i] = fmaf(pj, vs[j][lane + 32 * i], o[i]);
    }
  }
  if (row < S) {
#pragma unroll
    for (int i = 0; i < REF_MAXD / 32; ++i)
      if (i < Dh / 32) O[head + (size_t)row * Dh + lane + 32 * i] = o[i] / l;
  }
}
