// The worker's own kernels, compiled once per run like a task's reference (see
// src/eval/gpu_check.rs): the comparison of a candidate's output with the reference's on the
// GPU, and the check that an input buffer still holds the bytes it was given.
//
// evo_compare computes what src/eval/compare.rs computes on the host, element by element in
// the same order of tests: reference not finite -> reference_bad; candidate bit-equal to the
// poison pattern -> unwritten; candidate NaN/Inf -> nonfinite; else the error |o - r| enters
// the sums (f64) and the maximum. Block b handles the contiguous range
// [b * chunk, min(n, (b + 1) * chunk)) and writes one EvoPart; the host merges the parts in
// block order, so "first" means the lowest index and the largest error keeps the lowest index
// on ties, as a single pass would.
//
// Types (dtype codes, as src/eval/gpu_check.rs sends them): 0 f32, 1 f16, 2 bf16, 3 e4m3
// (OCP FN: no infinities, S.1111.111 is NaN), 4 e5m2, 5 i32, 6 i64.

struct EvoPart {
  unsigned long long compared, nonfinite, unwritten, reference_bad;
  unsigned long long first_unwritten, first_nonfinite, first_reference_bad, worst_index;
  double max_abs, sum_abs, sum_sq_err, sum_sq_ref, worst_out, worst_ref, first_nonfinite_value;
};

#define EVO_NONE 0xFFFFFFFFFFFFFFFFull
#define EVO_THREADS 256

__device__ double evo_f16(unsigned int h) {
  const int s = (h >> 15) & 1, e = (h >> 10) & 31, m = h & 1023;
  double v;
  if (e == 0) v = ldexp((double)m, -24);
  else if (e == 31) v = m ? __longlong_as_double(0x7ff8000000000000ll) : __longlong_as_double(0x7ff0000000000000ll);
  else v = ldexp((double)(m | 1024), e - 25);
  return s ? -v : v;
}

__device__ double evo_e4m3(unsigned int b) {
  const int s = (b >> 7) & 1, e = (b >> 3) & 15, m = b & 7;
  double v;
  if (e == 15 && m == 7) v = __longlong_as_double(0x7ff8000000000000ll);
  else if (e == 0) v = ldexp((double)m, -9);
  else v = ldexp((double)(m | 8), e - 10);
  return s ? -v : v;
}

__device__ double evo_e5m2(unsigned int b) {
  const int s = (b >> 7) & 1, e = (b >> 2) & 31, m = b & 3;
  double v;
  if (e == 31) v = m ? __longlong_as_double(0x7ff8000000000000ll) : __longlong_as_double(0x7ff0000000000000ll);
  else if (e == 0) v = ldexp((double)m, -16);
  else v = ldexp((double)(m | 4), e - 17);
  return s ? -v : v;
}

// Element i of a buffer of `dtype`: its value, and whether every byte equals `poison`.
__device__ double evo_load(const unsigned char* p, int dtype, unsigned long long i, unsigned int poison,
                           bool* poisoned) {
  const unsigned int p2 = poison * 0x0101u, p4 = poison * 0x01010101u;
  switch (dtype) {
    case 0: {
      const unsigned int u = ((const unsigned int*)p)[i];
      *poisoned = u == p4;
      return (double)__uint_as_float(u);
    }
    case 1: {
      const unsigned int u = ((const unsigned short*)p)[i];
      *poisoned = u == p2;
      return evo_f16(u);
    }
    case 2: {
      const unsigned int u = ((const unsigned short*)p)[i];
      *poisoned = u == p2;
      return (double)__uint_as_float(u << 16);
    }
    case 3: {
      const unsigned int u = p[i];
      *poisoned = u == poison;
      return evo_e4m3(u);
    }
    case 4: {
      const unsigned int u = p[i];
      *poisoned = u == poison;
      return evo_e5m2(u);
    }
    case 5: {
      const unsigned int u = ((const unsigned int*)p)[i];
      *poisoned = u == p4;
      return (double)(int)u;
    }
    default: {
      const unsigned long long u = ((const unsigned long long*)p)[i];
      *poisoned = u == ((unsigned long long)p4 << 32 | p4);
      return (double)(long long)u;
    }
  }
}

