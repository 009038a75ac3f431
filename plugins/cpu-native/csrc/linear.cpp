// The entry points: argument checks, the ISA check, scratch space, and the two parallel phases of a call
// (activation rows, then output tiles) on torch's own OpenMP pool: the library links libgomp.so.1, which
// resolves to the copy torch has already loaded, so no second pool competes for the cores.
#include <omp.h>
#include <string.h>

#include <atomic>
#include <vector>

#include "internal.h"

namespace qn {
namespace {

uint32_t features() {
    static const uint32_t f = qn_cpu_features();
    return f;
}

template <class F>
void parallel(int64_t tasks, int threads, const F& f) {
    if (threads > tasks) threads = int(tasks);
    if (threads <= 1) {
        for (int64_t t = 0; t < tasks; ++t) f(t);
        return;
    }
    std::atomic<int64_t> next{0};
#pragma omp parallel num_threads(threads)
    {
        for (int64_t t; (t = next.fetch_add(1, std::memory_order_relaxed)) < tasks;) f(t);
    }
}

// Per calling thread, grown on demand and reused: no allocation (and no page faults) per call.
void* scratch(size_t bytes) {
    thread_local std::vector<uint8_t> buffer;
    if (buffer.size() < bytes + 64) buffer.resize(bytes + 64);
    const uintptr_t p = reinterpret_cast<uintptr_t>(buffer.data());
    return reinterpret_cast<void*>((p + 63) & ~uintptr_t(63));
}

size_t round64(size_t n) { return (n + 63) & ~size_t(63); }

struct Int8Isa {
    uint32_t need;
    int rows;
    bool shift;
    int panel_step;
    void (*tile)(const Int8Call&, int64_t);
};

bool int8_isa(int32_t isa, Int8Isa& out) {
    switch (isa) {
        case QN_I8_AVX2: out = {QN_AVX2, kRowsAvx2, false, 1, int8_tile_avx2}; return true;
        case QN_I8_AVX_VNNI: out = {QN_AVX_VNNI, kRowsAvxVnni, true, 1, int8_tile_avx_vnni}; return true;
        case QN_I8_AVX512_VNNI: out = {QN_AVX512_VNNI, kRowsAvx512Vnni, true, 2, int8_tile_avx512_vnni}; return true;
        default: return false;
    }
}

// Rows of activations quantized into `a` in parallel blocks; false on NaN/Inf.
bool quantize_all(const QnInt8Layer& layer, const float* x, int64_t m, const PackedRows& a, int threads) {
    const int64_t per_task = 16;
    std::atomic<bool> bad{false};
    parallel(ceil_div(m, per_task), threads, [&](int64_t t) {
        if (!quantize_rows_avx2(layer, x, t * per_task, imin(m, (t + 1) * per_task), a)) bad = true;
    });
    return !bad;
}

PackedRows pack_space(const QnInt8Layer& layer, int64_t m, bool shift) {
    const int64_t kq = ceil_div(layer.k, 4);
    const size_t a_bytes = round64(size_t(m * kq * 4));
    uint8_t* base = static_cast<uint8_t*>(scratch(a_bytes + 2 * round64(size_t(m) * 4)));
    return PackedRows{base, reinterpret_cast<float*>(base + a_bytes),
                      reinterpret_cast<int32_t*>(base + a_bytes + round64(size_t(m) * 4)), kq, shift};
}

}  // namespace
}  // namespace qn

using namespace qn;

