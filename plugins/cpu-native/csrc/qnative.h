// The C interface of qcore-cpu-native (called through ctypes) and the structures shared by its ISA files.
// No torch headers: tensors arrive as data pointers with their sizes.
#pragma once
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum QnFeature {
    QN_AVX2 = 1,         // avx2 + fma, ymm state enabled by the OS
    QN_AVX_VNNI = 2,     // vpdpbusd on ymm (Alder Lake, Sapphire Rapids, Zen 5)
    QN_AVX512 = 4,       // avx512 f/bw/vl/dq, zmm state enabled by the OS
    QN_AVX512_VNNI = 8,  // vpdpbusd on zmm (Cascade Lake, Ice Lake, Zen 4)
    QN_AMX_INT8 = 16,    // detected and reported; no kernel uses it yet
};

// Integer GEMM kernels (w8a8): which instruction sums the int8 products.
enum QnInt8Isa { QN_I8_AVX2 = 0, QN_I8_AVX_VNNI = 1, QN_I8_AVX512_VNNI = 2 };
// Weight-only kernels: vector width of the float FMA.
enum QnFloatIsa { QN_F_AVX2 = 0, QN_F_AVX512 = 1 };

enum QnActMode { QN_ACT_TOKEN_SYM = 0, QN_ACT_TOKEN_ASYM = 1, QN_ACT_STATIC = 2 };

enum QnStatus { QN_OK = 0, QN_NONFINITE = 1, QN_NO_ISA = -1, QN_BAD_ARGS = -2 };

// One int8 layer: weights packed by qcore_cpu_native.packing (panels of 16 output channels,
// k in quads: bp[panel][k / 4][channel % 16][k % 4]); colsum[n] = sum_k w[n, k].
typedef struct {
    int32_t isa;          // QnInt8Isa
    int32_t act_mode;     // QnActMode
    int64_t n, k;
    const int8_t* bp;
    const int32_t* colsum;
    const float* wscale;  // one per output channel (padded to whole panels)
    const float* bias;    // or NULL
    float act_scale;      // static mode only
    int32_t act_zero_point;
    int32_t qmin, qmax;   // activation code range
} QnInt8Layer;

// One weight-only layer. bits 8: bp[panel][k][channel % 16] int8 codes, one group spanning K.
// bits 4: bp[panel][k / 8][channel % 16] uint32, nibble j holding k + j as an unsigned field: code + 8 when
// signed_codes (int4), the code itself otherwise (uint4). scales and zeros (zero-points as floats):
// [panel][group][channel % 16].
typedef struct {
    int32_t isa;          // QnFloatIsa
    int32_t bits;         // 8 or 4
    int32_t signed_codes; // 4 bits: int4 (1) or uint4 (0); 8 bits: always int8
    int32_t reserved;
    int64_t n, k, group;  // group: k for per-channel weights; a multiple of 8 for 4 bits
    const void* bp;
    const float* scales;
    const float* zeros;   // NULL when every zero-point is 0 (symmetric int8)
    const float* bias;    // or NULL
} QnWeightOnlyLayer;

#define QN_API __attribute__((visibility("default")))

QN_API uint32_t qn_cpu_features(void);
QN_API int32_t qn_linear_int8(const QnInt8Layer* layer, const float* x, int64_t m, float* y, int32_t threads);
QN_API int32_t qn_linear_weight_only(const QnWeightOnlyLayer* layer, const float* x, int64_t m, float* y, int32_t threads);
// Activation codes as the int8 kernels compute them (row-major int8 [m, k], scales and zero-points per row
// or one for the tensor), for tests: what the GEMM multiplies must be the contract's codes.
QN_API int32_t qn_quantize_rows(const QnInt8Layer* layer, const float* x, int64_t m, int8_t* codes, float* scales,
                         int32_t* zero_points);

#ifdef __cplusplus
}
#endif