__device__ void evo_merge(EvoPart& a, const EvoPart& b) {
  a.compared += b.compared;
  a.nonfinite += b.nonfinite;
  a.unwritten += b.unwritten;
  a.reference_bad += b.reference_bad;
  a.sum_abs += b.sum_abs;
  a.sum_sq_err += b.sum_sq_err;
  a.sum_sq_ref += b.sum_sq_ref;
  if (b.first_unwritten < a.first_unwritten) a.first_unwritten = b.first_unwritten;
  if (b.first_reference_bad < a.first_reference_bad) a.first_reference_bad = b.first_reference_bad;
  if (b.first_nonfinite < a.first_nonfinite) {
    a.first_nonfinite = b.first_nonfinite;
    a.first_nonfinite_value = b.first_nonfinite_value;
  }
  if (b.worst_index != EVO_NONE &&
      (a.worst_index == EVO_NONE || b.max_abs > a.max_abs || (b.max_abs == a.max_abs && b.worst_index < a.worst_index))) {
    a.max_abs = b.max_abs;
    a.worst_index = b.worst_index;
    a.worst_out = b.worst_out;
    a.worst_ref = b.worst_ref;
  }
}

extern "C" __global__ void __launch_bounds__(EVO_THREADS)
evo_compare(const unsigned char* out, const float* ref, unsigned long long n, int dtype, unsigned int poison,
            unsigned long long chunk, EvoPart* parts) {
  EvoPart t = {0, 0, 0, 0, EVO_NONE, EVO_NONE, EVO_NONE, EVO_NONE, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
  const unsigned long long lo = (unsigned long long)blockIdx.x * chunk;
  unsigned long long hi = lo + chunk;
  if (hi > n) hi = n;
  for (unsigned long long i = lo + threadIdx.x; i < hi; i += blockDim.x) {
    const double r = (double)ref[i];
    if (!isfinite(r)) {
      t.reference_bad++;
      if (i < t.first_reference_bad) t.first_reference_bad = i;
      continue;
    }
    bool poisoned;
    const double o = evo_load(out, dtype, i, poison, &poisoned);
    if (poisoned) {
      t.unwritten++;
      if (i < t.first_unwritten) t.first_unwritten = i;
      continue;
    }
    if (!isfinite(o)) {
      t.nonfinite++;
      if (i < t.first_nonfinite) {
        t.first_nonfinite = i;
        t.first_nonfinite_value = o;
      }
      continue;
    }
    const double d = fabs(o - r);
    t.compared++;
    t.sum_abs += d;
    t.sum_sq_err += d * d;
    t.sum_sq_ref += r * r;
    if (t.worst_index == EVO_NONE || d > t.max_abs) {
      t.max_abs = d;
      t.worst_index = i;
      t.worst_out = o;
      t.worst_ref = r;
    }
  }
  // A worst error of 0 counts as none, as on the host (the largest error must exceed 0).
  if (t.max_abs == 0.0) t.worst_index = EVO_NONE;
  __shared__ EvoPart s[EVO_THREADS];
  s[threadIdx.x] = t;
  __syncthreads();
  for (unsigned int w = blockDim.x / 2; w > 0; w /= 2) {
    if (threadIdx.x < w) evo_merge(s[threadIdx.x], s[threadIdx.x + w]);
    __syncthreads();
  }
  if (threadIdx.x == 0) parts[blockIdx.x] = s[0];
}

// Counts the bytes where a and b differ (result[0]) and the lowest such offset (result[1],
// which the host sets to all ones before). Both buffers hold `bytes` bytes, 4-byte aligned.
extern "C" __global__ void __launch_bounds__(EVO_THREADS)
evo_same(const unsigned char* a, const unsigned char* b, unsigned long long bytes, unsigned long long* result) {
  const unsigned long long words = bytes / 4;
  const unsigned int* aw = (const unsigned int*)a;
  const unsigned int* bw = (const unsigned int*)b;
  unsigned long long diff = 0, first = EVO_NONE;
  const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
  for (unsigned long long w = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; w < words; w += stride) {
    const unsigned int x = aw[w] ^ bw[w];
    if (x) {
      diff += __popc(((x & 0x7f7f7f7fu) + 0x7f7f7f7fu | x) & 0x80808080u);
      const unsigned long long at = w * 4 + (__ffs(x) - 1) / 8;
      if (at < first) first = at;
    }
  }
  if (blockIdx.x == 0 && threadIdx.x == 0)
    for (unsigned long long i = words * 4; i < bytes; i++)
      if (a[i] != b[i]) {
        diff++;
        if (i < first) first = i;
      }
  if (diff) {
    atomicAdd(result, diff);
    atomicMin(result + 1, first);
  }
}
