// Integer sums to float outputs, in the micro-kernel's registers: y = (acc − offset · colsum) · row scale ·
// channel scale + bias, stored with a mask where the panel runs past N. Included after each int8 ISA file's
// target pragma; the zmm form only where AVX-512 is enabled.
#pragma once

namespace qn {
namespace {

inline void store_sums(const Int8Call& call, int64_t row, int64_t col, __m256i acc) {
    const QnInt8Layer& layer = *call.layer;
    if (col >= layer.n) return;
    acc = _mm256_sub_epi32(acc, _mm256_mullo_epi32(_mm256_set1_epi32(call.a.offset[row]),
                                                   _mm256_loadu_si256(reinterpret_cast<const __m256i*>(layer.colsum + col))));
    __m256 f = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_set1_ps(call.a.scale[row])),
                             _mm256_loadu_ps(layer.wscale + col));
    if (layer.bias) f = _mm256_add_ps(f, _mm256_loadu_ps(layer.bias + col));
    float* y = call.y + row * layer.n + col;
    if (col + 8 <= layer.n) {
        _mm256_storeu_ps(y, f);
    } else {
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(int32_t(layer.n - col)),
                                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        _mm256_maskstore_ps(y, mask, f);
    }
}

#ifdef QN_EPILOGUE_ZMM  // defined by the files compiled for AVX-512
inline void store_sums(const Int8Call& call, int64_t row, int64_t col, __m512i acc) {
    const QnInt8Layer& layer = *call.layer;
    if (col >= layer.n) return;
    acc = _mm512_sub_epi32(acc, _mm512_mullo_epi32(_mm512_set1_epi32(call.a.offset[row]),
                                                   _mm512_loadu_si512(layer.colsum + col)));
    __m512 f = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(call.a.scale[row])),
                             _mm512_loadu_ps(layer.wscale + col));
    if (layer.bias) f = _mm512_add_ps(f, _mm512_loadu_ps(layer.bias + col));
    const int64_t left = layer.n - col;
    _mm512_mask_storeu_ps(call.y + row * layer.n + col, left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1), f);
}
#endif

}  // namespace
}  // namespace qn
