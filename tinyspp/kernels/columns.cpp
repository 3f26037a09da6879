// columns.cpp: im2col and col2im for tinyspp.ops.conv2d_forward / conv2d_backward on the CPU.
//
// Loaded by tinyspp/kernels/columns.py (compiled once per machine with the host C++ compiler,
// no -ffast-math) and used by tinyspp.ops.im2col / col2im for NumPy float32/float64 arrays.
// It computes exactly what the NumPy versions in tinyspp/ops/conv.py compute, bit for bit:
//
//   im2col: cols[(c*kh + i)*kw + j, (n*oh + oy)*ow + ox] = x[n, c, oy*s + i - pad, ox*s + j - pad]
//           (0 outside the image: the zero padding, never materialised here)
//   col2im: dx[n, c, y, x] = sum over every (i, j, oy, ox) that gathered pixel (y, x), added
//           in the order i, then j, starting from 0: the order of NumPy's kh*kw strided adds,
//           so each pixel sees the same float additions in the same order.
//
// Why it is faster than the NumPy versions, which are the readable ones:
//  * no padded copy of x (np.pad) and no padded gradient: the padding is a bounds test per row;
//  * NumPy's strided copy walks a 6-D view whose innermost run is one output row (ow numbers,
//    often 13 to 64), paying its per-run overhead every few elements; here one image plane
//    the N planes of one channel (N*H*W numbers) stay in the cache while the kh*kw rows
//    gathered from them are written, one after the other, straight through memory;
//  * col2im adds into the N planes of one channel of dx, in cache, instead of kh*kw strided
//    passes over the whole padded batch.
//
// Layouts: x and dx are C-contiguous (N, C, H, W). For im2col, cols points at column 0 of a
// block of N*oh*ow columns of a row-major matrix whose rows are ld elements apart
// (ld >= N*oh*ow): the whole matrix (ld = N*oh*ow), or one image block's columns of a batch's
// matrix. col2im reads element (r, q) of cols at cols[r*ld + q*cs]: any strided matrix, e.g.
// the transpose of a row-major (N*oh*ow, C*kh*kw) one (ld = 1, cs = C*kh*kw), which is how
// conv2d_backward computes its column gradients.

typedef long long i64;

