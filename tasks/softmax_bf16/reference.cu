// Reference for softmax_bf16: Y[r, c] = exp(X[r, c] - max_r) / Σ_c exp(X[r, c] - max_r), fp32
// with accurate expf, fp32 output. One block of 256 threads per row, three plain passes
// (max, sum, write) with block reductions in shared memory. Same arguments as the candidate
// except Y is float*.
#include <cuda_bf16.h>

#define REF_THREADS 256

__device__ float block_reduce(float v, bool is_max, float* buf) {
  buf[threadIdx.x] = v;
  __syncthreads();
  for (int off = REF_THREADS / 2; off > 0; off >>= 1) {
    if (threadIdx.x < off) {
      const float o = buf[threadIdx.x + off];
      buf[threadIdx.x] = is_max ? fmaxf(buf[threadIdx.x], o) : buf[threadIdx.x] + o;
    }
    __syncthreads();
  }
  const float r = buf[0];
  __syncthreads();  // buf is reused by the next reduction
  return r;
}

extern "C" __global__ void __launch_bounds__(REF_THREADS)
softmax_ref(const __nv_bfloat16* __restrict__ X, float* __restrict__ Y, int ROWS, int COLS) {
  __shared__ float buf[REF_THREADS];
  const int row = blockIdx.x;
  if (row >= ROWS) return;
  const __nv_bfloat16* x = X + (size_t)row * COLS;
  float* y = Y + (size_t)row * COLS;

  float m = -INFINITY;
  for (int c = threadIdx.x; c < COLS; c += REF_THREADS) m = fmaxf(m, __bfloat162float(x[c]));
  m = block_reduce(m, true, buf);

  float s = 0.f;
  for (int c = threadIdx.x; c < COLS; c += REF_THREADS) s += expf(__bfloat162float(x[c]) - m);
  s = block_reduce(s, false, buf);

  for (int c = threadIdx.x; c < COLS; c += REF_THREADS) y[c] = expf(__bfloat162float(x[c]) - m) / s;
}
