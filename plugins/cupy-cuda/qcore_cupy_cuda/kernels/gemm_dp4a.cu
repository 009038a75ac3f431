// w8a8 linear: per-token int8 activation quantization, then an int8 GEMM with __dp4a
// (int32 accumulation, exact: |acc| <= 127 * 127 * K < 2^31 for K <= 131072) and a
// per-channel x per-token (or per-tensor) rescale plus bias in the epilogue.
#include "common.cuh"

#define ROW_THREADS 256
#define FLT_EPS32 1.1920928955078125e-07f

// One block per row of x (M, K): amax over the row, the contract's symmetric scale
// (amax 0 gives 1.0; else max(float32(float64(amax) / 127), eps)), then the codes
// clamp(rint(double(x) / double(scale)), -127, 127).
template <typename T>
__global__ void quantize_rows_int8(const T* __restrict__ x, signed char* __restrict__ codes,
                                   float* __restrict__ scale, int K)
{
    __shared__ float warp_max[ROW_THREADS / 32];
    const T* row = x + (long long)blockIdx.x * K;
    float amax = 0.0f;
    for (int k = threadIdx.x; k < K; k += ROW_THREADS)
        amax = fmaxf(amax, fabsf(to_float(row[k])));
    for (int off = 16; off > 0; off >>= 1)
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
    if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x >> 5] = amax;
    __syncthreads();
    amax = 0.0f;
#pragma unroll
    for (int w = 0; w < ROW_THREADS / 32; ++w) amax = fmaxf(amax, warp_max[w]);
    const float s = amax == 0.0f ? 1.0f : fmaxf(__double2float_rn((double)amax / 127.0), FLT_EPS32);
    if (threadIdx.x == 0) scale[blockIdx.x] = s;
    signed char* out = codes + (long long)blockIdx.x * K;
    for (int k = threadIdx.x; k < K; k += ROW_THREADS) {
        const double q = fmin(fmax(rint((double)to_float(row[k]) / (double)s), -127.0), 127.0);
        out[k] = (signed char)(int)q;
    }
}

template __global__ void quantize_rows_int8<float>(const float*, signed char*, float*, int);
template __global__ void quantize_rows_int8<f16>(const f16*, signed char*, float*, int);

#define BM 128
#define BN 128
#define BKW 8            // k-words (4 int8 codes each) per tile
#define PAD 4            // keeps the transposed smem stores free of bank conflicts
#define GEMM_THREADS 256

// Loads a (BM or BN) x BKW-word tile of a K-contiguous int8 matrix, transposed into smem.
__device__ __forceinline__ void load_tile(int (*dst)[BM + PAD], const int* __restrict__ src, int rows,
                                          int row0, int kw0, int kwords)
{
    const int w = threadIdx.x % BKW;
#pragma unroll
    for (int j = 0; j < BM * BKW / GEMM_THREADS; ++j) {
        const int r = threadIdx.x / BKW + j * (GEMM_THREADS / BKW);
        const int gr = row0 + r, gk = kw0 + w;
        dst[w][r] = (gr < rows && gk < kwords) ? src[(long long)gr * kwords + gk] : 0;
    }
}

// C = A (M, K) . W (N, K)^T on int8 codes, K % 4 == 0, both K-contiguous.
// RAW: write the int32 accumulators (testing the accumulation); otherwise write
// float32 acc * a_scale[m * a_scale_stride] * w_scale[n] (+ bias[n]).
template <bool RAW>
__global__ void __launch_bounds__(GEMM_THREADS)
gemm_dp4a(const signed char* __restrict__ a, const signed char* __restrict__ w,
          const float* __restrict__ a_scale, int a_scale_stride, const float* __restrict__ w_scale,
          const float* __restrict__ bias, int has_bias, void* __restrict__ out, int M, int N, int K)
{
    __shared__ __align__(16) int As[BKW][BM + PAD];
    __shared__ __align__(16) int Bs[BKW][BN + PAD];
    const int kwords = K / 4;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int* a32 = reinterpret_cast<const int*>(a);
    const int* w32 = reinterpret_cast<const int*>(w);
    int acc[8][8] = {};

    for (int kw0 = 0; kw0 < kwords; kw0 += BKW) {
        load_tile(As, a32, M, m0, kw0, kwords);
        load_tile(Bs, w32, N, n0, kw0, kwords);
        __syncthreads();
#pragma unroll
        for (int kw = 0; kw < BKW; ++kw) {
            int af[8], bf[8];
            *reinterpret_cast<int4*>(af) = *reinterpret_cast<const int4*>(&As[kw][ty * 4]);
            *reinterpret_cast<int4*>(af + 4) = *reinterpret_cast<const int4*>(&As[kw][64 + ty * 4]);
            *reinterpret_cast<int4*>(bf) = *reinterpret_cast<const int4*>(&Bs[kw][tx * 4]);
            *reinterpret_cast<int4*>(bf + 4) = *reinterpret_cast<const int4*>(&Bs[kw][64 + tx * 4]);
#pragma unroll
            for (int i = 0; i < 8; ++i)
#pragma unroll
                for (int j = 0; j < 8; ++j) acc[i][j] = __dp4a(af[i], bf[j], acc[i][j]);
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int m = m0 + (i < 4 ? ty * 4 + i : 64 + ty * 4 + i - 4);
        if (m >= M) continue;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const int n = n0 + (j < 4 ? tx * 4 + j : 64 + tx * 4 + j - 4);
            if (n >= N) continue;
            const long long o = (long long)m * N + n;
            if (RAW) {
                static_cast<int*>(out)[o] = acc[i][j];
            } else {
                float v = __fmul_rn(__fmul_rn((float)acc[i][j], a_scale[m * a_scale_stride]), w_scale[n]);
                if (has_bias) v += bias[n];
                static_cast<float*>(out)[o] = v;
            }
        }
    }
}

template __global__ void gemm_dp4a<true>(const signed char*, const signed char*, const float*, int, const float*,
                                         const float*, int, void*, int, int, int);
template __global__ void gemm_dp4a<false>(const signed char*, const signed char*, const float*, int, const float*,
                                          const float*, int, void*, int, int, int);
