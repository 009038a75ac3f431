// The entry points: argument checks, the ISA check, scratch space, and one parallel region per call on
// torch's own OpenMP pool (the library links libgomp.so.1, which resolves to the copy torch has already
// loaded, so no second pool competes for the cores). One region, not a pass over the rows and then one over
// the outputs: where other processes share the cores, every join can wait a whole time slice for a thread.
#include <string.h>

#include <atomic>
#include <memory>
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
    void (*tile)(const Int8Call&, int64_t, int64_t);
};

bool int8_isa(int32_t isa, Int8Isa& out) {
    switch (isa) {
        case QN_I8_AVX2: out = {QN_AVX2, kRowsAvx2, false, 1, int8_tile_avx2}; return true;
        case QN_I8_AVX_VNNI: out = {QN_AVX_VNNI, kRowsAvxVnni, true, 1, int8_tile_avx_vnni}; return true;
        case QN_I8_AVX512_VNNI: out = {QN_AVX512_VNNI, kRowsAvx512Vnni, true, 2, int8_tile_avx512_vnni}; return true;
        default: return false;
    }
}

constexpr int64_t kSerialPrepare = 1 << 16;  // below this many inputs, the calling thread prepares every row first

// tile(rt, ct) for every row tile rt < row_tiles and column tile ct < col_tiles, in one parallel region.
// The rows of a row tile are prepared (quantized, or copied and summed) by the first task that needs them
// while later ones wait; consecutive tasks take different row tiles, so threads start on different ones.
// False when a prepare saw NaN/Inf (the remaining tiles are then skipped; the caller raises).
template <class Prepare, class Tile>
bool run_tiles(int64_t row_tiles, int64_t col_tiles, int64_t inputs, int threads, const Prepare& prepare,
               const Tile& tile) {
    enum { kPending, kBusy, kReady };
    const bool serial = inputs <= kSerialPrepare;
    std::unique_ptr<std::atomic<int>[]> state(new std::atomic<int>[size_t(row_tiles)]);
    for (int64_t rt = 0; rt < row_tiles; ++rt) {
        if (serial && !prepare(rt)) return false;
        state[rt].store(serial ? kReady : kPending, std::memory_order_relaxed);
    }
    std::atomic<bool> bad{false};
    parallel(row_tiles * col_tiles, threads, [&](int64_t t) {
        const int64_t rt = t % row_tiles, ct = t / row_tiles;
        int expected = kPending;
        if (state[rt].compare_exchange_strong(expected, kBusy, std::memory_order_acquire)) {
            if (!prepare(rt)) bad.store(true, std::memory_order_relaxed);
            state[rt].store(kReady, std::memory_order_release);
        } else {
            while (state[rt].load(std::memory_order_acquire) != kReady) __builtin_ia32_pause();
        }
        if (!bad.load(std::memory_order_relaxed)) tile(rt, ct);
    });
    return !bad;
}

int64_t column_tile(int64_t panels, int64_t row_tiles, int threads, int step) {
    const int64_t want = ceil_div(4 * int64_t(threads > 0 ? threads : 1), row_tiles);  // column tiles wanted
    int64_t col_tile = panels / want;
    col_tile = col_tile < 1 ? 1 : (col_tile > 8 ? 8 : col_tile);
    return ceil_div(col_tile, step) * step;
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
    const int64_t panels = ceil_div(layer->n, kPanel);
    const int64_t row_tile = isa.rows * ceil_div(64, isa.rows), row_tiles = ceil_div(m, row_tile);
    const int64_t col_tile = column_tile(panels, row_tiles, threads, isa.panel_step);
    const Int8Call call{layer, x, m, y, a, row_tile, col_tile, ceil_div(panels, col_tile)};
    const bool finite = run_tiles(
        row_tiles, call.col_tasks, m * layer->k, threads,
        [&](int64_t rt) { return quantize_rows_avx2(*layer, x, rt * row_tile, imin(m, (rt + 1) * row_tile), a); },
        [&](int64_t rt, int64_t ct) { isa.tile(call, rt, ct); });
    return finite ? QN_OK : QN_NONFINITE;
}

extern "C" int32_t qn_quantize_rows(const QnInt8Layer* layer, const float* x, int64_t m, int8_t* codes, float* scales,
                                    int32_t* zero_points) {
    if (!layer || m < 0 || layer->k <= 0 || (m && (!x || !codes || !scales || !zero_points))) return QN_BAD_ARGS;
    if (!(features() & QN_AVX2)) return QN_NO_ISA;
    if (!m) return QN_OK;
    const PackedRows a = pack_space(*layer, m, false);
    if (!quantize_rows_avx2(*layer, x, 0, m, a)) return QN_NONFINITE;
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
    void (*tile)(const WeightOnlyCall&, int64_t, int64_t);
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
    const int64_t panels = ceil_div(layer->n, kPanel), row_tiles = ceil_div(m, kRowTile);
    const int64_t col_tile = column_tile(panels, row_tiles, threads, 1);
    const WeightOnlyCall call{layer, xpad, ldx, xsum, m, y, col_tile, ceil_div(panels, col_tile)};
    const bool finite = run_tiles(
        row_tiles, call.col_tasks, m * layer->k, threads,
        [&](int64_t rt) {
            return prepare_rows_avx2(*layer, x, rt * kRowTile, imin(m, (rt + 1) * kRowTile), xpad, ldx, xsum, prescale);
        },
        [&](int64_t rt, int64_t ct) { tile(call, rt, ct); });
    return finite ? QN_OK : QN_NONFINITE;
}
