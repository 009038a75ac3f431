// What the entry points (linear.cpp) and the ISA files share: the work descriptions of one call and the
// functions each ISA file provides. ISA files include this before their `#pragma GCC target`.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "qnative.h"

namespace qn {

constexpr int64_t kPanel = 16;  // output channels per packed weight panel
constexpr int kMaxRows = 8;     // largest micro-kernel row block (MR) of any ISA

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// Activation rows quantized and packed for the int8 micro-kernels: blocks of `mr` rows, k in quads,
// ap[block][k / 4][row % mr][k % 4]. Signed codes, or codes + 128 as bytes when `shift` (u8 × s8 VNNI).
struct PackedRows {
    uint8_t* ap;
    float* scale;      // per row
    int32_t* offset;   // per row: zero-point (+ 128 when shifted), multiplied by the column sums after the GEMM
    int64_t kq;
    int mr;
    bool shift;
};

struct Int8Call {
    const QnInt8Layer* layer;
    const float* x;
    int64_t m;
    float* y;
    PackedRows a;
    int64_t row_tile, col_tile;      // rows and panels per task (row_tile a multiple of mr)
    int64_t col_tasks;
};

constexpr int64_t kRowTile = 64;  // weight-only rows per task: their padded x stays in L2

struct WeightOnlyCall {
    const QnWeightOnlyLayer* layer;
    const float* x;       // rows padded to `ldx` floats with zeros (k rounded up to 8)
    int64_t ldx;
    const float* xsum;    // [m][groups], the sums the zero-points multiply (NULL when zeros is NULL)
    int64_t m;
    float* y;
    int64_t col_tile, col_tasks;
};

// Activation quantization (avx2 file, used by every int8 ISA): rows [r0, r1) of x into a.
// Returns true when a NaN or Inf was seen (nothing else is then trusted).
bool quantize_rows_avx2(const QnInt8Layer& layer, const float* x, int64_t r0, int64_t r1, const PackedRows& a);
// Weight-only preparation of rows [r0, r1): padded copy of x and per-group sums. True on NaN/Inf.
bool prepare_rows_avx2(const QnWeightOnlyLayer& layer, const float* x, int64_t r0, int64_t r1, float* xpad,
                       int64_t ldx, float* xsum);
// Scaling of integer sums into float outputs (avx2 file): rows [r0, r0 + rows), panel columns [c0, c0 + 16 * panels).
void int8_epilogue_avx2(const Int8Call& call, const int32_t* acc, int64_t ld_acc, int64_t r0, int rows,
                        int64_t c0, int64_t cols);

// One task of the GEMM: a tile of row_tile rows × col_tile panels.
void int8_tile_avx2(const Int8Call& call, int64_t task);
void int8_tile_avx_vnni(const Int8Call& call, int64_t task);
void int8_tile_avx512_vnni(const Int8Call& call, int64_t task);
void weight_only_tile_avx2(const WeightOnlyCall& call, int64_t task);
void weight_only_tile_avx512(const WeightOnlyCall& call, int64_t task);

// The row block (MR) each int8 ISA's micro-kernel takes; the activations are packed to match.
constexpr int kRowsAvx2 = 4;
constexpr int kRowsAvxVnni = 6;
constexpr int kRowsAvx512Vnni = 8;

}  // namespace qn
