// passes.cpp: passes between the convolutions on the CPU -- ReLU forward and backward, and
// max pooling's backward -- for tinyspp.ops.relu_* and tinyspp.ops.max_pool2d_backward.
//
// Loaded by tinyspp/kernels/passes.py (compiled once per machine with the host C++ compiler,
// no -ffast-math). The NumPy code in tinyspp/ops/basic.py and tinyspp/ops/pool.py is the
// readable twin; the tests check that both give the same numbers (NaN, -0.0 and ties too).
//
// Why a loop is faster than the NumPy code here: NumPy makes one pass over memory per ufunc.
// ReLU's forward is two passes (the maximum, then the mask x > 0) and its backward two
// (the mask as an integer, then a bitwise AND); each loop below reads its inputs and writes
// its output once. Pooling's backward in NumPy builds every window's flat index (a take and
// two adds over int64 arrays) before its scatter-add; here each image plane is zeroed and
// scattered into while it is in the cache. (Pooling's forward stays NumPy's: its offset-by-
// offset passes over long strided rows vectorise well, and a loop over the short rows of a
// pooled map, 8 to 32 windows, did not beat them.)
//
//   relu_forward:  out = x > 0 ? x : (x is NaN ? x : +0.0)   (np.maximum(x, 0)),  mask = x > 0
//   relu_backward: dx = mask ? dout : +0.0                    (np.where(mask, dout, 0))
//   pool_forward:  out = each window's maximum, winner = the offset i*k + j of its first
//                  maximum in row-major order (strict '>'); a window holding NaN gives its
//                  first NaN, both as out and as winner (np.maximum's running max, then
//                  max_pool2d_forward's NaN routing)
//   pool_backward: dx = 0, then dout added at every window's winner, windows in row-major
//                  order (np.add.at's order), so overlapping windows sum the same way
//
// Pooling here is without padding, on windows that lie inside the image
// ((oh - 1)*s + k <= H, likewise W), with the winners (each window's offset i*k + j of its
// maximum) that max_pool2d_forward found; planes are the N*C images of one (N, C, H, W)
// array, so a caller can hand a range of planes to each thread.

#include <vector>

typedef long long i64;
typedef unsigned char u8;

namespace {

template <typename T>
inline bool is_nan(T v) { return v != v; }

template <typename T>
void relu_forward(const T* x, i64 n, T* out, u8* mask) {
    for (i64 i = 0; i < n; ++i) {
        const T v = x[i];
        const bool pos = v > T(0);
        out[i] = (pos || is_nan(v)) ? v : T(0);
        mask[i] = pos;
    }
}

template <typename T>
void relu_backward(const T* dout, const u8* mask, i64 n, T* dx) {
    for (i64 i = 0; i < n; ++i) dx[i] = mask[i] ? dout[i] : T(0);
}

// One row of windows with NaN in them: the first NaN wins for good; before one, a strictly
// greater value.
template <typename T>
void pool_row_with_nan(const T* top, i64 W, i64 k, i64 s, i64 ow, T* best, int* at) {
    for (i64 ox = 0; ox < ow; ++ox) {
        const T* cell = top + ox * s;
        T b = cell[0];
        int a = 0;
        for (i64 t = 1; t < k * k && !is_nan(b); ++t) {
            const T v = cell[(t / k) * W + t % k];
            if (v > b || is_nan(v)) {
                b = v;
                a = int(t);
            }
        }
        best[ox] = b;
        at[ox] = a;
    }
}

template <typename T>
void pool_forward(const T* x, i64 planes, i64 H, i64 W, i64 k, i64 s, i64 oh, i64 ow, T* out,
                  u8* winner) {
    // one row of windows at a time: a running maximum over the k*k kernel offsets, each a
    // strided run of the plane (no padded or phase-split copy), as branch-free selects that
    // the compiler vectorises along the row, in buffers that stay in the L1 cache. A row
    // that met a NaN is done again by the NaN-aware loop above.
    std::vector<T> best_row(ow);
    std::vector<int> at_row(ow);
    T* __restrict best = best_row.data();
    int* __restrict at = at_row.data();
    for (i64 p = 0; p < planes; ++p) {
        const T* plane = x + p * H * W;
        for (i64 oy = 0; oy < oh; ++oy) {
            const T* top = plane + oy * s * W;
            int any_nan = 0;
            for (i64 ox = 0; ox < ow; ++ox) {
                best[ox] = top[ox * s];
                at[ox] = 0;
                any_nan |= is_nan(best[ox]);
            }
            for (i64 t = 1; t < k * k; ++t) {
                const T* __restrict cell = top + (t / k) * W + t % k;
                const int offset = int(t);
                for (i64 ox = 0; ox < ow; ++ox) {
                    const T v = cell[ox * s];
                    const bool take = v > best[ox];
                    best[ox] = take ? v : best[ox];
                    at[ox] = take ? offset : at[ox];
                    any_nan |= is_nan(v);
                }
            }
            if (any_nan) pool_row_with_nan(top, W, k, s, ow, best, at);
            T* o = out + (p * oh + oy) * ow;
            u8* w = winner + (p * oh + oy) * ow;
            for (i64 ox = 0; ox < ow; ++ox) {
                o[ox] = best[ox];
                w[ox] = u8(at[ox]);
            }
        }
    }
}

template <typename T>
void pool_backward(const T* dout, const u8* winner, i64 planes, i64 H, i64 W, i64 k, i64 s,
                   i64 oh, i64 ow, T* dx) {
    i64 offset[256];  // flat offset of kernel offset t inside a window: (t / k)*W + t % k
    for (i64 t = 0; t < k * k; ++t) offset[t] = (t / k) * W + t % k;
    for (i64 p = 0; p < planes; ++p) {
        T* plane = dx + p * H * W;
        for (i64 q = 0; q < H * W; ++q) plane[q] = T(0);
        const T* d = dout + p * oh * ow;
        const u8* w = winner + p * oh * ow;
        for (i64 oy = 0; oy < oh; ++oy) {
            T* row = plane + oy * s * W;
            const T* drow = d + oy * ow;
            const u8* wrow = w + oy * ow;
            for (i64 ox = 0; ox < ow; ++ox) row[ox * s + offset[wrow[ox]]] += drow[ox];
        }
    }
}

}  // namespace

extern "C" {

#define TINYSPP_PASSES(T, SUFFIX)                                                              \
    void relu_forward_##SUFFIX(const T* x, i64 n, T* out, u8* mask) {                          \
        relu_forward<T>(x, n, out, mask);                                                      \
    }                                                                                          \
    void relu_backward_##SUFFIX(const T* dout, const u8* mask, i64 n, T* dx) {                 \
        relu_backward<T>(dout, mask, n, dx);                                                   \
    }                                                                                          \
    void pool_forward_##SUFFIX(const T* x, i64 planes, i64 H, i64 W, i64 k, i64 s, i64 oh,    \
                               i64 ow, T* out, u8* winner) {                                   \
        pool_forward<T>(x, planes, H, W, k, s, oh, ow, out, winner);                           \
    }                                                                                          \
    void pool_backward_##SUFFIX(const T* dout, const u8* winner, i64 planes, i64 H, i64 W,     \
                                i64 k, i64 s, i64 oh, i64 ow, T* dx) {                         \
        pool_backward<T>(dout, winner, planes, H, W, k, s, oh, ow, dx);                        \
    }

TINYSPP_PASSES(float, f32)
TINYSPP_PASSES(double, f64)

}  // extern "C"