namespace {

template <typename T>
void gather(const T* x, i64 N, i64 C, i64 H, i64 W, i64 kh, i64 kw, i64 s, i64 pad,
            i64 oh, i64 ow, T* cols, i64 ld) {
    // row by row of cols, so the writes stream through memory; the N planes of channel c that
    // a row reads (N*H*W numbers) stay in the cache while its kh*kw rows are written
    for (i64 c = 0; c < C; ++c) {
        for (i64 i = 0; i < kh; ++i) {
            for (i64 j = 0; j < kw; ++j) {
                T* row = cols + ((c * kh + i) * kw + j) * ld;
                // output columns ox whose input column ox*s + j - pad lies in [0, W)
                i64 lo = 0, hi = ow;
                while (lo < ow && lo * s + j - pad < 0) ++lo;
                while (hi > lo && (hi - 1) * s + j - pad >= W) --hi;
                // output rows oy whose input row oy*s + i - pad lies in [0, H)
                i64 ylo = 0, yhi = oh;
                while (ylo < oh && ylo * s + i - pad < 0) ++ylo;
                while (yhi > ylo && (yhi - 1) * s + i - pad >= H) --yhi;
                for (i64 n = 0; n < N; ++n) {
                    const T* plane = x + (n * C + c) * H * W;
                    if (s == 1 && ow == W) {
                        // stride 1 and rows as long as the image's ("same" padding): the valid
                        // rows are ONE shifted copy of the plane, then the columns that wrapped
                        // around an edge are set to 0
                        T* dst = row + n * oh * ow;
                        const i64 off = (i - pad) * W + (j - pad);
                        i64 d0 = ylo * ow, d1 = yhi * ow;
                        for (i64 d = 0; d < d0; ++d) dst[d] = T(0);
                        for (i64 d = d1; d < oh * ow; ++d) dst[d] = T(0);
                        const i64 c0 = d0 > -off ? d0 : -off;
                        const i64 c1 = d1 < H * W - off ? d1 : H * W - off;
                        for (i64 d = c0; d < c1; ++d) dst[d] = plane[d + off];
                        for (i64 oy = ylo; oy < yhi; ++oy) {
                            T* r = dst + oy * ow;
                            for (i64 ox = 0; ox < lo; ++ox) r[ox] = T(0);
                            for (i64 ox = hi; ox < ow; ++ox) r[ox] = T(0);
                        }
                        if (c0 > d0) for (i64 d = d0; d < c0; ++d) dst[d] = T(0);
                        if (c1 < d1) for (i64 d = c1; d < d1; ++d) dst[d] = T(0);
                        continue;
                    }
                    for (i64 oy = 0; oy < oh; ++oy) {
                        T* dst = row + (n * oh + oy) * ow;
                        const i64 y = oy * s + i - pad;
                        if (y < 0 || y >= H) {
                            for (i64 ox = 0; ox < ow; ++ox) dst[ox] = T(0);
                            continue;
                        }
                        const T* src = plane + y * W + j - pad;
                        for (i64 ox = 0; ox < lo; ++ox) dst[ox] = T(0);
                        if (s == 1) {
                            for (i64 ox = lo; ox < hi; ++ox) dst[ox] = src[ox];
                        } else {
                            for (i64 ox = lo; ox < hi; ++ox) dst[ox] = src[ox * s];
                        }
                        for (i64 ox = hi; ox < ow; ++ox) dst[ox] = T(0);
                    }
                }
            }
        }
    }
}

template <typename T>
void scatter(const T* cols, i64 ld, i64 cs, i64 N, i64 C, i64 H, i64 W, i64 kh, i64 kw, i64 s,
             i64 pad, i64 oh, i64 ow, T* dx) {
    // the reads stream through cols row by row; the N planes of channel c being summed stay
    // in the cache; every pixel receives its terms in the order i, then j (NumPy's order)
    for (i64 c = 0; c < C; ++c) {
        for (i64 n = 0; n < N; ++n) {
            T* plane = dx + (n * C + c) * H * W;
            for (i64 k = 0; k < H * W; ++k) plane[k] = T(0);
        }
        for (i64 i = 0; i < kh; ++i) {
            for (i64 j = 0; j < kw; ++j) {
                const T* row = cols + ((c * kh + i) * kw + j) * ld;
                i64 lo = 0, hi = ow;
                while (lo < ow && lo * s + j - pad < 0) ++lo;
                while (hi > lo && (hi - 1) * s + j - pad >= W) --hi;
                for (i64 n = 0; n < N; ++n) {
                    T* plane = dx + (n * C + c) * H * W;
                    for (i64 oy = 0; oy < oh; ++oy) {
                        const i64 y = oy * s + i - pad;
                        if (y < 0 || y >= H) continue;
                        const T* src = row + (n * oh + oy) * ow * cs;
                        T* dst = plane + y * W + j - pad;
                        if (s == 1 && cs == 1) {
                            for (i64 ox = lo; ox < hi; ++ox) dst[ox] += src[ox];
                        } else {
                            for (i64 ox = lo; ox < hi; ++ox) dst[ox * s] += src[ox * cs];
                        }
                    }
                }
            }
        }
    }
}

}  // namespace

extern "C" {

void im2col_f32(const float* x, i64 N, i64 C, i64 H, i64 W, i64 kh, i64 kw, i64 s, i64 pad,
                i64 oh, i64 ow, float* cols, i64 ld) {
    gather(x, N, C, H, W, kh, kw, s, pad, oh, ow, cols, ld);
}

void im2col_f64(const double* x, i64 N, i64 C, i64 H, i64 W, i64 kh, i64 kw, i64 s, i64 pad,
                i64 oh, i64 ow, double* cols, i64 ld) {
    gather(x, N, C, H, W, kh, kw, s, pad, oh, ow, cols, ld);
}

void col2im_f32(const float* cols, i64 ld, i64 cs, i64 N, i64 C, i64 H, i64 W, i64 kh, i64 kw,
                i64 s, i64 pad, i64 oh, i64 ow, float* dx) {
    scatter(cols, ld, cs, N, C, H, W, kh, kw, s, pad, oh, ow, dx);
}

void col2im_f64(const double* cols, i64 ld, i64 cs, i64 N, i64 C, i64 H, i64 W, i64 kh, i64 kw,
                i64 s, i64 pad, i64 oh, i64 ow, double* dx) {
    scatter(cols, ld, cs, N, C, H, W, kh, kw, s, pad, oh, ow, dx);
}

}  // extern "C"
