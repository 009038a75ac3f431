// Weight-only GEMV/GEMM on AVX-512: one zmm is a whole 16-channel panel. int8 codes are sign-extended and
// converted; int4 fields become floats through vpermps, which reads only the low 4 bits of each lane as
// the index into a 16-entry table of the code values (no masking, no conversion).
#include <immintrin.h>
#include <string.h>

#include "internal.h"

#pragma GCC target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 false positive on _mm512_undefined_* (bug 105593)

#include "chains.h"
#include "wo_tile.h"

namespace qn {
namespace {

// Independent FMA chains per row: FMA latency (4) × 2 ports needs about 8 sums in flight.
template <int R>
constexpr int chains() { return R == 1 ? 8 : (R == 2 ? 4 : (R <= 4 ? 2 : 1)); }

template <int R, int A>
struct Sums {
    __m512 v[A][R];
    void clear() {
        for (int j = 0; j < A; ++j)
            for (int i = 0; i < R; ++i) v[j][i] = _mm512_setzero_ps();
    }
    __m512 total(int i) const {
        __m512 t = v[0][i];
        for (int j = 1; j < A; ++j) t = _mm512_add_ps(t, v[j][i]);
        return t;
    }
    inline void fma(int j, const float* x, int64_t ldx, __m512 w) {
        for (int i = 0; i < R; ++i) v[j][i] = _mm512_fmadd_ps(_mm512_set1_ps(x[i * ldx]), w, v[j][i]);
    }
};

template <int R, int A>
inline void finish_group(const WeightOnlyCall& call, int64_t r, int64_t p, int64_t g, const Sums<R, A>& sums,
                         __m512 (&y)[R]) {
    const QnWeightOnlyLayer& layer = *call.layer;
    const __m512 s = _mm512_loadu_ps(per_group(layer.scales, layer, p, g));
    const int64_t groups = ceil_div(layer.k, layer.group);
    const float* z = layer.zeros ? per_group(layer.zeros, layer, p, g) : nullptr;
    for (int i = 0; i < R; ++i) {
        __m512 t = sums.total(i);
        if (z) t = _mm512_fnmadd_ps(_mm512_set1_ps(call.xsum[(r + i) * groups + g]), _mm512_loadu_ps(z), t);
        y[i] = _mm512_fmadd_ps(s, t, y[i]);
    }
}

template <int R>
inline void store_rows(const WeightOnlyCall& call, int64_t r, int64_t p, const __m512 (&y)[R]) {
    const QnWeightOnlyLayer& layer = *call.layer;
    const int64_t c = p * kPanel, n = layer.n;
    const __mmask16 mask = n - c >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - c)) - 1);
    const __m512 bias = layer.bias ? _mm512_loadu_ps(layer.bias + c) : _mm512_setzero_ps();
    for (int i = 0; i < R; ++i) _mm512_mask_storeu_ps(call.y + (r + i) * n + c, mask, _mm512_add_ps(y[i], bias));
}

struct Avx512 {
    static constexpr int kRows = 8;

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
            sums.fma(j, x + k, call.ldx, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(raw)));
        };
        chained_loop<A>(layer.k, step);
        __m512 y[R];
        for (int i = 0; i < R; ++i) y[i] = _mm512_setzero_ps();
        finish_group<R, A>(call, r, p, 0, sums, y);
        store_rows<R>(call, r, p, y);
    }

    template <int R, int A, int J>
    static inline void nibble(Sums<R, A>& sums, __m512i v, __m512 table, const float* x, int64_t ldx) {
        sums.fma(J % A, x + J, ldx, _mm512_permutexvar_ps(J == 0 ? v : _mm512_srli_epi32(v, 4 * J), table));
    }

    template <int R>
    static void int4(const WeightOnlyCall& call, int64_t r, int64_t p) {
        constexpr int A = chains<R>();
        const QnWeightOnlyLayer& layer = *call.layer;
        const int64_t k8 = ceil_div(layer.k, 8), per_group = ceil_div(layer.group, 8);
        const uint32_t* b = static_cast<const uint32_t*>(layer.bp) + p * k8 * kPanel;
        const float* x = call.x + r * call.ldx;
        const __m512 table = layer.signed_codes
            ? _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7)
            : _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        __m512 y[R];
        for (int i = 0; i < R; ++i) y[i] = _mm512_setzero_ps();
        Sums<R, A> sums;
        for (int64_t g = 0, q = 0; q < k8; ++g) {
            sums.clear();
            for (const int64_t end = imin(k8, q + per_group); q < end; ++q) {
                const __m512i v = _mm512_loadu_si512(b + q * 16);
                const float* xq = x + q * 8;
                nibble<R, A, 0>(sums, v, table, xq, call.ldx);
                nibble<R, A, 1>(sums, v, table, xq, call.ldx);
                nibble<R, A, 2>(sums, v, table, xq, call.ldx);
                nibble<R, A, 3>(sums, v, table, xq, call.ldx);
                nibble<R, A, 4>(sums, v, table, xq, call.ldx);
                nibble<R, A, 5>(sums, v, table, xq, call.ldx);
                nibble<R, A, 6>(sums, v, table, xq, call.ldx);
                nibble<R, A, 7>(sums, v, table, xq, call.ldx);
            }
            finish_group<R, A>(call, r, p, g, sums, y);
        }
        store_rows<R>(call, r, p, y);
    }

    template <int R>
    static void rows_of(const WeightOnlyCall& call, int64_t r, int64_t p) {
        if (call.layer->bits == 8) return int8<R>(call, r, p);
        int4<R>(call, r, p);
    }

    static void run(const WeightOnlyCall& call, int rows, int64_t r, int64_t p) {
        switch (rows) {
            case 8: return rows_of<8>(call, r, p);
            case 7: return rows_of<7>(call, r, p);
            case 6: return rows_of<6>(call, r, p);
            case 5: return rows_of<5>(call, r, p);
            case 4: return rows_of<4>(call, r, p);
            case 3: return rows_of<3>(call, r, p);
            case 2: return rows_of<2>(call, r, p);
            default: return rows_of<1>(call, r, p);
        }
    }
};

}  // namespace

void weight_only_tile_avx512(const WeightOnlyCall& call, int64_t rt, int64_t ct) { weight_only_tile<Avx512>(call, rt, ct); }

}  // namespace qn
