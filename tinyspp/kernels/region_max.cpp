// region_max.cpp: region pyramid MAX pooling on one CPU core (tinyspp's CPU kernel).
//
// Loaded by tinyspp/kernels/cpu.py (compiled once per machine with the host C++ compiler, no
// -ffast-math: NaN must stay NaN) and called by tinyspp.ops.roi_spp_forward for NumPy arrays.
// The bins are computed in Python (tinyspp.bins.many_bin_edges, the library's one bin rule);
// this file only finds maxima and scatters gradients. The contract is the one of the NumPy
// path: for every bin and channel, the value and flat index h*W + w of the FIRST maximum in
// row-major order, NaN beating every number (the first NaN wins).
//
// Why it is fast where a per-RoI loop over spp_forward is slow:
//  * The map is channel-last, (N, H, W, C): the cells of a bin are scanned once, and each cell
//    updates C running maxima with one straight loop over contiguous memory (the compiler turns
//    the compare-and-select into SIMD instructions: four or eight channels per instruction).
//  * Nesting: with adaptive bins, bin (i, j) of level n is the union of bins
//    (i*f .. i*f+f-1, j*f .. j*f+f-1) of a level m = f*n (tinyspp.bins.level_plan). So of
//    (6, 3, 2, 1) only level 6 scans cells; 3, 2 and 1 merge (value, index) pairs of level 6.
//  * Identical RoIs are pooled once: later output rows copy the first row's values.
//  * Backward is a plain loop of `dx[argmax] += dout` over the outputs.
//
// Layouts (all C-contiguous):
//   xt      (N, H, W, C)   features, channel-last
//   batch   (U,)           image of each distinct RoI
//   edges   (U, E)         per level, at plan[l].edge_off: ys[n], ye[n], xs[n], xe[n] (absolute
//                          half-open bin edges, from tinyspp.bins.many_bin_edges)
//   rowmap  (R,)           distinct RoI u of each output row r
//   plan    (L, 5)         one row per level IN EVALUATION ORDER (finest first):
//                          n, col_off (first column of the level in a row of out),
//                          edge_off (first column in a row of edges), bin_off (first bin of the
//                          level in the scratch), parent (plan row it merges, or -1: scan cells)
//   out     (R, D)         D = C * sum(n*n); each level channel-major: column col_off + c*n*n + bin
//   argmax  (U, D)         the region-pooling argmax format (tinyspp/ops/roi/__init__.py):
//                          flat h*W + w within the RoI's image plane, in the layout of out, one
//                          row per DISTINCT RoI; uint16 when H*W <= 65536 (half the memory
//                          traffic of the usual small maps), else int32

#include <cstdint>
#include <cstring>
#include <vector>

typedef long long i64;
typedef int32_t idx_t;

