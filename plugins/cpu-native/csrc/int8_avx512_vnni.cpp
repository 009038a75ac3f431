// int8 GEMM with AVX512-VNNI (vpdpbusd on zmm): one zmm holds a whole 16-channel panel × 4 k, so a
// micro-kernel takes two panels (32 channels) × 8 rows into 16 accumulators. u8 × s8 as in the AVX-VNNI file.
#include <immintrin.h>
#include <string.h>

#include "internal.h"

#pragma GCC target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 false positive on _mm512_undefined_* (bug 105593)

#define QN_EPILOGUE_ZMM
#include "int8_epilogue.h"
#include "chains.h"
#include "int8_tile.h"

namespace qn {
namespace {

struct Avx512Vnni {
    static constexpr int kRows = kRowsAvx512Vnni;
    static constexpr int kPanels = 2;
    static constexpr int kLanes = 16;
    static __m512i load(const int32_t* p) { return _mm512_load_si512(p); }

    // Few rows leave few independent vpdpbusd chains (latency 5): small blocks split k over A chains.
    template <int R, int P>
    static void block(const uint8_t* a, int64_t lda, const int8_t* b, int64_t panel_bytes, int64_t kq, int32_t* acc, int64_t ld,
                      bool accumulate) {
        constexpr int A = R == 1 ? 3 : (R == 2 ? 2 : 1);
        __m512i c[A][R][P];
        for (int j = 0; j < A; ++j)
            for (int r = 0; r < R; ++r)
                for (int p = 0; p < P; ++p) c[j][r][p] = j == 0 && accumulate ? load(acc + r * ld + 16 * p) : _mm512_setzero_si512();
        auto step = [&](int j, int64_t q) {
            __m512i bv[P];
            for (int p = 0; p < P; ++p) bv[p] = _mm512_loadu_si512(b + p * panel_bytes + q * 64);
            for (int r = 0; r < R; ++r) {
                const __m512i av = _mm512_set1_epi32(load4(a + r * lda + q * 4));
                for (int p = 0; p < P; ++p) c[j][r][p] = _mm512_dpbusd_epi32(c[j][r][p], av, bv[p]);
            }
        };
        chained_loop<A>(kq, step);
        for (int j = 1; j < A; ++j)
            for (int r = 0; r < R; ++r)
                for (int p = 0; p < P; ++p) c[0][r][p] = _mm512_add_epi32(c[0][r][p], c[j][r][p]);
        for (int r = 0; r < R; ++r)
            for (int p = 0; p < P; ++p) _mm512_store_si512(acc + r * ld + p * 16, c[0][r][p]);
    }

    template <int P>
    static void rows_of(int rows, const uint8_t* a, int64_t lda, const int8_t* b, int64_t panel_bytes, int64_t kq, int32_t* acc,
                        int64_t ld, bool accumulate) {
        switch (rows) {
            case 8: return block<8, P>(a, lda, b, panel_bytes, kq, acc, ld, accumulate);
            case 7: return block<7, P>(a, lda, b, panel_bytes, kq, acc, ld, accumulate);
            case 6: return block<6, P>(a, lda, b, panel_bytes, kq, acc, ld, accumulate);
            case 5: return block<5, P>(a, lda, b, panel_bytes, kq, acc, ld, accumulate);
            case 4: return block<4, P>(a, lda, b, panel_bytes, kq, acc, ld, accumulate);
            case 3: return block<3, P>(a, lda, b, panel_bytes, kq, acc, ld, accumulate);
            case 2: return block<2, P>(a, lda, b, panel_bytes, kq, acc, ld, accumulate);
            default: return block<1, P>(a, lda, b, panel_bytes, kq, acc, ld, accumulate);
        }
    }

    static void run(int rows, int panels, const uint8_t* a, int64_t lda, const int8_t* b, int64_t panel_bytes, int64_t kq,
                    int32_t* acc, int64_t ld, bool accumulate) {
        if (panels == 2) return rows_of<2>(rows, a, lda, b, panel_bytes, kq, acc, ld, accumulate);
        rows_of<1>(rows, a, lda, b, panel_bytes, kq, acc, ld, accumulate);
    }
};

}  // namespace

void int8_tile_avx512_vnni(const Int8Call& call, int64_t rt, int64_t ct) { int8_tile<Avx512Vnni>(call, rt, ct); }

}  // namespace qn
