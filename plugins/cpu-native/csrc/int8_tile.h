// The loop over one GEMM task, shared by the int8 ISA files: included after each file's target pragma, so
// it is compiled once per ISA. `Kernel::run(rows, panels, a, lda, b, panel_bytes, kq, acc, ld, accumulate)`
// sums the products of `rows` activation code rows with `panels` weight panels over kq quads of k into
// acc[row * ld + column] (int32, exact), adding to what is there when `accumulate`. The task walks k in
// chunks so that a chunk of its weight panels stays in L1 while every row block of the task passes over
// it (GotoBLAS order); the epilogue (int8_epilogue.h) then turns the tile's sums into float outputs.
// Keeping the two apart keeps the epilogue's values out of the accumulation loop's registers (GCC 12
// otherwise shuffles them between registers on every iteration).
#pragma once

namespace qn {
namespace {

template <class Kernel>
void int8_tile(const Int8Call& call, int64_t rt, int64_t ct) {
    const QnInt8Layer& layer = *call.layer;
    const int64_t kq = call.a.kq, panel_bytes = kq * 64;
    const int64_t panels = ceil_div(layer.n, kPanel);
    const int64_t r_begin = rt * call.row_tile, r_end = imin(call.m, r_begin + call.row_tile);
    const int64_t p_begin = ct * call.col_tile, p_end = imin(panels, p_begin + call.col_tile);
    alignas(64) int32_t acc[kTileRows * kTileCols];
    const int64_t step = r_end - r_begin > Kernel::kRows ? kChunkQuads : kq;  // one row block: nothing to reuse
    for (int64_t q0 = 0; q0 < kq; q0 += step) {
        const int64_t chunk = imin(step, kq - q0);
        for (int64_t p = p_begin; p < p_end; p += Kernel::kPanels) {
            const int np = int(imin(Kernel::kPanels, p_end - p));
            const int8_t* b = layer.bp + p * panel_bytes + q0 * 64;
            for (int64_t r = r_begin; r < r_end; r += Kernel::kRows) {
                const int rows = int(imin(Kernel::kRows, r_end - r));
                const uint8_t* a = call.a.ap + r * call.a.lda() + q0 * 4;
                int32_t* tile = acc + (r - r_begin) * kTileCols + (p - p_begin) * kPanel;
                Kernel::run(rows, np, a, call.a.lda(), b, panel_bytes, chunk, tile, kTileCols, q0 > 0);
            }
        }
    }
    for (int64_t r = r_begin; r < r_end; ++r)
        for (int64_t c = 0; c < (p_end - p_begin) * kPanel; c += Kernel::kLanes)
            store_sums(call, r, p_begin * kPanel + c, Kernel::load(acc + (r - r_begin) * kTileCols + c));
}

inline int32_t load4(const uint8_t* p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

}  // namespace
}  // namespace qn