namespace {

// Running first maximum of one bin over the channels [c0, c0 + CB): start at its first cell,
// then a later cell wins only when it is strictly larger, or NaN while the best so far is not
// (row-major order keeps the first). NaNs = false is the same loop for maps without NaN
// (checked by the caller): one comparison. CB is a compile-time block of channels small enough
// for the running maxima to stay in SIMD registers while every cell of the bin streams past.
template <typename T, bool NaNs, int CB>
void scan_block(const T* __restrict__ plane, i64 W, i64 C, i64 c0, i64 ys, i64 ye, i64 xs,
                i64 xe, T* __restrict__ best, idx_t* __restrict__ arg) {
    T b[CB];
    idx_t a[CB];
    const T* first = plane + (ys * W + xs) * C + c0;
    const idx_t f = static_cast<idx_t>(ys * W + xs);
    for (int c = 0; c < CB; ++c) {
        b[c] = first[c];
        a[c] = f;
    }
    for (i64 h = ys; h < ye; ++h) {
        for (i64 w = (h == ys ? xs + 1 : xs); w < xe; ++w) {
            const T* __restrict__ v = plane + (h * W + w) * C + c0;
            const idx_t flat = static_cast<idx_t>(h * W + w);
            for (int c = 0; c < CB; ++c) {
                const T x = v[c];
                const bool take = NaNs ? (x > b[c]) | ((x != x) & (b[c] == b[c])) : x > b[c];
                const idx_t mask = -static_cast<idx_t>(take);  // all ones when taken
                b[c] = take ? x : b[c];
                a[c] = (flat & mask) | (a[c] & ~mask);  // a select, never a branch
            }
        }
    }
    for (int c = 0; c < CB; ++c) {
        best[c0 + c] = b[c];
        arg[c0 + c] = a[c];
    }
}

// One bin, all channels: blocks of 16 channels, then single channels for the remainder.
template <typename T, bool NaNs>
void scan_bin(const T* __restrict__ plane, i64 W, i64 C, i64 ys, i64 ye, i64 xs, i64 xe,
              T* __restrict__ best, idx_t* __restrict__ arg) {
    const int CB = 32 / sizeof(T) * 4;
    i64 c0 = 0;
    for (; c0 + CB <= C; c0 += CB)
        scan_block<T, NaNs, CB>(plane, W, C, c0, ys, ye, xs, xe, best, arg);
    for (; c0 < C; ++c0) scan_block<T, NaNs, 1>(plane, W, C, c0, ys, ye, xs, xe, best, arg);
}

// Merge one (value, index) candidate per channel into the running best: the larger value
// wins, equal values go to the smaller flat index (the earlier cell), NaN beats numbers and
// the earlier of two NaNs wins. Bins may overlap, so a cell can be offered twice: harmless.
template <typename T, bool NaNs>
void merge(const T* __restrict__ v, const idx_t* __restrict__ a, i64 C, T* __restrict__ best,
           idx_t* __restrict__ arg) {
    for (i64 c = 0; c < C; ++c) {
        const T x = v[c], b = best[c];
        const idx_t i = a[c], j = arg[c];
        bool take = (x > b) | ((x == b) & (i < j));
        if (NaNs) {
            const bool xn = x != x, bn = b != b;
            take = take | (xn & (!bn | (i < j)));
        }
        const idx_t mask = -static_cast<idx_t>(take);
        best[c] = take ? x : b;
        arg[c] = (i & mask) | (j & ~mask);
    }
}

// All levels of one distinct RoI into the scratch (bins-major: bin k of plan row l at
// (plan[l].bin_off + k) * C), in evaluation order so a parent level is ready before its merges.
template <typename T, bool NaNs>
void pool_roi(const T* plane, i64 W, i64 C, const i64* e, const i64* plan, i64 L, T* vals,
              idx_t* args) {
    for (i64 l = 0; l < L; ++l) {
        const i64* p = plan + 5 * l;
        const i64 n = p[0], bin_off = p[3], parent = p[4];
        T* V = vals + bin_off * C;
        idx_t* A = args + bin_off * C;
        if (parent < 0) {
            const i64 *ys = e + p[2], *ye = ys + n, *xs = ye + n, *xe = xs + n;
            for (i64 i = 0; i < n; ++i)
                for (i64 j = 0; j < n; ++j)
                    scan_bin<T, NaNs>(plane, W, C, ys[i], ye[i], xs[j], xe[j], V + (i * n + j) * C,
                             A + (i * n + j) * C);
            continue;
        }
        const i64* q = plan + 5 * parent;
        const i64 m = q[0], f = m / n;
        const T* PV = vals + q[3] * C;
        const idx_t* PA = args + q[3] * C;
        for (i64 i = 0; i < n; ++i) {
            for (i64 j = 0; j < n; ++j) {
                T* best = V + (i * n + j) * C;
                idx_t* arg = A + (i * n + j) * C;
                const i64 top = (i * f) * m + j * f;  // first sub-bin, in row-major order
                std::memcpy(best, PV + top * C, C * sizeof(T));
                std::memcpy(arg, PA + top * C, C * sizeof(idx_t));
                for (i64 a = 0; a < f; ++a)
                    for (i64 b = (a == 0 ? 1 : 0); b < f; ++b) {
                        const i64 k = top + a * m + b;
                        merge<T, NaNs>(PV + k * C, PA + k * C, C, best, arg);
                    }
            }
        }
    }
}

template <typename T, typename Arg, bool NaNs>
void roi_max_forward(const T* xt, i64 H, i64 W, i64 C, const i64* batch, const i64* edges,
                     i64 U, i64 E, const i64* rowmap, i64 R, const i64* plan, i64 L, T* out,
                     Arg* argmax) {
    i64 bins = 0;
    for (i64 l = 0; l < L; ++l) bins += plan[5 * l] * plan[5 * l];
    const i64 D = C * bins;
    std::vector<T> vals(D);
    std::vector<idx_t> args(D);
    std::vector<i64> first_row(U, -1);
    for (i64 r = 0; r < R; ++r) {
        const i64 u = rowmap[r];
        T* o = out + r * D;
        if (first_row[u] >= 0) {  // an identical RoI was pooled already
            std::memcpy(o, out + first_row[u] * D, D * sizeof(T));
            continue;
        }
        first_row[u] = r;
        pool_roi<T, NaNs>(xt + batch[u] * H * W * C, W, C, edges + u * E, plan, L, vals.data(),
                 args.data());
        Arg* a = argmax + u * D;
        // scratch (bin, c) -> output layout (c, bin), values and argmax alike (the scratch is
        // small and in cache, so the strided reads cost next to nothing)
        for (i64 l = 0; l < L; ++l) {
            const i64* p = plan + 5 * l;
            const i64 nn = p[0] * p[0];
            const T* V = vals.data() + p[3] * C;
            const idx_t* A = args.data() + p[3] * C;
            for (i64 c = 0; c < C; ++c) {
                T* oc = o + p[1] + c * nn;
                Arg* ac = a + p[1] + c * nn;
                for (i64 k = 0; k < nn; ++k) {
                    oc[k] = V[k * C + c];
                    ac[k] = static_cast<Arg>(A[k * C + c]);
                }
            }
        }
    }
}

// dx (N, C, H, W) += dout at each output's maximum: argmax has the layout of out, so output
// column j's maximum is argmax[u, j]. Rows of identical RoIs share an argmax row (rowmap), so
// their gradients simply add up.
template <typename T, typename Arg>
void roi_max_backward(const T* dout, const Arg* argmax, const i64* rowmap, const i64* batch,
                      i64 R, i64 C, i64 HW, const i64* plan, i64 L, T* dx) {
    i64 D = 0;
    for (i64 l = 0; l < L; ++l) D += C * plan[5 * l] * plan[5 * l];
    for (i64 r = 0; r < R; ++r) {
        const i64 u = rowmap[r];
        for (i64 l = 0; l < L; ++l) {
            const i64 nn = plan[5 * l] * plan[5 * l], off = plan[5 * l + 1];
            const T* g = dout + r * D + off;
            const Arg* a = argmax + u * D + off;
            for (i64 c = 0; c < C; ++c) {
                T* d = dx + (batch[u] * C + c) * HW;
                for (i64 k = 0; k < nn; ++k) d[a[c * nn + k]] += g[c * nn + k];
            }
        }
    }
}

}  // namespace

