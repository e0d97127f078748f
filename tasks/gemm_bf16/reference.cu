// Reference for gemm_bf16: C[M,N] = A[M,K] · B[N,K]ᵀ with bf16 inputs, fp32 products and
// fp32 accumulation, fp32 output (no rounding to bf16). Deliberately simple: 16×16 threads per
// block, one output per thread, A and B staged through shared memory 16 columns of K at a time.
// Same arguments as the candidate except C is float*. Any M, N, K >= 1.
#include <cuda_bf16.h>

#define TILE 16

extern "C" __global__ void __launch_bounds__(TILE * TILE)
gemm_ref(const __nv_bfloat16* __restrict__ A, const __nv_bfloat16* __restrict__ B,
         float* __restrict__ C, int M, int N, int K) {
  __shared__ float As[TILE][TILE + 1];  // As[m][k]
  __shared__ float Bs[TILE][TILE + 1];  // Bs[n][k]
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int m = blockIdx.y * TILE + ty;
  const int n = blockIdx.x * TILE + tx;
  const int n_load = blockIdx.x * TILE + ty;  // B row this thread stages
  float acc = 0.f;
  for (int k0 = 0; k0 < K; k0 += TILE) {
    const int k = k0 + tx;
    As[ty][tx] = (m < M && k < K) ? __bfloat162float(A[(size_t)m * K + k]) : 0.f;
    Bs[ty][tx] = (n_load < N && k < K) ? __bfloat162float(B[(size_t)n_load * K + k]) : 0.f;
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < TILE; ++kk) acc = fmaf(As[ty][kk], Bs[tx][kk], acc);
    __syncthreads();
  }
  if (m < M && n < N) C[(size_t)m * N + n] = acc;
}
