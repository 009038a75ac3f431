// int8 GEMM with AVX-VNNI (vpdpbusd on ymm): u8 × s8 products summed four at a time straight into int32,
// exact. Activations arrive as codes + 128 (u8); the epilogue subtracts 128 · column sum.
#include <immintrin.h>
#include <string.h>

#include "internal.h"

#pragma GCC target("avx2,fma,avxvnni")

#include "int8_epilogue.h"
#include "chains.h"
#include "int8_tile.h"

namespace qn {
namespace {

struct AvxVnni {
    static constexpr int kRows = kRowsAvxVnni;
    static constexpr int kPanels = 1;
    static constexpr int kLanes = 8;
    static __m256i load(const int32_t* p) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(p)); }

    // Few rows leave few independent vpdpbusd chains (latency 5): small blocks split k over A chains.
    template <int R>
    static void block(const uint8_t* a, int64_t lda, const int8_t* b, int64_t kq, int32_t* acc, int64_t ld, bool accumulate) {
        constexpr int A = R == 1 ? 4 : (R == 2 ? 2 : 1);
        __m256i c[A][R][2];
        for (int j = 0; j < A; ++j)
            for (int r = 0; r < R; ++r) c[j][r][0] = c[j][r][1] = _mm256_setzero_si256();
        for (int r = 0; r < R && accumulate; ++r) {
            c[0][r][0] = load(acc + r * ld);
            c[0][r][1] = load(acc + r * ld + 8);
        }
        auto step = [&](int j, int64_t q) {
            const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + q * 64));
            const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + q * 64 + 32));
            for (int r = 0; r < R; ++r) {
                const __m256i av = _mm256_set1_epi32(load4(a + r * lda + q * 4));
                c[j][r][0] = _mm256_dpbusd_avx_epi32(c[j][r][0], av, b0);
                c[j][r][1] = _mm256_dpbusd_avx_epi32(c[j][r][1], av, b1);
            }
        };
        chained_loop<A>(kq, step);
        for (int j = 1; j < A; ++j)
            for (int r = 0; r < R; ++r) {
                c[0][r][0] = _mm256_add_epi32(c[0][r][0], c[j][r][0]);
                c[0][r][1] = _mm256_add_epi32(c[0][r][1], c[j][r][1]);
            }
        for (int r = 0; r < R; ++r) {
            _mm256_store_si256(reinterpret_cast<__m256i*>(acc + r * ld), c[0][r][0]);
            _mm256_store_si256(reinterpret_cast<__m256i*>(acc + r * ld + 8), c[0][r][1]);
        }
    }

    static void run(int rows, int, const uint8_t* a, int64_t lda, const int8_t* b, int64_t, int64_t kq, int32_t* acc,
                    int64_t ld, bool accumulate) {
        switch (rows) {
            case 6: return block<6>(a, lda, b, kq, acc, ld, accumulate);
            case 5: return block<5>(a, lda, b, kq, acc, ld, accumulate);
            case 4: return block<4>(a, lda, b, kq, acc, ld, accumulate);
            case 3: return block<3>(a, lda, b, kq, acc, ld, accumulate);
            case 2: return block<2>(a, lda, b, kq, acc, ld, accumulate);
            default: return block<1>(a, lda, b, kq, acc, ld, accumulate);
        }
    }
};

}  // namespace

void int8_tile_avx_vnni(const Int8Call& call, int64_t rt, int64_t ct) { int8_tile<AvxVnni>(call, rt, ct); }

}  // namespace qn