// Entry points: roi_max_{forward,backward}_{f32,f64}_{u16,i32} (value type, argmax type).
#define TINYSPP_ENTRY_POINTS(T, A, SUFFIX)                                                    \
    extern "C" void roi_max_forward_##SUFFIX(const T* xt, i64 H, i64 W, i64 C,                \
                                             const i64* batch, const i64* edges, i64 U, i64 E, \
                                             const i64* rowmap, i64 R, const i64* plan, i64 L, \
                                             T* out, A* argmax, i64 has_nan) {                 \
        (has_nan ? roi_max_forward<T, A, true> : roi_max_forward<T, A, false>)(                \
            xt, H, W, C, batch, edges, U, E, rowmap, R, plan, L, out, argmax);                 \
    }                                                                                          \
    extern "C" void roi_max_backward_##SUFFIX(const T* dout, const A* argmax,                  \
                                              const i64* rowmap, const i64* batch, i64 R,      \
                                              i64 C, i64 HW, const i64* plan, i64 L, T* dx) {  \
        roi_max_backward<T, A>(dout, argmax, rowmap, batch, R, C, HW, plan, L, dx);            \
    }

TINYSPP_ENTRY_POINTS(float, uint16_t, f32_u16)
TINYSPP_ENTRY_POINTS(float, int32_t, f32_i32)
TINYSPP_ENTRY_POINTS(double, uint16_t, f64_u16)
TINYSPP_ENTRY_POINTS(double, int32_t, f64_i32)
