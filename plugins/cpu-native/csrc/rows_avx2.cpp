// Per-row work on the activations, in AVX2 (every CPU the kernels run on has it): the contract's dynamic
// qparams and codes, written straight into the packed layout the int8 micro-kernels read; the weight-only
// pre-pass (finiteness, zero-padded copy, per-group sums).
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "internal.h"

#pragma GCC target("avx2,fma")

namespace qn {
namespace {

constexpr float kEps = 1.1920928955078125e-07f;  // float32 machine epsilon: the smallest scale

// Any NaN or ±Inf among 8 floats: |x| not less than +Inf (unordered compares are true).
inline __m256 nonfinite(__m256 v, __m256 absmask, __m256 inf) {
    return _mm256_cmp_ps(_mm256_and_ps(v, absmask), inf, _CMP_NLT_UQ);
}

// round-half-even(x / s) exactly as the contract's float64 quotient gives it. The float32 quotient is
// correctly rounded and cannot cross a half-integer, so it rounds the same way unless it lands exactly on
// one; there the sign of the exact q*s - x (one fused rounding) says on which side the true quotient is.
inline __m256 round_quotient(__m256 x, __m256 s) {
    const __m256 q = _mm256_div_ps(x, s);
    __m256 r = _mm256_round_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 half = _mm256_set1_ps(0.5f);
    const __m256 d = _mm256_sub_ps(q, r);
    const __m256 tie = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), d), half, _CMP_EQ_OQ);
    if (!_mm256_movemask_ps(tie)) return r;
    const __m256 e = _mm256_fmsub_ps(q, s, x);
    const __m256 zero = _mm256_setzero_ps();
    r = _mm256_blendv_ps(r, _mm256_sub_ps(q, half), _mm256_and_ps(tie, _mm256_cmp_ps(e, zero, _CMP_GT_OQ)));
    return _mm256_blendv_ps(r, _mm256_add_ps(q, half), _mm256_and_ps(tie, _mm256_cmp_ps(e, zero, _CMP_LT_OQ)));
}

// The same for 8 quotients at the cost of a multiplication: x · (1/s) is within 2^-23 relative of x / s,
// so it rounds the same way unless it lies within 2^-14 of a half (only for |x / s| < 256, the range where
// rounding can change a clamped code); such rare vectors take the division. `inv` must be finite.
inline __m256 round_quotient_fast(__m256 x, __m256 s, __m256 inv) {
    const __m256 q = _mm256_mul_ps(x, inv);
    const __m256 r = _mm256_round_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 off = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), _mm256_sub_ps(q, r));
    const __m256 near = _mm256_cmp_ps(off, _mm256_set1_ps(0.5f - 0x1p-14f), _CMP_GE_OQ);
    return _mm256_movemask_ps(near) ? round_quotient(x, s) : r;
}

inline int32_t code_of(float x, float s, int32_t zp, int32_t qmin, int32_t qmax) {
    double r = nearbyint(double(x) / double(s)) + zp;
    return int32_t(r < qmin ? qmin : (r > qmax ? qmax : r));
}

// (lo, hi) of a row with 0 included, or max |x| in hi for symmetric; false on NaN/Inf.
bool row_range(const float* x, int64_t k, bool symmetric, float& lo, float& hi) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 inf = _mm256_set1_ps(INFINITY);
    __m256 vlo = _mm256_setzero_ps(), vhi = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= k; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        bad = _mm256_or_ps(bad, nonfinite(v, absmask, inf));
        if (symmetric) {
            vhi = _mm256_max_ps(vhi, _mm256_and_ps(v, absmask));
        } else {
            vlo = _mm256_min_ps(vlo, v);
            vhi = _mm256_max_ps(vhi, v);
        }
    }
    float l[8], h[8];
    _mm256_storeu_ps(l, vlo);
    _mm256_storeu_ps(h, vhi);
    lo = 0.0f;
    hi = 0.0f;
    for (int j = 0; j < 8; ++j) {
        lo = l[j] < lo ? l[j] : lo;
        hi = h[j] > hi ? h[j] : hi;
    }
    bool finite = !_mm256_movemask_ps(bad);
    for (; i < k; ++i) {
        const float v = x[i];
        finite = finite && isfinite(v);
        if (symmetric) {
            hi = fabsf(v) > hi ? fabsf(v) : hi;
        } else {
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
    }
    return finite;
}

bool all_finite(const float* x, int64_t k) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 inf = _mm256_set1_ps(INFINITY);
    __m256 bad = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= k; i += 8) bad = _mm256_or_ps(bad, nonfinite(_mm256_loadu_ps(x + i), absmask, inf));
    bool finite = !_mm256_movemask_ps(bad);
    for (; i < k; ++i) finite = finite && isfinite(x[i]);
    return finite;
}

// The contract's dynamic qparams of one row (docs/numerics.md), float64 where it says so.
void row_qparams(const QnInt8Layer& layer, float lo, float hi, float& scale, int32_t& zp) {
    const int32_t qmin = layer.qmin, qmax = layer.qmax;
    zp = 0;
    if (layer.act_mode == QN_ACT_TOKEN_SYM) {
        scale = hi == 0.0f ? 1.0f : fmaxf(float(double(hi) / qmax), kEps);
        return;
    }
    if (hi == lo) {
        scale = 1.0f;
        return;
    }
    scale = fmaxf(float((double(hi) - double(lo)) / (qmax - qmin)), kEps);
    double z = qmin - nearbyint(double(lo) / double(scale));
    zp = int32_t(z < qmin ? qmin : (z > qmax ? qmax : z));
}

