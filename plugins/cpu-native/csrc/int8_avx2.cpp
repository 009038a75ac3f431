// int8 × int8 → int32 on AVX2 without VNNI, exact: vpmaddubsw multiplies u8 by s8 and adds pairs into int16,
// which saturates for arbitrary operands. Feeding it |a| (≤ 128) and sign(a)·b (|b| ≤ 127: symmetric weights)
// keeps every pair sum within ±32512 (llama.cpp's AVX2 q8_0 dot product does the same); vpmaddwd by ones
// then widens to int32.
#include <immintrin.h>
#include <string.h>

#include "internal.h"

#pragma GCC target("avx2,fma")

#include "int8_epilogue.h"
#include "int8_tile.h"

namespace qn {
namespace {

struct Avx2 {
    static constexpr int kRows = kRowsAvx2;
    static constexpr int kPanels = 1;
    static constexpr int kLanes = 8;
    static __m256i load(const int32_t* p) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(p)); }

    template <int R>
    static void block(const uint8_t* a, int64_t lda, const int8_t* b, int64_t kq, int32_t* acc, int64_t ld, bool accumulate) {
        __m256i c[R][2];
        for (int r = 0; r < R; ++r) {
            c[r][0] = accumulate ? load(acc + r * ld) : _mm256_setzero_si256();
            c[r][1] = accumulate ? load(acc + r * ld + 8) : _mm256_setzero_si256();
        }
        const __m256i ones = _mm256_set1_epi16(1);
#pragma GCC unroll 2
        for (int64_t q = 0; q < kq; ++q) {
            const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + q * 64));
            const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + q * 64 + 32));
            for (int r = 0; r < R; ++r) {
                const __m256i av = _mm256_set1_epi32(load4(a + r * lda + q * 4));
                const __m256i aa = _mm256_abs_epi8(av);
                c[r][0] = _mm256_add_epi32(c[r][0], _mm256_madd_epi16(_mm256_maddubs_epi16(aa, _mm256_sign_epi8(b0, av)), ones));
                c[r][1] = _mm256_add_epi32(c[r][1], _mm256_madd_epi16(_mm256_maddubs_epi16(aa, _mm256_sign_epi8(b1, av)), ones));
            }
        }
        for (int r = 0; r < R; ++r) {
            _mm256_store_si256(reinterpret_cast<__m256i*>(acc + r * ld), c[r][0]);
            _mm256_store_si256(reinterpret_cast<__m256i*>(acc + r * ld + 8), c[r][1]);
        }
    }

    static void run(int rows, int, const uint8_t* a, int64_t lda, const int8_t* b, int64_t, int64_t kq, int32_t* acc,
                    int64_t ld, bool accumulate) {
        switch (rows) {
            case 4: return block<4>(a, lda, b, kq, acc, ld, accumulate);
            case 3: return block<3>(a, lda, b, kq, acc, ld, accumulate);
            case 2: return block<2>(a, lda, b, kq, acc, ld, accumulate);
            default: return block<1>(a, lda, b, kq, acc, ld, accumulate);
        }
    }
};

}  // namespace

void int8_tile_avx2(const Int8Call& call, int64_t rt, int64_t ct) { int8_tile<Avx2>(call, rt, ct); }

}  // namespace qn
