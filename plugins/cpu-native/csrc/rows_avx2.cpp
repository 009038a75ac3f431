// Per-row work on the activations, in AVX2 (every CPU the int8 kernels run on has it): the contract's
// dynamic qparams and codes, written straight into the packed layout; the weight-only pre-pass; and the
// epilogue turning integer sums into float outputs.
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

void pack_row(const float* x, int64_t k, float scale, int32_t zp, const QnInt8Layer& layer, const PackedRows& a,
              uint8_t* block, int row) {
    const __m256 vs = _mm256_set1_ps(scale), vzp = _mm256_set1_ps(float(zp));
    const __m256 vlo = _mm256_set1_ps(float(layer.qmin)), vhi = _mm256_set1_ps(float(layer.qmax));
    const __m128i flip = _mm_set1_epi8(a.shift ? char(0x80) : 0);
    const int64_t quad = int64_t(a.mr) * 4;
    uint8_t* out = block + row * 4;
    int64_t i = 0;
    for (; i + 8 <= k; i += 8) {
        __m256 r = round_quotient(_mm256_loadu_ps(x + i), vs);
        r = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(r, vzp), vlo), vhi);
        const __m256i c = _mm256_cvtps_epi32(r);
        const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
        const __m128i b = _mm_xor_si128(_mm_packs_epi16(w, w), flip);
        const int32_t lo4 = _mm_cvtsi128_si32(b), hi4 = _mm_extract_epi32(b, 1);
        memcpy(out + (i / 4) * quad, &lo4, 4);
        memcpy(out + (i / 4 + 1) * quad, &hi4, 4);
    }
    const uint8_t bias = a.shift ? 128 : 0;
    for (; i < a.kq * 4; ++i) {
        const int32_t c = i < k ? code_of(x[i], scale, zp, layer.qmin, layer.qmax) : 0;
        out[(i / 4) * quad + i % 4] = uint8_t(c + bias);
    }
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
        uint8_t* block = a.ap + (r / a.mr) * a.kq * a.mr * 4;
        pack_row(row, k, scale, zp, layer, a, block, int(r % a.mr));
    }
    return true;
}

bool prepare_rows_avx2(const QnWeightOnlyLayer& layer, const float* x, int64_t r0, int64_t r1, float* xpad,
                       int64_t ldx, float* xsum) {
    const int64_t k = layer.k, g = layer.group;
    for (int64_t r = r0; r < r1; ++r) {
        const float* row = x + r * k;
        if (!all_finite(row, k)) return false;
        float* out = xpad + r * ldx;
        memcpy(out, row, size_t(k) * sizeof(float));
        memset(out + k, 0, size_t(ldx - k) * sizeof(float));
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

void int8_epilogue_avx2(const Int8Call& call, const int32_t* acc, int64_t ld_acc, int64_t r0, int rows, int64_t c0,
                        int64_t cols) {
    const QnInt8Layer& layer = *call.layer;
    const int64_t n = layer.n;
    for (int i = 0; i < rows; ++i) {
        const int64_t row = r0 + i;
        const __m256 s = _mm256_set1_ps(call.a.scale[row]);
        const __m256i off = _mm256_set1_epi32(call.a.offset[row]);
        float* y = call.y + row * n;
        for (int64_t j = 0; j < cols; j += 8) {
            const int64_t c = c0 + j;
            if (c >= n) break;
            __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + i * ld_acc + j));
            v = _mm256_sub_epi32(v, _mm256_mullo_epi32(off, _mm256_loadu_si256(
                                                               reinterpret_cast<const __m256i*>(layer.colsum + c))));
            __m256 f = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(v), s), _mm256_loadu_ps(layer.wscale + c));
            if (layer.bias) f = _mm256_add_ps(f, _mm256_loadu_ps(layer.bias + c));
            if (c + 8 <= n) {
                _mm256_storeu_ps(y + c, f);
            } else {
                const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(int32_t(n - c)), lane);
                _mm256_maskstore_ps(y + c, mask, f);
            }
        }
    }
}

}  // namespace qn
