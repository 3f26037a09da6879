// blocked.cpp: the direct convolution of deeper layers (many channels, stride 1) in a
// channel-blocked layout, for tinyspp.ops.conv2d_forward / conv2d_backward.
//
// Loaded by tinyspp/kernels/blocked.py (compiled once per machine, no -ffast-math; with
// -mavx512f -mfma where the CPU has them, which is where the convolution uses it). The readable
// algorithm is im2col + one GEMM (tinyspp/ops/conv.py); the tests compare this file with it and
// with the loop-by-loop formula. The sums are the same, taken in another order (so float32
// results differ from the GEMM's in the last bits, as any two BLAS libraries do).
//
// Why: im2col + GEMM on a layer such as x(8, 96, 27, 27) w(256, 96, 5, 5) writes and reads
// columns 25 times the size of the input (56 MiB), and the work around the GEMM (gathering,
// transposing, col2im's scattered adds) costs about as much as the GEMM. A direct convolution
// reads each input value from the cache and uses it for 32 filters at once, with no columns.
//
// The layout (as Intel's oneDNN does it): a channel block is B = 64 bytes of channels, one
// SIMD register (16 float32 or 8 float64), innermost:
//   xb  (N, Cb, Hp, Wp, B)         the input, zero-padded by pad on every side and to Cb*B
//                                  channels (pack_input)
//   wb  (Fb, Cb, kh, kw, B, B)     wb[fb, cb, i, j, c, f] = w[fb*B + f, cb*B + c, i, j]
//                                  (pack_weights; turn_weights gives the blocks of the input
//                                  gradient's filters, w_t[c, f, i, j] = w[f, c, kh-1-i, kw-1-j])
//   ob  (N, Fb, oh, ow, B)         the output (unpack gives NCHW)
// with Cb = ceil(C / B), Fb = ceil(F / B); padded channels hold zeros and add nothing.
//
//   forward: ob[n, f, oy, ox] = b[f] + sum over cb, i, j, c of
//                               wb[f/B, cb, i, j, c, f%B] * xb[n, cb, oy+i, ox+j, c]
//            (added in the order cb, i, j, c, starting from b[f]); a register tile holds
//            2 filter blocks x R output positions of one row (R <= 14): 28 accumulators, each
//            input value loaded once as a broadcast for 32 filters.
//   dw:      dwb[fb, cb, i, j, c, f] = sum over n, oy, ox of
//                               xb[n, cb, oy+i, ox+j, c] * db[n, fb, oy, ox, f]
//            (in the order n, oy, ox, from zero); a register tile holds 8 input channels x
//            2 filter blocks.
//   Each output element is computed by one task from start to end, so the result never
//   depends on how the tasks are split over threads.

#include <cstring>

// Without AVX-512 (the tests run this file there too) GCC warns that a 64-byte vector returned
// by value "changes the ABI": these functions are internal to this file and inlined, so no
// such value crosses a library boundary.
#pragma GCC diagnostic ignored "-Wpsabi"

typedef long long i64;

