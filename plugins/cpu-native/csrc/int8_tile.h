// The loop over one GEMM task, shared by the int8 ISA files: included after each file's target pragma, so
// it is compiled once per ISA. `Kernel::run(rows, panels, a, b, kq, acc)` sums the products of `rows`
// packed activation rows with `panels` weight panels into acc[row][32] (int32, exact).
#pragma once

namespace qn {
namespace {

template <class Kernel>
void int8_tile(const Int8Call& call, int64_t task) {
    const QnInt8Layer& layer = *call.layer;
    const int64_t kq = call.a.kq, panel_bytes = kq * 64;
    const int64_t panels = ceil_div(layer.n, kPanel);
    const int64_t rt = task / call.col_tasks, ct = task % call.col_tasks;
    const int64_t r_begin = rt * call.row_tile, r_end = imin(call.m, r_begin + call.row_tile);
    const int64_t p_begin = ct * call.col_tile, p_end = imin(panels, p_begin + call.col_tile);
    alignas(64) int32_t acc[kMaxRows * 2 * kPanel];
    for (int64_t p = p_begin; p < p_end; p += Kernel::kPanels) {
        const int np = int(imin(Kernel::kPanels, p_end - p));
        const int8_t* b = layer.bp + p * panel_bytes;
        for (int64_t r = r_begin; r < r_end; r += Kernel::kRows) {
            const int rows = int(imin(Kernel::kRows, r_end - r));
            const uint8_t* a = call.a.ap + (r / Kernel::kRows) * kq * Kernel::kRows * 4;
            Kernel::run(rows, np, a, b, panel_bytes, kq, acc);
            int8_epilogue_avx2(call, acc, 2 * kPanel, r, rows, p * kPanel, np * kPanel);
        }
    }
}

inline int32_t load4(const uint8_t* p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

}  // namespace
}  // namespace qn
