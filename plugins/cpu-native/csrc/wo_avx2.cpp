// Weight-only GEMV/GEMM on AVX2 + FMA: packed int8 or int4 weights stream from memory, become float32 in
// registers (int8: sign extension and vcvtdq2ps; int4: the exponent trick below) and meet the float32
// activations in FMAs; a group's sum is scaled once (minus zero-point × the group's activation sum) and
// added to the output.
#include <immintrin.h>
#include <string.h>

#include "internal.h"

#pragma GCC target("avx2,fma")

#include "chains.h"
#include "wo_tile.h"

namespace qn {
namespace {

// Field J of every 32-bit lane (fields 4..7 come shifted down by 16) as the float (u − offset) · 2^(4·(J % 4)):
// masked in place under the exponent bits of 2^23 the field reads as 2^23 + u · 2^(4·(J % 4)), and subtracting
// 2^23 + offset · 2^(4·(J % 4)) from it is exact. The activations come prescaled by 2^(−4·(J % 4)) to match.
// Three logic/add operations where shifting and converting take four, and half of them can use port 5.
template <bool S, int J>
inline __m256 field(__m256i v) {
    constexpr int shift = 4 * (J % 4);
    const __m256i bits = _mm256_or_si256(_mm256_and_si256(v, _mm256_set1_epi32(0xF << shift)),
                                         _mm256_set1_epi32(0x4B000000));
    return _mm256_sub_ps(_mm256_castsi256_ps(bits), _mm256_set1_ps(8388608.0f + (S ? 8.0f : 0.0f) * float(1 << shift)));
}

// Independent FMA chains per row: FMA latency (4) × 2 ports needs about 8 sums in flight.
template <int R>
constexpr int chains() { return R == 1 ? 4 : (R == 2 ? 2 : 1); }

template <int R, int A>
struct Sums {
    __m256 v[A][R][2];
    void clear() {
        for (int j = 0; j < A; ++j)
            for (int i = 0; i < R; ++i) v[j][i][0] = v[j][i][1] = _mm256_setzero_ps();
    }
    __m256 total(int i, int h) const {
        __m256 t = v[0][i][h];
        for (int j = 1; j < A; ++j) t = _mm256_add_ps(t, v[j][i][h]);
        return t;
    }
    inline void fma(int j, const float* x, int64_t ldx, __m256 w0, __m256 w1) {
        for (int i = 0; i < R; ++i) {
            const __m256 xv = _mm256_broadcast_ss(x + i * ldx);
            v[j][i][0] = _mm256_fmadd_ps(xv, w0, v[j][i][0]);
            v[j][i][1] = _mm256_fmadd_ps(xv, w1, v[j][i][1]);
        }
    }
};

// y[i] += scale · (sum − zero · xsum) for one group g of panel p.
template <int R, int A>
inline void finish_group(const WeightOnlyCall& call, int64_t r, int64_t p, int64_t g, const Sums<R, A>& sums,
                         float (*y)[kPanel]) {
    const QnWeightOnlyLayer& layer = *call.layer;
    const float* s = per_group(layer.scales, layer, p, g);
    const float* z = layer.zeros ? per_group(layer.zeros, layer, p, g) : nullptr;
    const int64_t groups = ceil_div(layer.k, layer.group);
    for (int h = 0; h < 2; ++h)
        for (int i = 0; i < R; ++i) {
            __m256 t = sums.total(i, h);
            if (z) t = _mm256_fnmadd_ps(_mm256_set1_ps(call.xsum[(r + i) * groups + g]), _mm256_loadu_ps(z + 8 * h), t);
            _mm256_storeu_ps(y[i] + 8 * h, _mm256_fmadd_ps(_mm256_loadu_ps(s + 8 * h), t, _mm256_loadu_ps(y[i] + 8 * h)));
        }
}

template <int R>
inline void store_rows(const WeightOnlyCall& call, int64_t r, int64_t p, const float (*y)[kPanel]) {
    const QnWeightOnlyLayer& layer = *call.layer;
    const int64_t c = p * kPanel, n = layer.n;
    for (int h = 0; h < 2; ++h) {
        const int64_t col = c + 8 * h;
        if (col >= n) break;
        const __m256 bias = layer.bias ? _mm256_loadu_ps(layer.bias + col) : _mm256_setzero_ps();
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(int32_t(n - col < 8 ? n - col : 8)),
                                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        for (int i = 0; i < R; ++i)
            _mm256_maskstore_ps(call.y + (r + i) * n + col, mask, _mm256_add_ps(_mm256_loadu_ps(y[i] + 8 * h), bias));
    }
}

struct Avx2 {
    static constexpr int kRows = 4;