namespace {

constexpr int VBYTES = 64;  // one block: an AVX-512 register
constexpr int G = 2;        // forward and dw: filter blocks per register tile
constexpr int RMAX = 14;    // forward: output positions per register tile, at most
constexpr int CH = 8;       // dw: input channels per register tile
constexpr i64 DW_BAND_BYTES = i64(40) << 10;  // dw: bytes of x and dout rows a band keeps in L1

template <typename T>
struct Simd {
    typedef T V __attribute__((vector_size(VBYTES)));
    static constexpr int B = VBYTES / sizeof(T);
    static inline V load(const T* p) {
        V v;
        std::memcpy(&v, p, sizeof v);
        return v;
    }
    static inline void store(T* p, V v) { std::memcpy(p, &v, sizeof v); }
    static inline V zero() { return V{}; }
};

// One register tile of the forward: g filter blocks (g <= G) x R positions starting at ox0 of
// row oy of image n.
template <typename T, int GG, int R>
void forward_tile(const T* xn, i64 Cb, i64 Hp, i64 Wp, const T* wf, i64 wstride, i64 kh,
                  i64 kw, const T* bias, i64 oy, i64 ox0, T* const* dst) {
    typedef Simd<T> S;
    typedef typename S::V V;
    constexpr int B = S::B;
    V acc[GG][R];
    for (int q = 0; q < GG; ++q) {
        const V bq = S::load(bias + q * B);
        for (int r = 0; r < R; ++r) acc[q][r] = bq;
    }
    for (i64 cb = 0; cb < Cb; ++cb) {
        for (i64 i = 0; i < kh; ++i) {
            const T* xrow = xn + ((cb * Hp + oy + i) * Wp + ox0) * B;
            const T* wrow = wf + (cb * kh + i) * kw * B * B;
            for (i64 j = 0; j < kw; ++j) {
                const T* xj = xrow + j * B;
                const T* wj = wrow + j * B * B;
                for (int c = 0; c < B; ++c) {
                    V wv[GG];
                    for (int q = 0; q < GG; ++q) wv[q] = S::load(wj + q * wstride + c * B);
                    for (int r = 0; r < R; ++r) {
                        const T s = xj[r * B + c];
                        for (int q = 0; q < GG; ++q) acc[q][r] += wv[q] * s;
                    }
                }
            }
        }
    }
    for (int q = 0; q < GG; ++q)
        for (int r = 0; r < R; ++r) S::store(dst[q] + r * B, acc[q][r]);
}

template <typename T, int GG>
void forward_row_chunk(int R, const T* xn, i64 Cb, i64 Hp, i64 Wp, const T* wf, i64 wstride,
                       i64 kh, i64 kw, const T* bias, i64 oy, i64 ox0, T* const* dst) {
#define TINYSPP_TILE(RR) \
    case RR: forward_tile<T, GG, RR>(xn, Cb, Hp, Wp, wf, wstride, kh, kw, bias, oy, ox0, dst); return;
    switch (R) {  // the tile width is a template argument: its accumulators stay in registers
        TINYSPP_TILE(1) TINYSPP_TILE(2) TINYSPP_TILE(3) TINYSPP_TILE(4) TINYSPP_TILE(5)
        TINYSPP_TILE(6) TINYSPP_TILE(7) TINYSPP_TILE(8) TINYSPP_TILE(9) TINYSPP_TILE(10)
        TINYSPP_TILE(11) TINYSPP_TILE(12) TINYSPP_TILE(13) TINYSPP_TILE(14)
        default: return;
    }
#undef TINYSPP_TILE
}

// Tasks t0..t1-1 of the forward: task t is output row t % oh of image and filter tile t / oh
// (image (t / oh) / tiles, filter blocks G * ((t / oh) % tiles) and on).
template <typename T>
void forward(const T* xb, i64 N, i64 Cb, i64 Hp, i64 Wp, const T* wb, i64 Fb, i64 kh,
             i64 kw, const T* bias, T* ob, i64 t0, i64 t1) {
    typedef Simd<T> S;
    constexpr int B = S::B;
    (void)N;
    const i64 oh = Hp - kh + 1, ow = Wp - kw + 1;
    const i64 tiles = (Fb + G - 1) / G;
    const i64 wstride = Cb * kh * kw * B * B;  // one filter block of wb
    const i64 chunks = (ow + RMAX - 1) / RMAX;
    const i64 R = (ow + chunks - 1) / chunks;  // the row in nearly equal chunks
    for (i64 t = t0; t < t1; ++t) {
        const i64 oy = t % oh, n = (t / oh) / tiles, fb = ((t / oh) % tiles) * G;
        const int gg = Fb - fb < G ? int(Fb - fb) : G;
        const T* xn = xb + n * Cb * Hp * Wp * B;
        const T* wf = wb + fb * wstride;
        for (i64 ox0 = 0; ox0 < ow; ox0 += R) {
            const int r = int(ow - ox0 < R ? ow - ox0 : R);
            T* dst[G];
            for (int q = 0; q < gg; ++q)
                dst[q] = ob + (((n * Fb + fb + q) * oh + oy) * ow + ox0) * B;
            if (gg == G)
                forward_row_chunk<T, G>(r, xn, Cb, Hp, Wp, wf, wstride, kh, kw, bias + fb * B,
                                        oy, ox0, dst);
            else
                forward_row_chunk<T, 1>(r, xn, Cb, Hp, Wp, wf, wstride, kh, kw, bias + fb * B,
                                        oy, ox0, dst);
        }
    }
}

// The block pair (fb, cb) of dwb (Fb, Cb, kh, kw, B, B) -> dw (F, C, kh, kw), read in order.
template <typename T>
void unpack_pair(const T* dwb, i64 F, i64 C, i64 kh, i64 kw, T* dw, i64 fb, i64 cb) {
    constexpr int B = Simd<T>::B;
    const i64 Cb = (C + B - 1) / B;
    const T* src = dwb + (fb * Cb + cb) * kh * kw * B * B;
    for (i64 i = 0; i < kh; ++i)
        for (i64 j = 0; j < kw; ++j)
            for (int c = 0; c < B; ++c)
                for (int f = 0; f < B; ++f, ++src)
                    if (fb * B + f < F && cb * B + c < C)
                        dw[(((fb * B + f) * C + cb * B + c) * kh + i) * kw + j] = *src;
}

// dwb -> dw for filter blocks fb0..fb1-1
template <typename T>
void unpack_weights(const T* dwb, i64 F, i64 C, i64 kh, i64 kw, T* dw, i64 fb0, i64 fb1) {
    constexpr int B = Simd<T>::B;
    for (i64 fb = fb0; fb < fb1; ++fb)
        for (i64 cb = 0; cb < (C + B - 1) / B; ++cb) unpack_pair(dwb, F, C, kh, kw, dw, fb, cb);
}

// One register tile of dw: CH input channels (from c0) x GG filter blocks at kernel offset
// (i, j), output rows oy0..oy1-1 of image n added to what dst holds.
template <typename T, int GG>
void dw_tile(const T* xn, i64 Wp, const T* const* dn, i64 Wd, i64 oy0, i64 oy1, i64 ow,
             i64 i, i64 j, int c0, T* const* dst) {
    typedef Simd<T> S;
    typedef typename S::V V;
    constexpr int B = S::B;
    V acc[CH][GG];
    for (int c = 0; c < CH; ++c)
        for (int q = 0; q < GG; ++q) acc[c][q] = S::load(dst[q] + (c0 + c) * B);
    for (i64 oy = oy0; oy < oy1; ++oy) {
        const T* xr = xn + ((oy + i) * Wp + j) * B + c0;
        for (i64 ox = 0; ox < ow; ++ox) {
            V dv[GG];
            for (int q = 0; q < GG; ++q) dv[q] = S::load(dn[q] + (oy * Wd + ox) * B);
            for (int c = 0; c < CH; ++c) {
                const T s = xr[ox * B + c];
                for (int q = 0; q < GG; ++q) acc[c][q] += dv[q] * s;
            }
        }
    }
    for (int c = 0; c < CH; ++c)
        for (int q = 0; q < GG; ++q) S::store(dst[q] + (c0 + c) * B, acc[c][q]);
}

// Tasks t0..t1-1 of dw, task t = filter tile t / Cb (G blocks), input block t % Cb: every
// kernel offset and channel of that pair. db (N, Fb, Hd, Wd, B) holds dout at offset off
// (the input gradient's padded copy of dout serves both). The images, and bands of DW_ROWS
// output rows in each, are taken in turn (a band's rows of x and dout stay in the L1 cache
// while every kernel offset uses them); the tile's sums are kept in dwb in between, so every
// element is still summed in the order n, oy, ox.
// With dw not null, each task also writes its finished blocks to dw (F, C, kh, kw).
template <typename T>
void weight_grad(const T* xb, i64 N, i64 Cb, i64 Hp, i64 Wp, const T* db, i64 Fb, i64 Hd,
                 i64 Wd, i64 off, i64 kh, i64 kw, T* dwb, i64 t0, i64 t1, i64 F, i64 C,
                 T* dw) {
    constexpr int B = Simd<T>::B;
    const i64 oh = Hp - kh + 1, ow = Wp - kw + 1;
    // rows per band: the band's x rows and the G dout rows in about DW_BAND_BYTES
    const i64 row_bytes = (Wp + G * Wd) * B * i64(sizeof(T));
    i64 rows = DW_BAND_BYTES / row_bytes - kh + 1;
    rows = rows < 1 ? 1 : rows;
    const i64 bands = (oh + rows - 1) / rows;
    rows = (oh + bands - 1) / bands;  // the rows in nearly equal bands
    for (i64 t = t0; t < t1; ++t) {
        const i64 fb = (t / Cb) * G, cb = t % Cb;
        const int gg = Fb - fb < G ? int(Fb - fb) : G;
        T* dst[G];
        for (int q = 0; q < gg; ++q) {
            dst[q] = dwb + ((fb + q) * Cb + cb) * kh * kw * B * B;
            std::memset(dst[q], 0, sizeof(T) * kh * kw * B * B);
        }
        for (i64 n = 0; n < N; ++n) {
            const T* xn = xb + (n * Cb + cb) * Hp * Wp * B;
            const T* dn[G];
            for (int q = 0; q < gg; ++q)
                dn[q] = db + (((n * Fb + fb + q) * Hd + off) * Wd + off) * B;
            for (i64 oy0 = 0; oy0 < oh; oy0 += rows) {
                const i64 oy1 = oy0 + rows < oh ? oy0 + rows : oh;
                for (i64 i = 0; i < kh; ++i)
                    for (i64 j = 0; j < kw; ++j)
                        for (int c0 = 0; c0 < B; c0 += CH) {
                            T* d[G];
                            for (int q = 0; q < gg; ++q) d[q] = dst[q] + (i * kw + j) * B * B;
                            if (gg == G)
                                dw_tile<T, G>(xn, Wp, dn, Wd, oy0, oy1, ow, i, j, c0, d);
                            else
                                dw_tile<T, 1>(xn, Wp, dn, Wd, oy0, oy1, ow, i, j, c0, d);
                        }
            }
        }
        if (dw)
            for (int q = 0; q < gg; ++q) unpack_pair(dwb, F, C, kh, kw, dw, fb + q, cb);
    }
}

// x (N, C, H, W) -> xb (N, Cb, H + 2*pad, W + 2*pad, B), zeros outside x: rows r0..r1-1 of
// the padded images, row r = n * (H + 2*pad) + y, in every channel block.
template <typename T>
void pack_input(const T* x, i64 C, i64 H, i64 W, i64 pad, i64 Cb, T* xb, i64 r0, i64 r1) {
    constexpr int B = Simd<T>::B;
    const i64 Hp = H + 2 * pad, Wp = W + 2 * pad;
    for (i64 r = r0; r < r1; ++r) {
        const i64 n = r / Hp, yp = r % Hp, y = yp - pad;
        for (i64 cb = 0; cb < Cb; ++cb) {
            T* drow = xb + ((n * Cb + cb) * Hp + yp) * Wp * B;
            std::memset(drow, 0, sizeof(T) * Wp * B);
            if (y < 0 || y >= H) continue;
            const int m = C - cb * B < B ? int(C - cb * B) : B;
            for (int c = 0; c < m; ++c) {
                const T* srow = x + ((n * C + cb * B + c) * H + y) * W;
                for (i64 q = 0; q < W; ++q) drow[(q + pad) * B + c] = srow[q];
            }
        }
    }
}

// ob (N, Fb, oh, ow, B) -> out (N, F, oh, ow): rows r0..r1-1, row r = n * oh + oy, in every
// filter block; a row's blocks (a cache line each) are read in order and each channel's row
// written whole.
template <typename T>
void unpack_output(const T* ob, i64 F, i64 Fb, i64 oh, i64 ow, T* out, i64 r0, i64 r1) {
    constexpr int B = Simd<T>::B;
    for (i64 r = r0; r < r1; ++r) {
        const i64 n = r / oh, oy = r % oh;
        for (i64 fb = 0; fb < Fb; ++fb) {
            const int m = F - fb * B < B ? int(F - fb * B) : B;
            const T* src = ob + ((n * Fb + fb) * oh + oy) * ow * B;
            T* dst = out + ((n * F + fb * B) * oh + oy) * ow;
            for (int f = 0; f < m; ++f)
                for (i64 q = 0; q < ow; ++q) dst[f * oh * ow + q] = src[q * B + f];
        }
    }
}

// w (F, C, kh, kw) -> wb (Fb, Cb, kh, kw, B, B) (see the top): filter blocks fb0..fb1-1, written
// in the blocks' order (the reads of one block stay within a few cache lines of B rows of w).
template <typename T>
void pack_weights(const T* w, i64 F, i64 C, i64 kh, i64 kw, T* wb, i64 fb0, i64 fb1) {
    constexpr int B = Simd<T>::B;
    const i64 Cb = (C + B - 1) / B;
    T* dst = wb + fb0 * Cb * kh * kw * B * B;
    for (i64 fb = fb0; fb < fb1; ++fb)
        for (i64 cb = 0; cb < Cb; ++cb)
            for (i64 i = 0; i < kh; ++i)
                for (i64 j = 0; j < kw; ++j)
                    for (int c = 0; c < B; ++c)
                        for (int f = 0; f < B; ++f) {
                            const i64 ff = fb * B + f, cc = cb * B + c;
                            *dst++ = ff < F && cc < C ? w[((ff * C + cc) * kh + i) * kw + j] : T(0);
                        }
}

// wb (Fb, Cb, kh, kw, B, B) -> wt (Cb, Fb, kh, kw, B, B), the blocks of the input gradient's
// filters: wt[cb, fb, i, j, f, c] = wb[fb, cb, kh-1-i, kw-1-j, c, f] (each B x B block
// transposed); blocks cb0..cb1-1 of wt.
template <typename T>
void turn_weights(const T* wb, i64 Fb, i64 Cb, i64 kh, i64 kw, T* wt, i64 cb0, i64 cb1) {
    constexpr int B = Simd<T>::B;
    for (i64 cb = cb0; cb < cb1; ++cb)
        for (i64 fb = 0; fb < Fb; ++fb)
            for (i64 i = 0; i < kh; ++i)
                for (i64 j = 0; j < kw; ++j) {
                    const T* src =
                        wb + (((fb * Cb + cb) * kh + kh - 1 - i) * kw + kw - 1 - j) * B * B;
                    T* dst = wt + (((cb * Fb + fb) * kh + i) * kw + j) * B * B;
                    for (int f = 0; f < B; ++f)
                        for (int c = 0; c < B; ++c) dst[f * B + c] = src[c * B + f];
                }
}

}  // namespace

