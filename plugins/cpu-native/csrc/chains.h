// step(chain, i) for i in [0, n), i going to chain i % A in whole rounds of A and the rest to chain 0: the
// loop of a micro-kernel that keeps A independent accumulator chains in flight when it has few rows.
// Included after each ISA file's target pragma, so that the step (which uses that ISA) is inlined.
#pragma once

namespace qn {
namespace {

template <int A, class Step>
inline void chained_loop(int64_t n, Step&& step) {
    int64_t i = 0;
    for (; i + A <= n; i += A)
        for (int j = 0; j < A; ++j) step(j, i + j);
    for (; i < n; ++i) step(0, i);
}

}  // namespace
}  // namespace qn
