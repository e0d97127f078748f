// gemm_bf16: C[M,N] (bf16) = A[M,K] (bf16) · B[N,K]ᵀ (bf16), fp32 accumulation.
//
// Both A and B are row-major with K contiguous ("TN": both operands K-major), which is exactly
// what mma.sync.m16n8k16.row.col wants: A fragments are row-major (M×K) and B fragments are
// "col" (K×N column-major = N×K row-major), so both are read from shared memory with plain
// (non-transposed) ldmatrix.
//
// Structure of one thread block (BLOCK_M × BLOCK_N output tile, WARPS_M × WARPS_N warps):
//   1. A STAGES-deep cp.async pipeline streams BLOCK_M×BLOCK_K tiles of A and BLOCK_N×BLOCK_K
//      tiles of B from global memory into dynamic shared memory (16-byte cp.async.cg, L2 only,
//      out-of-range rows/columns zero-filled by giving cp.async a source size of 0).
//   2. Shared memory rows are XOR-swizzled in 16-byte chunks, so that both the cp.async stores
//      and the ldmatrix reads (8 rows × 16 bytes per phase) hit 8 different bank groups: no
//      padding, no bank conflicts, and the footprint is exactly
//      STAGES * (BLOCK_M + BLOCK_N) * BLOCK_K * 2 bytes.
//   3. Each warp owns a WM × WN = (BLOCK_M/WARPS_M) × (BLOCK_N/WARPS_N) sub-tile and keeps it in
//      registers as (WM/16) × (WN/8) mma accumulators of 4 floats per thread. A/B fragments
//      are double-buffered in registers: the ldmatrix for the next k16 step (also across the
//      tile boundary) are issued before the mmas of the current one. One __syncthreads per
//      BLOCK_K tile. Blocks are rasterised in groups of 8 tile-rows for L2 reuse.
//   4. Epilogue: round to bf16 and store straight from the accumulators (bf16x2 when N is even).
//
// Knobs (all compile-time, -DNAME=value):
//   BLOCK_M, BLOCK_N  output tile per block: data reuse from shared memory (bigger = fewer
//                     global loads per FLOP) vs. number of blocks / wave quantisation.
//   BLOCK_K           K-depth of one pipeline stage (32 or 64): fewer, larger cp.async batches
//                     and barriers per K, at the price of shared memory per stage. Also selects
//                     the swizzle (64: 128-byte rows; 32: two 64-byte rows per 128 bytes).
//   WARPS_M, WARPS_N  warp grid inside the block: sets the thread count and the warp tile
//                     shape, i.e. the accumulator registers per thread and the ldmatrix:mma
//                     ratio (a square-ish warp tile reuses fragments best).
//   STAGES            depth of the cp.async pipeline (2..4): how much global-memory latency is
//                     hidden, at STAGES × stage bytes of shared memory (lower occupancy).
//
// Requirements: K % 8 == 0 (16-byte rows for cp.async), A and B 16-byte aligned. M and N are
// arbitrary (rows and columns past the edge are zero-filled on load and skipped on store);
// K need not be a multiple of BLOCK_K (the tail chunk is zero-filled).

#include <cuda_bf16.h>
#include <stdint.h>

#ifndef BLOCK_M
#define BLOCK_M 128
#endif
#ifndef BLOCK_N
#define BLOCK_N 256
#endif
#ifndef BLOCK_K
#define BLOCK_K 32
#endif
#ifndef WARPS_M
#define WARPS_M 2
#endif
#ifndef WARPS_N
#define WARPS_N 4
#endif
#ifndef STAGES
#define STAGES 4
#endif