extern "C" int32_t qn_linear_int8(const QnInt8Layer* layer, const float* x, int64_t m, float* y, int32_t threads) {
    Int8Isa isa;
    if (!layer || m < 0 || (m && (!x || !y)) || layer->n <= 0 || layer->k <= 0 || !int8_isa(layer->isa, isa))
        return QN_BAD_ARGS;
    if ((features() & isa.need) != isa.need) return QN_NO_ISA;
    if (!m) return QN_OK;
    const PackedRows a = pack_space(*layer, m, isa.shift);
    if (!quantize_all(*layer, x, m, a, threads)) return QN_NONFINITE;
    const int64_t panels = ceil_div(layer->n, kPanel);
    const int64_t row_tile = isa.rows * ceil_div(64, isa.rows), row_tasks = ceil_div(m, row_tile);
    const int64_t want = ceil_div(4 * int64_t(threads > 0 ? threads : 1), row_tasks);  // column tasks wanted
    int64_t col_tile = panels / want;
    col_tile = col_tile < 1 ? 1 : (col_tile > 8 ? 8 : col_tile);
    col_tile = ceil_div(col_tile, isa.panel_step) * isa.panel_step;
    Int8Call call{layer, x, m, y, a, row_tile, col_tile, ceil_div(panels, col_tile)};
    parallel(row_tasks * call.col_tasks, threads, [&](int64_t t) { isa.tile(call, t); });
    return QN_OK;
}

extern "C" int32_t qn_quantize_rows(const QnInt8Layer* layer, const float* x, int64_t m, int8_t* codes, float* scales,
                                    int32_t* zero_points) {
    if (!layer || m < 0 || layer->k <= 0 || (m && (!x || !codes || !scales || !zero_points))) return QN_BAD_ARGS;
    if (!(features() & QN_AVX2)) return QN_NO_ISA;
    if (!m) return QN_OK;
    const PackedRows a = pack_space(*layer, m, false);
    if (!quantize_all(*layer, x, m, a, 1)) return QN_NONFINITE;
    for (int64_t r = 0; r < m; ++r) {
        memcpy(codes + r * layer->k, a.ap + r * a.lda(), size_t(layer->k));
        scales[r] = a.scale[r];
        zero_points[r] = a.offset[r];
    }
    return QN_OK;
}

extern "C" int32_t qn_linear_weight_only(const QnWeightOnlyLayer* layer, const float* x, int64_t m, float* y,
                                         int32_t threads) {
    if (!layer || m < 0 || (m && (!x || !y)) || layer->n <= 0 || layer->k <= 0 || layer->group <= 0 ||
        (layer->bits != 8 && layer->bits != 4) || (layer->bits == 8 && layer->group != layer->k) ||
        (layer->bits == 4 && layer->group % 8 && layer->group != layer->k))
        return QN_BAD_ARGS;
    uint32_t need;
    void (*tile)(const WeightOnlyCall&, int64_t);
    switch (layer->isa) {
        case QN_F_AVX2: need = QN_AVX2; tile = weight_only_tile_avx2; break;
        case QN_F_AVX512: need = QN_AVX512; tile = weight_only_tile_avx512; break;
        default: return QN_BAD_ARGS;
    }
    if ((features() & need) != need) return QN_NO_ISA;
    if (!m) return QN_OK;
    const int64_t ldx = ceil_div(layer->k, 16) * 16, groups = ceil_div(layer->k, layer->group);
    const size_t x_bytes = round64(size_t(m * ldx) * sizeof(float));
    float* xpad = static_cast<float*>(scratch(x_bytes + size_t(m * groups) * sizeof(float)));
    float* xsum = layer->zeros ? reinterpret_cast<float*>(reinterpret_cast<uint8_t*>(xpad) + x_bytes) : nullptr;
    const bool prescale = layer->isa == QN_F_AVX2 && layer->bits == 4;
    std::atomic<bool> bad{false};
    parallel(ceil_div(m, 16), threads, [&](int64_t t) {
        if (!prepare_rows_avx2(*layer, x, t * 16, imin(m, (t + 1) * 16), xpad, ldx, xsum, prescale)) bad = true;
    });
    if (bad) return QN_NONFINITE;
    const int64_t panels = ceil_div(layer->n, kPanel), row_tasks = ceil_div(m, kRowTile);
    const int64_t want = ceil_div(4 * int64_t(threads > 0 ? threads : 1), row_tasks);
    int64_t col_tile = panels / want;
    col_tile = col_tile < 1 ? 1 : (col_tile > 8 ? 8 : col_tile);
    WeightOnlyCall call{layer, xpad, ldx, xsum, m, y, col_tile, ceil_div(panels, col_tile)};
    parallel(row_tasks * call.col_tasks, threads, [&](int64_t t) { tile(call, t); });
    return QN_OK;
}
