// adversarial: y = 2·x + 1 over N floats, with deliberately broken variants for testing the
// harness (crash isolation, timeouts, poisoning, NaN handling, repeated-launch checks).
// Never use these as examples of anything but what a harness must catch.
//
// MODE (knob):
//   0  correct.
//   1  illegal address: thread 0 of every block also writes through a wild pointer 64 GiB past
//      y (unmapped) -> "an illegal memory access was encountered"; the context is dead.
//   2  endless loop: thread 0 of every block spins on a volatile __device__ flag nobody sets;
//      the kernel never finishes (the harness must time out and kill the worker).
//   3  leaves outputs unwritten: only the first half of y is written (the rest keeps whatever
//      was there: zeros from a harness that zeroes outputs, NaN from one that poisons them).
//   4  NaN: correct everywhere except one element in every 65536 (i % 65536 == 777) is NaN.
//      A comparison built on fmax/f32::max, which drop NaN, would pass it.
//   5  caches across calls: the first gridDim.x blocks ever run (i.e. the whole first launch)
//      compute; every block of every later launch skips the work (counter in __device__
//      memory). Correct on the first launch only; later launches leave y as it was.
//   6  work the timer might miss. By default (plain `nvcc -cubin`, no -rdc): each launch
//      computes only one rotating 1/8 slice of y (a __device__ block counter picks it), so
//      no single launch is correct but any 8 consecutive launches into the same buffer leave
//      it fully correct -- it fools a harness that checks y once after a batch of timed
//      launches without re-poisoning. When compiled with -rdc=true (__CUDACC_RDC__ defined;
//      the cubin must then be linked with libcudadevrt: `nvlink -arch=sm_90a k.cubin
//      -L<cuda>/lib -lcudadevrt -o linked.cubin`), it instead launches the real work as a
//      child grid into cudaStreamFireAndForget and returns at once. Device-side launch
//      cannot be compiled without -rdc ("kernel launch from __device__ or __global__
//      functions requires separate compilation mode").
//      Measured on the H100 (CUDA 13.0, CDP2; 2^28 elements): the nvlink-ed cubin loads with
//      cuModuleLoad (CuPy RawModule) and works, but it does NOT escape event timing: the
//      parent grid completes only after its fire-and-forget child, so the end event fired
//      after all outputs were written (1.64 ms vs 1.0 ms for mode 0).
//   7  out-of-bounds read: besides x[i], every thread reads x[i + 2^34] (64 GiB past the
//      buffer) -> illegal address.
//
// Cheats written against a harness that re-checked only the last timed launch (always input
// set (n-1) mod 3), placed buffers at the same addresses in every evaluation, never verified
// inputs after timing, and read the worker's stderr as UTF-8 (issue 13). Each must now end
// `incorrect` (scripts/gpu-test):
//   8  launch-set-aware: counts its launches (a __device__ block counter, as mode 6) and
//      does the work only on the first five (the correctness trials) and on every third
//      launch after them (the set a last-launch check would use); the others skip it.
//   9  address-aware, no state: does the work only when y starts exactly where x's buffer
//      would end if the two were allocated back to back (the layout of the correctness
//      buffers when addresses were the same every time); otherwise it skips the work.
//  10  input stash: computes y, then keeps its answer in its input (x[i] = y[i], x[0] marked)
//      so that a later launch on the same buffer could copy instead of compute.
//  11  stderr flood: thread 0 of every block prints non-UTF-8 bytes, and only half of y is
//      written. The run must go on: the next evaluations must not time out.

#ifndef MODE
#define MODE 0
#endif

__device__ volatile int adv_never_set = 0;   // mode 2
__device__ unsigned int adv_blocks_seen = 0; // mode 5
__device__ unsigned int adv_launches = 0;    // mode 6 (counts blocks, like mode 5)
__device__ unsigned int adv_seen8 = 0;       // mode 8 (counts blocks)

__device__ __forceinline__ float f(float v) { return 2.f * v + 1.f; }

#if MODE == 6 && defined(__CUDACC_RDC__)
__global__ void adv_child(const float* __restrict__ x, float* __restrict__ y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = f(x[i]);
}
#endif

extern "C" __global__ void adversarial_kernel(const float* __restrict__ x,
                                              float* __restrict__ y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
#if MODE == 0
  if (i < n) y[i] = f(x[i]);
#elif MODE == 1
  if (threadIdx.x == 0) *(volatile float*)(y + (1ull << 34)) = 1.f;
  if (i < n) y[i] = f(x[i]);
#elif MODE == 2
  if (threadIdx.x == 0)
    while (adv_never_set == 0) {
    }
  if (i < n) y[i] = f(x[i]);
#elif MODE == 3
  if (i < n / 2) y[i] = f(x[i]);
#elif MODE == 4
  if (i < n) y[i] = (i % 65536 == 777) ? __int_as_float(0x7fc00000) : f(x[i]);
#elif MODE == 5
  __shared__ bool skip;
  if (threadIdx.x == 0) skip = atomicAdd(&adv_blocks_seen, 1u) >= gridDim.x;
  __syncthreads();
  if (!skip && i < n) y[i] = f(x[i]);
#elif MODE == 6
#if defined(__CUDACC_RDC__)
  if (i == 0) adv_child<<<(n + 255) / 256, 256, 0, cudaStreamFireAndForget>>>(x, y, n);
#else
  // Which slice this launch does: blocks are numbered in arrival order over all launches;
  // launches on one stream do not overlap, so launch k gets numbers [k·grid, (k+1)·grid).
  __shared__ unsigned int slice;
  if (threadIdx.x == 0) slice = (atomicAdd(&adv_launches, 1u) / gridDim.x) % 8u;
  __syncthreads();
  const int chunk = (n + 7) / 8;
  if (i < n && i / chunk == (int)slice) y[i] = f(x[i]);
#endif
#elif MODE == 7
  if (i < n) {
    const float far = *(volatile const float*)(x + i + (1ull << 34));
    y[i] = f(x[i]) + (far == 12345.f ? 1.f : 0.f);
  }
#elif MODE == 8
  __shared__ bool work;
  if (threadIdx.x == 0) {
    const unsigned int launch = atomicAdd(&adv_seen8, 1u) / gridDim.x;
    work = launch < 5 || launch % 3 == 2;
  }
  __syncthreads();
  if (work && i < n) y[i] = f(x[i]);
#elif MODE == 9
  const unsigned long long bytes = (unsigned long long)n * sizeof(float);
  const unsigned long long gap = (unsigned long long)(const char*)y - (unsigned long long)(const char*)x;
  // cuMemAlloc rounds to 2 MiB: back to back, y starts at x + round_up(bytes, 2 MiB).
  const unsigned long long adjacent = (bytes + (2ull << 20) - 1) / (2ull << 20) * (2ull << 20);
  if (gap == adjacent && i < n) y[i] = f(x[i]);
#elif MODE == 10
  if (i < n) {
    const float v = f(x[i]);
    y[i] = v;
    ((float*)x)[i] = (i == 0) ? __int_as_float(0x7fc0beef) : v;
  }
#elif MODE == 11
  if (threadIdx.x == 0) printf("\xff\xfe\xfd flood %d \xc3\x28 \xa0\xa1\n", blockIdx.x);
  if (i < n / 2) y[i] = f(x[i]);
#else
#error "MODE must be 0..11"
#endif
}
