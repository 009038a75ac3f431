// What the entry points (linear.cpp) and the ISA files share: the work descriptions of one call and the
// functions each ISA file provides. ISA files include this before their `#pragma GCC target`.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "qnative.h"

namespace qn {

constexpr int64_t kPanel = 16;  // output channels per packed weight panel
// An int8 GEMM task covers at most kTileRows rows × kTileCols columns; it sums k in chunks of kChunkQuads
// quads (384 k), whose weight panels (12 KiB a pair) stay in L1 while the task's row blocks pass over them.
constexpr int64_t kTileRows = 72, kTileCols = 128, kChunkQuads = 96;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// Activation rows quantized for the int8 micro-kernels: row-major codes, each row padded with zero codes to
// whole quads of k (lda = 4 · kq bytes), so a micro-kernel broadcasts 4 codes of a row at a time. Signed
// codes, or codes + 128 as bytes when `shift` (the u8 × s8 of vpdpbusd).
struct PackedRows {
    uint8_t* ap;
    float* scale;      // per row
    int32_t* offset;   // per row: zero-point (+ 128 when shifted), multiplied by the column sums after the GEMM
    int64_t kq;
    bool shift;
    int64_t lda() const { return kq * 4; }
};

struct Int8Call {
    const QnInt8Layer* layer;
    const float* x;
    int64_t m;
    float* y;
    PackedRows a;
    int64_t row_tile, col_tile;      // rows and panels per task
    int64_t col_tasks;
};

constexpr int64_t kRowTile = 64;  // weight-only rows per task: their padded x stays in L2

struct WeightOnlyCall {
    const QnWeightOnlyLayer* layer;
    const float* x;       // rows padded to `ldx` floats with zeros (k rounded up to 16)
    int64_t ldx;
    const float* xsum;    // [m][groups], the sums the zero-points multiply (NULL when zeros is NULL)
    int64_t m;
    float* y;
    int64_t col_tile, col_tasks;
};

// Activation quantization (avx2 file, used by every int8 ISA): rows [r0, r1) of x into a.
// False when a NaN or Inf was seen (nothing else is then trusted).
bool quantize_rows_avx2(const QnInt8Layer& layer, const float* x, int64_t r0, int64_t r1, const PackedRows& a);
// Weight-only preparation of rows [r0, r1): zero-padded copy of x (each k scaled by 2^(-4 (k % 4)) when
// `prescale`, for the AVX2 int4 kernel) and per-group sums of x. False on NaN/Inf.
bool prepare_rows_avx2(const QnWeightOnlyLayer& layer, const float* x, int64_t r0, int64_t r1, float* xpad,
                       int64_t ldx, float* xsum, bool prescale);

// One task: row tile rt (row_tile rows, or kRowTile for weight-only) × column tile ct (col_tile panels).
void int8_tile_avx2(const Int8Call& call, int64_t rt, int64_t ct);
void int8_tile_avx_vnni(const Int8Call& call, int64_t rt, int64_t ct);
void int8_tile_avx512_vnni(const Int8Call& call, int64_t rt, int64_t ct);
void weight_only_tile_avx2(const WeightOnlyCall& call, int64_t rt, int64_t ct);
void weight_only_tile_avx512(const WeightOnlyCall& call, int64_t rt, int64_t ct);

// The row block (MR) each int8 ISA's micro-kernel takes; a task's rows are a multiple of it.
constexpr int kRowsAvx2 = 4;
constexpr int kRowsAvxVnni = 6;
constexpr int kRowsAvx512Vnni = 8;

}  // namespace qn
