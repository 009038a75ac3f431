// The loop over one weight-only task (rows × panels), shared by the weight-only ISA files and compiled
// once per ISA: rows of row tile rt × panels of column tile ct. `Kernel::run(call, rows, r, p)` computes
// rows [r, r + rows) of output panel p.
#pragma once

namespace qn {
namespace {

template <class Kernel>
void weight_only_tile(const WeightOnlyCall& call, int64_t rt, int64_t ct) {
    const int64_t panels = ceil_div(call.layer->n, kPanel);
    const int64_t r_begin = rt * kRowTile, r_end = imin(call.m, r_begin + kRowTile);
    const int64_t p_begin = ct * call.col_tile, p_end = imin(panels, p_begin + call.col_tile);
    for (int64_t p = p_begin; p < p_end; ++p)
        for (int64_t r = r_begin; r < r_end; r += Kernel::kRows)
            Kernel::run(call, int(imin(Kernel::kRows, r_end - r)), r, p);
}

// Where the group g of panel p keeps its 16 scales (or zero-points).
inline const float* per_group(const float* base, const QnWeightOnlyLayer& layer, int64_t p, int64_t g) {
    return base + (p * ceil_div(layer.k, layer.group) + g) * kPanel;
}

}  // namespace
}  // namespace qn
