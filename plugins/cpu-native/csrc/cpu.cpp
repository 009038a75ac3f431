// Run-time ISA detection: cpuid for the instructions, xgetbv for the register state the OS saves.
#include <cpuid.h>
#include <stdint.h>

#include "qnative.h"

namespace {

uint64_t xcr0() {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t(hi) << 32) | lo;
}

bool bit(uint32_t reg, int b) { return (reg >> b) & 1u; }

}  // namespace

extern "C" uint32_t qn_cpu_features(void) {
    uint32_t a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const bool osxsave = bit(c, 27), fma = bit(c, 12);
    if (!osxsave) return 0;
    const uint64_t x = xcr0();
    const bool ymm = (x & 0x6) == 0x6, zmm = (x & 0xe6) == 0xe6, tiles = (x & 0x60000) == 0x60000;
    if (__get_cpuid_max(0, nullptr) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    const uint32_t b7 = b, c7 = c, d7 = d;
    __cpuid_count(7, 1, a, b, c, d);
    const uint32_t a71 = a;
    uint32_t f = 0;
    if (ymm && fma && bit(b7, 5)) f |= QN_AVX2;
    if ((f & QN_AVX2) && bit(a71, 4)) f |= QN_AVX_VNNI;
    if ((f & QN_AVX2) && zmm && bit(b7, 16) && bit(b7, 17) && bit(b7, 30) && bit(b7, 31)) f |= QN_AVX512;
    if ((f & QN_AVX512) && bit(c7, 11)) f |= QN_AVX512_VNNI;
    if (tiles && bit(d7, 24) && bit(d7, 25)) f |= QN_AMX_INT8;
    return f;
}
