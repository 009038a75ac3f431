// w4a16 linear for small M: out (M, N) = x (M, K) . deq(W)^T (+ bias), float32 accumulation.
// W is (N, K) int4/uint4 codes packed two a byte along K, low nibble first (the canonical
// packing), with float32 scales (and int32 zero-points when asymmetric) per group of K.
// One warp per output channel: each lane reads 16 bytes (32 codes, one group as group % 32 == 0)
// per step, INFLIGHT steps ahead, so a warp streams 512 contiguous bytes at a time; x is re-read
// from L1/L2.
// Requires K % 32 == 0, group % 32 == 0, K % group == 0, x rows 16-byte aligned.
#include "common.cuh"

#define WARPS 8
#define MT 8             // rows of x per block (grid.y covers M)
#define INFLIGHT 4       // 16-byte weight loads each lane issues before using any

template <typename T>
__global__ void __launch_bounds__(WARPS * 32)
gemv_w4a16(const T* __restrict__ x, const unsigned char* __restrict__ w, const float* __restrict__ scale,
           const int* __restrict__ zero_point, int has_zero_point, int is_signed,
           const float* __restrict__ bias, int has_bias, float* __restrict__ out, int M, int N, int K, int group)
{
    const int lane = threadIdx.x & 31;
    const int n = blockIdx.x * WARPS + (threadIdx.x >> 5);
    const int m0 = blockIdx.y * MT;
    if (n >= N) return;
    const int chunks = K / 32, groups = K / group;
    const uint4* wrow = reinterpret_cast<const uint4*>(w + (long long)n * (K / 2));
    float acc[MT] = {};

    for (int base = lane; base < chunks; base += 32 * INFLIGHT) {
        uint4 packed[INFLIGHT];
        float s[INFLIGHT];
        int zp[INFLIGHT];
#pragma unroll
        for (int u = 0; u < INFLIGHT; ++u) {  // all loads first: memory-level parallelism
            const int c = base + 32 * u;
            const int g = (c * 32) / group;
            packed[u] = c < chunks ? wrow[c] : make_uint4(0, 0, 0, 0);
            s[u] = c < chunks ? scale[(long long)n * groups + g] : 0.0f;
            zp[u] = (c < chunks && has_zero_point) ? zero_point[(long long)n * groups + g] : 0;
        }
#pragma unroll
        for (int u = 0; u < INFLIGHT; ++u) {
            const int c = base + 32 * u;
            if (c >= chunks) break;
            const unsigned int words[4] = {packed[u].x, packed[u].y, packed[u].z, packed[u].w};
            // bits 0x4B000000 | f are the float 2^23 + f: subtracting 2^23 + bias + zp gives the code minus its
            // zero-point exactly, cheaper than an int-to-float conversion per weight. Signed nibbles are flipped
            // to f = q + 8 (bias 8), unsigned ones read as they are.
            const unsigned int flip = is_signed ? 0x88888888u : 0u;
            const float offset = 8388608.0f + (is_signed ? 8.0f : 0.0f) + (float)zp[u];
            float part[MT] = {};
#pragma unroll
            for (int wi = 0; wi < 4; ++wi) {
                const unsigned int fields = words[wi] ^ flip;
                float wv[8];
#pragma unroll
                for (int t = 0; t < 8; ++t)  // low nibble first
                    wv[t] = __uint_as_float(0x4B000000u | ((fields >> (4 * t)) & 0xFu)) - offset;
#pragma unroll
                for (int mm = 0; mm < MT; ++mm) {
                    if (m0 + mm >= M) break;
                    float xv[8];
                    load8(x + (long long)(m0 + mm) * K + c * 32 + wi * 8, xv);
#pragma unroll
                    for (int t = 0; t < 8; ++t) part[mm] = fmaf(wv[t], xv[t], part[mm]);
                }
            }
#pragma unroll
            for (int mm = 0; mm < MT; ++mm) acc[mm] = fmaf(s[u], part[mm], acc[mm]);
        }
    }

#pragma unroll
    for (int mm = 0; mm < MT; ++mm) {
        float v = acc[mm];
        for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
        if (lane == 0 && m0 + mm < M) out[(long long)(m0 + mm) * N + n] = has_bias ? v + bias[n] : v;
    }
}

template __global__ void gemv_w4a16<float>(const float*, const unsigned char*, const float*, const int*, int, int,
                                           const float*, int, float*, int, int, int, int);
template __global__ void gemv_w4a16<f16>(const f16*, const unsigned char*, const float*, const int*, int, int,
                                            const float*, int, float*, int, int, int, int);