constexpr int NTHREADS = WARPS_M * WARPS_N * 32;
constexpr int WM = BLOCK_M / WARPS_M;      // warp tile rows
constexpr int WN = BLOCK_N / WARPS_N;      // warp tile columns
constexpr int MI = WM / 16;                // m16 mma tiles per warp
constexpr int NI = WN / 8;                 // n8 mma tiles per warp
constexpr int KSTEPS = BLOCK_K / 16;       // k16 mma steps per stage
constexpr int CPR = BLOCK_K / 8;           // 16-byte chunks per smem row
constexpr int A_STAGE_BYTES = BLOCK_M * BLOCK_K * 2;
constexpr int B_STAGE_BYTES = BLOCK_N * BLOCK_K * 2;
constexpr int STAGE_BYTES = A_STAGE_BYTES + B_STAGE_BYTES;
constexpr int GROUP_M = 8;                 // block rasterisation: 8 M-tiles per group (L2 reuse)

static_assert(BLOCK_K == 32 || BLOCK_K == 64, "BLOCK_K must be 32 or 64");
static_assert(BLOCK_M % (16 * WARPS_M) == 0, "warp tile rows must be a multiple of 16");
static_assert(BLOCK_N % (16 * WARPS_N) == 0, "warp tile columns must be a multiple of 16");
static_assert(NTHREADS <= 1024, "too many threads");
static_assert(STAGES >= 2, "need at least 2 stages");
static_assert(NTHREADS % CPR == 0, "thread count must be a multiple of chunks per row");