    template <int R>
    static void int8(const WeightOnlyCall& call, int64_t r, int64_t p) {
        constexpr int A = chains<R>();
        const QnWeightOnlyLayer& layer = *call.layer;
        const int8_t* b = static_cast<const int8_t*>(layer.bp) + p * layer.k * kPanel;
        const float* x = call.x + r * call.ldx;
        Sums<R, A> sums;
        sums.clear();
        auto step = [&](int j, int64_t k) {
            const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + k * 16));
            sums.fma(j, x + k, call.ldx, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(raw)),
                     _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(raw, raw))));
        };
        chained_loop<A>(layer.k, step);
        float y[R][kPanel] = {};
        finish_group<R, A>(call, r, p, 0, sums, y);
        store_rows<R>(call, r, p, y);
    }

    template <int R, int A, bool S, int J>
    static inline void nibble(Sums<R, A>& sums, __m256i v0, __m256i v1, const float* x, int64_t ldx) {
        sums.fma(J % A, x + J, ldx, field<S, J>(v0), field<S, J>(v1));
    }

    template <int R, bool S>
    static void int4(const WeightOnlyCall& call, int64_t r, int64_t p) {
        constexpr int A = chains<R>();
        const QnWeightOnlyLayer& layer = *call.layer;
        const int64_t k8 = ceil_div(layer.k, 8), per_group = ceil_div(layer.group, 8);
        const uint32_t* b = static_cast<const uint32_t*>(layer.bp) + p * k8 * kPanel;
        const float* x = call.x + r * call.ldx;
        float y[R][kPanel] = {};
        Sums<R, A> sums;
        for (int64_t g = 0, q = 0; q < k8; ++g) {
            sums.clear();
            for (const int64_t end = imin(k8, q + per_group); q < end; ++q) {
                const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + q * 16));
                const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + q * 16 + 8));
                const __m256i h0 = _mm256_srli_epi32(v0, 16), h1 = _mm256_srli_epi32(v1, 16);
                const float* xq = x + q * 8;
                nibble<R, A, S, 0>(sums, v0, v1, xq, call.ldx);
                nibble<R, A, S, 1>(sums, v0, v1, xq, call.ldx);
                nibble<R, A, S, 2>(sums, v0, v1, xq, call.ldx);
                nibble<R, A, S, 3>(sums, v0, v1, xq, call.ldx);
                nibble<R, A, S, 4>(sums, h0, h1, xq, call.ldx);
                nibble<R, A, S, 5>(sums, h0, h1, xq, call.ldx);
                nibble<R, A, S, 6>(sums, h0, h1, xq, call.ldx);
                nibble<R, A, S, 7>(sums, h0, h1, xq, call.ldx);
            }
            finish_group<R, A>(call, r, p, g, sums, y);
        }
        store_rows<R>(call, r, p, y);
    }

    template <int R>
    static void rows_of(const WeightOnlyCall& call, int64_t r, int64_t p) {
        const QnWeightOnlyLayer& layer = *call.layer;
        if (layer.bits == 8) return int8<R>(call, r, p);
        if (layer.signed_codes) return int4<R, true>(call, r, p);
        int4<R, false>(call, r, p);
    }

    static void run(const WeightOnlyCall& call, int rows, int64_t r, int64_t p) {
        switch (rows) {
            case 4: return rows_of<4>(call, r, p);
            case 3: return rows_of<3>(call, r, p);
            case 2: return rows_of<2>(call, r, p);
            default: return rows_of<1>(call, r, p);
        }
    }
};

}  // namespace

void weight_only_tile_avx2(const WeightOnlyCall& call, int64_t rt, int64_t ct) { weight_only_tile<Avx2>(call, rt, ct); }

}  // namespace qn