extern "C" {

#define TINYSPP_BLOCKED(T, SUFFIX)                                                            \
    void blocked_forward_##SUFFIX(const T* xb, i64 N, i64 Cb, i64 Hp, i64 Wp, const T* wb,    \
                                  i64 Fb, i64 kh, i64 kw, const T* bias, T* ob, i64 t0,      \
                                  i64 t1) {                                                   \
        forward<T>(xb, N, Cb, Hp, Wp, wb, Fb, kh, kw, bias, ob, t0, t1);                      \
    }                                                                                         \
    void blocked_dw_##SUFFIX(const T* xb, i64 N, i64 Cb, i64 Hp, i64 Wp, const T* db, i64 Fb, \
                             i64 Hd, i64 Wd, i64 off, i64 kh, i64 kw, T* dwb, i64 t0, i64 t1, \
                             i64 F, i64 C, T* dw) {                                           \
        weight_grad<T>(xb, N, Cb, Hp, Wp, db, Fb, Hd, Wd, off, kh, kw, dwb, t0, t1, F, C, dw); \
    }                                                                                         \
    void blocked_pack_input_##SUFFIX(const T* x, i64 C, i64 H, i64 W, i64 pad, i64 Cb, T* xb, \
                                     i64 r0, i64 r1) {                                        \
        pack_input<T>(x, C, H, W, pad, Cb, xb, r0, r1);                                       \
    }                                                                                         \
    void blocked_unpack_output_##SUFFIX(const T* ob, i64 F, i64 Fb, i64 oh, i64 ow, T* out,   \
                                        i64 r0, i64 r1) {                                     \
        unpack_output<T>(ob, F, Fb, oh, ow, out, r0, r1);                                     \
    }                                                                                         \
    void blocked_pack_weights_##SUFFIX(const T* w, i64 F, i64 C, i64 kh, i64 kw, T* wb,     \
                                       i64 fb0, i64 fb1) {                                    \
        pack_weights<T>(w, F, C, kh, kw, wb, fb0, fb1);                                       \
    }                                                                                         \
    void blocked_turn_weights_##SUFFIX(const T* wb, i64 Fb, i64 Cb, i64 kh, i64 kw, T* wt,    \
                                       i64 cb0, i64 cb1) {                                    \
        turn_weights<T>(wb, Fb, Cb, kh, kw, wt, cb0, cb1);                                    \
    }                                                                                         \
    void blocked_unpack_weights_##SUFFIX(const T* dwb, i64 F, i64 C, i64 kh, i64 kw, T* dw,   \
                                         i64 fb0, i64 fb1) {                                  \
        unpack_weights<T>(dwb, F, C, kh, kw, dw, fb0, fb1);                                   \
    }

TINYSPP_BLOCKED(float, f32)
TINYSPP_BLOCKED(double, f64)

}  // extern "C"