// Offset, in 16-byte units, of logical chunk `chunk` of row `row` inside one operand tile.
// The XOR makes 8 consecutive rows at the same logical chunk land in 8 different
// 16-byte bank groups of a 128-byte line.
__device__ __forceinline__ int swizzle(int row, int chunk) {
  if constexpr (CPR == 8) {
    return row * 8 + (chunk ^ (row & 7));          // one row per 128-byte line
  } else {
    return row * 4 + (chunk ^ ((row >> 1) & 3));   // two rows per 128-byte line
  }
}
// The XOR term for a row: only the low 3 bits of the row matter, and warp/mma tile origins are
// multiples of 16 rows, so a thread's term is fixed by its lane (see the ldmatrix addressing).
__device__ __forceinline__ int swizzle_term(int row) {
  if constexpr (CPR == 8) return row & 7; else return (row >> 1) & 3;
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global->shared copy; src_bytes = 0 writes 16 zero bytes and reads nothing.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t addr, uint32_t& r0, uint32_t& r1,
                                            uint32_t& r2, uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4],
                                               uint32_t b0, uint32_t b1) {
  asm(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// An empty volatile asm makes a value opaque to the optimiser: computations that depend on it
// cannot be hoisted out of the main loop. Used for the per-row global addresses of the
// cp.asyncs, which would otherwise be precomputed once and kept live in (64-bit) registers for
// the whole loop: ~50 registers on the default config, enough to make it spill.
__device__ __forceinline__ int opaque(int x) {
  asm volatile("" : "+r"(x));
  return x;
}

// Issue the cp.asyncs for one ROWS × BLOCK_K operand tile (rows row0.., k from k0) into `dst`.
// Chunk c = tid + i*NTHREADS covers row c / CPR, chunk c % CPR; since NTHREADS % CPR == 0 every
// thread always copies the same chunk column, one row every NTHREADS / CPR rows.
template <int ROWS>
__device__ __forceinline__ void load_tile(uint32_t dst, const __nv_bfloat16* __restrict__ src,
                                          int row0, int nrows, int k0, int K, int tid) {
  constexpr int CHUNKS = ROWS * CPR;
  constexpr int ITERS = (CHUNKS + NTHREADS - 1) / NTHREADS;
  constexpr int ROW_STEP = NTHREADS / CPR;
  const int kc = tid % CPR;
  const int r = tid / CPR;
  const int k = k0 + kc * 8;
  const bool k_ok = k < K;
  // Fully unrolled for the usual few chunks per thread; with few threads and big tiles (up to
  // 32 chunks each) a full unroll costs more registers than it saves, so unroll by 4 there.
#pragma unroll(ITERS <= 8 ? ITERS : 4)
  for (int i = 0; i < ITERS; ++i) {
    const int row = r + i * ROW_STEP;
    if (CHUNKS % NTHREADS == 0 || row < ROWS) {
      const int grow = row0 + opaque(row);
      const bool ok = k_ok && grow < nrows;
      // Out-of-range chunks read nothing (size 0) but still need a harmless address.
      const __nv_bfloat16* p = ok ? src + (size_t)grow * K + k : src;
      cp_async_16(dst + swizzle(row, kc) * 16, p, ok);
    }
  }
}

extern "C" __global__ void __launch_bounds__(NTHREADS)
gemm_bf16_kernel(const __nv_bfloat16* __restrict__ A, const __nv_bfloat16* __restrict__ B,
                 __nv_bfloat16* __restrict__ C, int M, int N, int K) {
  extern __shared__ __align__(128) unsigned char smem[];

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int warp_m = warp / WARPS_N;
  const int warp_n = warp % WARPS_N;

  // Grouped rasterisation: consecutive blocks walk GROUP_M tile-rows down a column of tiles
  // before moving right, so the A and B panels in flight stay resident in L2.
  const int grid_n = gridDim.x, grid_m = gridDim.y;
  const int pid = blockIdx.y * grid_n + blockIdx.x;
  const int group_size = GROUP_M * grid_n;
  const int first_m = (pid / group_size) * GROUP_M;
  const int group_rows = min(grid_m - first_m, GROUP_M);
  const int tile_m = first_m + (pid % group_size) % group_rows;
  const int tile_n = (pid % group_size) / group_rows;
  const int bm0 = tile_m * BLOCK_M;
  const int bn0 = tile_n * BLOCK_N;

  const uint32_t smem_base = smem_addr(smem);
  const int KT = (K + BLOCK_K - 1) / BLOCK_K;

  auto load_stage = [&](int slot, int kt) {
    const uint32_t a_dst = smem_base + slot * STAGE_BYTES;
    const uint32_t b_dst = a_dst + A_STAGE_BYTES;
    load_tile<BLOCK_M>(a_dst, A, bm0, M, kt * BLOCK_K, K, tid);
    load_tile<BLOCK_N>(b_dst, B, bn0, N, kt * BLOCK_K, K, tid);
  };

  // ldmatrix addressing (per lane, fixed for the whole kernel):
  //  A x4 = rows 0-7/8-15 × k 0-7, then rows 0-7/8-15 × k 8-15 -> a0..a3 of m16n8k16.
  //    lane -> row (lane & 15), k-chunk (lane >> 4).
  //  B x4 = n 0-7 × k 0-7, n 0-7 × k 8-15, n 8-15 × k 0-7, n 8-15 × k 8-15
  //    -> (b0, b1) of n-tile j, then (b0, b1) of n-tile j+1.
  //    lane -> n-row (lane & 7) + 8*(lane >> 4), k-chunk (lane >> 3) & 1.
  const int a_row = warp_m * WM + (lane & 15);
  const int a_hx = (lane >> 4) ^ swizzle_term(a_row);   // (2ks + h) ^ x == 2ks ^ (h ^ x)
  const int b_row = warp_n * WN + (lane & 7) + ((lane >> 4) << 3);
  const int b_hx = ((lane >> 3) & 1) ^ swizzle_term(b_row);
  const uint32_t a_off = a_row * CPR * 16;
  const uint32_t b_off = A_STAGE_BYTES + b_row * CPR * 16;

  float acc[MI][NI][4];
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < NI; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

  // Register fragments, double-buffered: while the mmas of k-step ks run, the ldmatrix for
  // k-step ks+1 (or for k-step 0 of the next tile) are already in flight.
  uint32_t af[2][MI][4];
  uint32_t bf[2][NI][2];
  auto load_frags = [&](int buf, uint32_t stage, int ks) {
#pragma unroll
    for (int i = 0; i < MI; ++i) {
      const uint32_t addr = stage + a_off + i * 16 * CPR * 16 + (((2 * ks) ^ a_hx) << 4);
      ldmatrix_x4(addr, af[buf][i][0], af[buf][i][1], af[buf][i][2], af[buf][i][3]);
    }
#pragma unroll
    for (int j = 0; j < NI / 2; ++j) {
      const uint32_t addr = stage + b_off + j * 16 * CPR * 16 + (((2 * ks) ^ b_hx) << 4);
      ldmatrix_x4(addr, bf[buf][2 * j][0], bf[buf][2 * j][1], bf[buf][2 * j + 1][0],
                  bf[buf][2 * j + 1][1]);
    }
  };

  // Prologue: fill STAGES-1 slots. Every k-tile commits exactly one group (possibly empty), so
  // "wait until at most STAGES-2 groups are pending" always means "the next tile has landed".
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < KT) load_stage(s, s);
    cp_async_commit();
  }
  cp_async_wait<STAGES - 2>();
  __syncthreads();

  int read_slot = 0;
  int write_slot = STAGES - 1;
  uint32_t stage = smem_base;
  load_frags(0, stage, 0);

  for (int kt = 0; kt < KT; ++kt) {
#pragma unroll
    for (int ks = 0; ks < KSTEPS; ++ks) {
      if (ks == KSTEPS - 1) {
        // Tile kt is fully read into registers (its last fragments were loaded at ks-1):
        // wait for tile kt+1, and the barrier also frees tile kt's slot for refilling.
        cp_async_wait<STAGES - 2>();
        __syncthreads();
        read_slot = (read_slot + 1 == STAGES) ? 0 : read_slot + 1;
        stage = smem_base + read_slot * STAGE_BYTES;
      }
      // Next k-step's fragments (k-step 0 of tile kt+1 after the last one; on the very last
      // iteration this reads a stale slot and the result is never used).
      load_frags((ks + 1) & 1, stage, (ks + 1 == KSTEPS) ? 0 : ks + 1);
      if (ks == 0) {
        // Refill the slot that tile kt-1 used (free since the barrier of the previous tile).
        const int pf = kt + STAGES - 1;
        if (pf < KT) load_stage(write_slot, pf);
        cp_async_commit();
        write_slot = (write_slot + 1 == STAGES) ? 0 : write_slot + 1;
      }
      const int cur = ks & 1;
#pragma unroll
      for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j) {
          // Serpentine order over j lets consecutive mmas share the A fragment.
          const int jj = (i & 1) ? (NI - 1 - j) : j;
          mma_bf16_16816(acc[i][jj], af[cur][i], bf[cur][jj][0], bf[cur][jj][1]);
        }
    }
  }
  cp_async_wait<0>();  // nothing real is pending, but leave no async copies behind

  // Epilogue. Accumulator layout of m16n8: c0,c1 -> (row g, cols 2q, 2q+1), c2,c3 -> row g+8,
  // with g = lane / 4, q = lane % 4.
  const int g = lane >> 2;
  const int q = lane & 3;
  const bool n_even = (N & 1) == 0;
#pragma unroll
  for (int i = 0; i < MI; ++i) {
#pragma unroll
    for (int j = 0; j < NI; ++j) {
      const int col = bn0 + warp_n * WN + j * 8 + 2 * q;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = bm0 + warp_m * WM + i * 16 + g + 8 * h;
        if (row >= M) continue;
        __nv_bfloat16* out = C + (size_t)row * N + col;
        const float v0 = acc[i][j][2 * h], v1 = acc[i][j][2 * h + 1];
        if (n_even && col + 1 < N) {
          *reinterpret_cast<__nv_bfloat162*>(out) = __floats2bfloat162_rn(v0, v1);
        } else {
          if (col < N) out[0] = __float2bfloat16_rn(v0);
          if (col + 1 < N) out[1] = __float2bfloat16_rn(v1);
        }
      }
    }
  }
}