// Codes of 8 floats as int32: rounded quotient, plus zero-point and clamped unless the row is symmetric
// per token (its scale keeps every |code| ≤ 127 already).
template <bool Offset>
inline __m256i codes8(const float* x, const __m256 vs, const __m256 vinv, bool fast, __m256 vzp, __m256 vlo,
                      __m256 vhi) {
    const __m256 v = _mm256_loadu_ps(x);
    __m256 r = fast ? round_quotient_fast(v, vs, vinv) : round_quotient(v, vs);
    if (Offset) r = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(r, vzp), vlo), vhi);
    return _mm256_cvtps_epi32(r);
}

template <bool Offset>
void pack_row(const float* x, int64_t k, float scale, int32_t zp, const QnInt8Layer& layer, const PackedRows& a,
              uint8_t* out) {
    const float inv = 1.0f / scale;
    const bool fast = isnormal(inv);
    const __m256 vs = _mm256_set1_ps(scale), vinv = _mm256_set1_ps(inv), vzp = _mm256_set1_ps(float(zp));
    const __m256 vlo = _mm256_set1_ps(float(layer.qmin)), vhi = _mm256_set1_ps(float(layer.qmax));
    const __m256i flip = _mm256_set1_epi8(a.shift ? char(0x80) : 0);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    int64_t i = 0;
    for (; i + 16 <= k; i += 16) {
        const __m256i c0 = codes8<Offset>(x + i, vs, vinv, fast, vzp, vlo, vhi);
        const __m256i c1 = codes8<Offset>(x + i + 8, vs, vinv, fast, vzp, vlo, vhi);
        const __m256i w = _mm256_packs_epi32(c0, c1);  // per 128-bit lane: c0[0:4] c1[0:4] | c0[4:8] c1[4:8]
        const __m256i b = _mm256_permutevar8x32_epi32(_mm256_xor_si256(_mm256_packs_epi16(w, w), flip), order);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm256_castsi256_si128(b));
    }
    const uint8_t bias = a.shift ? 128 : 0;
    for (; i < a.lda(); ++i) out[i] = uint8_t((i < k ? code_of(x[i], scale, zp, layer.qmin, layer.qmax) : 0) + bias);
}

}  // namespace

bool quantize_rows_avx2(const QnInt8Layer& layer, const float* x, int64_t r0, int64_t r1, const PackedRows& a) {
    const int64_t k = layer.k;
    bool finite = true;
    for (int64_t r = r0; r < r1; ++r) {
        const float* row = x + r * k;
        float scale = layer.act_scale, lo = 0.0f, hi = 0.0f;
        int32_t zp = layer.act_zero_point;
        if (layer.act_mode == QN_ACT_STATIC) {
            finite = all_finite(row, k) && finite;
        } else {
            finite = row_range(row, k, layer.act_mode == QN_ACT_TOKEN_SYM, lo, hi) && finite;
            row_qparams(layer, lo, hi, scale, zp);
        }
        if (!finite) return false;
        a.scale[r] = scale;
        a.offset[r] = zp + (a.shift ? 128 : 0);
        if (layer.act_mode == QN_ACT_TOKEN_SYM) {
            pack_row<false>(row, k, scale, zp, layer, a, a.ap + r * a.lda());
        } else {
            pack_row<true>(row, k, scale, zp, layer, a, a.ap + r * a.lda());
        }
    }
    return true;
}

bool prepare_rows_avx2(const QnWeightOnlyLayer& layer, const float* x, int64_t r0, int64_t r1, float* xpad,
                       int64_t ldx, float* xsum, bool prescale) {
    const __m256 scales = _mm256_setr_ps(1.0f, 0x1p-4f, 0x1p-8f, 0x1p-12f, 1.0f, 0x1p-4f, 0x1p-8f, 0x1p-12f);
    const int64_t k = layer.k, g = layer.group;
    for (int64_t r = r0; r < r1; ++r) {
        const float* row = x + r * k;
        if (!all_finite(row, k)) return false;
        float* out = xpad + r * ldx;
        memcpy(out, row, size_t(k) * sizeof(float));
        memset(out + k, 0, size_t(ldx - k) * sizeof(float));
        for (int64_t i = 0; prescale && i < ldx; i += 8) _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(out + i), scales));
        if (!xsum) continue;
        for (int64_t j = 0; j * g < k; ++j) {
            __m256d acc = _mm256_setzero_pd();
            int64_t i = j * g;
            const int64_t end = i + g;
            for (; i + 4 <= end; i += 4) acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm_loadu_ps(row + i)));
            double s[4];
            _mm256_storeu_pd(s, acc);
            double total = (s[0] + s[1]) + (s[2] + s[3]);
            for (; i < end; ++i) total += row[i];
            xsum[r * ceil_div(k, g) + j] = float(total);
        }
    }
    return true;
}

}  // namespace qn
