// Reference for adversarial: y = 2·x + 1, fp32. Same arguments as the candidate.
extern "C" __global__ void adversarial_ref(const float* __restrict__ x, float* __restrict__ y,
                                           int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = 2.f * x[i] + 1.f;
}
