// direct.cpp: the direct convolution of layers with few input channels (stride 1) for
// tinyspp.ops.conv2d_forward (up to 16 channels) / conv2d_backward (dw of a first layer).
//
// Loaded by tinyspp/kernels/direct.py (compiled once per machine, no -ffast-math; with -mfma
// where the CPU has FMA3) and used for NumPy float32/float64 arrays when the layer has at most
// a few input channels (tinyspp.ops.conv.DIRECT_MAX_CHANNELS). The readable algorithm is
// im2col + one GEMM (tinyspp/ops/conv.py); the tests compare this file with it and with the
// loop-by-loop formula. It computes the same sums in another order (so float32 results differ
// in the last bits, as any two BLAS libraries do):
//
//   forward: out[n, f, oy, ox] = b[f] + sum over c, i, j of w[f, c, i, j] * xpad[n, c, oy+i, ox+j]
//            (added in the order c, i, j, starting from b[f])
//   dw:      dw[f, c, i, j] += sum over n, oy, ox of dout[n, f, oy, ox] * xpad[n, c, oy+i, ox+j]
//            (each image's sums taken on their own, then added to dw image after image: the
//            result never depends on how the images are cut into calls)
//
// Why it is faster than im2col + GEMM for the first layer: its GEMM is tiny in one dimension
// (C*kh*kw = 75 for 3 channels of 5x5, F = 16 filters) and huge in the other (N*oh*ow), so BLAS
// spends its time packing and streaming the 25x larger columns through memory; here the padded
// image (a few KiB per channel) stays in the L1 cache and every value loaded is used by several
// filters (forward) or several kernel columns (dw), in SIMD registers, with no columns at all.
//
// Layouts: x (N, C, H, W), w (F, C, kh, kw), b (F,), out and dout (N, F, oh, ow), dw
// (F, C, kh, kw): all C-contiguous. stride 1 only; oh = H + 2*pad - kh + 1 (ow likewise).

#include <cstring>
#include <vector>

typedef long long i64;

namespace {

constexpr int VBYTES = 32;  // one AVX register: 8 float32 or 4 float64 lanes
constexpr int FG = 4;       // forward: filters per register block
constexpr int OB = 2;       // forward: output vectors per filter in a register block
constexpr int DG = 2;       // dw: filters per register block

template <typename T>
struct Simd {
    typedef T V __attribute__((vector_size(VBYTES)));
    static constexpr int L = VBYTES / sizeof(T);
    static inline V load(const T* p) {
        V v;
        std::memcpy(&v, p, sizeof v);  // an unaligned vector load
        return v;
    }
    static inline V splat(T s) {
        V v;
        for (int k = 0; k < L; ++k) v[k] = s;
        return v;
    }
    static inline T sum(V v) {
        T s = 0;
        for (int k = 0; k < L; ++k) s += v[k];
        return s;
    }
};

inline i64 round_up(i64 a, i64 m) { return (a + m - 1) / m * m; }

// The padded copy of one image: xpad[c, y, q] for y < H + 2*pad, q < Wq (Wq >= ow + kw - 1
// rounded so that every vector load of a padded row stays inside it); zero outside the image.
template <typename T>
void pad_image(const T* x, i64 C, i64 H, i64 W, i64 pad, i64 Hp, i64 Wq, T* xpad) {
    std::memset(xpad, 0, sizeof(T) * C * Hp * Wq);
    for (i64 c = 0; c < C; ++c)
        for (i64 y = 0; y < H; ++y)
            std::memcpy(xpad + (c * Hp + y + pad) * Wq + pad, x + (c * H + y) * W, sizeof(T) * W);
}

template <typename T>
void forward(const T* x, i64 N, i64 C, i64 H, i64 W, const T* w, i64 F, i64 kh, i64 kw,
             i64 pad, const T* b, T* out) {
    typedef Simd<T> S;
    typedef typename S::V V;
    constexpr int L = S::L;
    const i64 Hp = H + 2 * pad, oh = Hp - kh + 1, ow = W + 2 * pad - kw + 1;
    const i64 Wq = round_up(ow, OB * L) + kw - 1;
    const i64 groups = (F + FG - 1) / FG;
    // the weights as [group][c][i][j][q], q the filter within the group (zero past F)
    std::vector<T> wr(groups * C * kh * kw * FG, T(0));
    for (i64 f = 0; f < F; ++f)
        for (i64 r = 0; r < C * kh * kw; ++r)
            wr[((f / FG) * C * kh * kw + r) * FG + f % FG] = w[f * C * kh * kw + r];
    std::vector<T> xpad(C * Hp * Wq);
    for (i64 n = 0; n < N; ++n) {
        pad_image(x + n * C * H * W, C, H, W, pad, Hp, Wq, xpad.data());
        for (i64 g = 0; g < groups; ++g) {
            const T* wg = wr.data() + g * C * kh * kw * FG;
            for (i64 oy = 0; oy < oh; ++oy) {
                for (i64 ox0 = 0; ox0 < ow; ox0 += OB * L) {
                    V acc[FG][OB];
                    for (int q = 0; q < FG; ++q)
                        for (int o = 0; o < OB; ++o)
                            acc[q][o] = S::splat(g * FG + q < F ? b[g * FG + q] : T(0));
                    for (i64 c = 0; c < C; ++c) {
                        for (i64 i = 0; i < kh; ++i) {
                            const T* row = xpad.data() + (c * Hp + oy + i) * Wq + ox0;
                            const T* wp = wg + (c * kh + i) * kw * FG;
                            for (i64 j = 0; j < kw; ++j) {
                                V xv[OB];
                                for (int o = 0; o < OB; ++o) xv[o] = S::load(row + j + o * L);
                                for (int q = 0; q < FG; ++q) {
                                    const T s = wp[j * FG + q];
                                    for (int o = 0; o < OB; ++o) acc[q][o] += xv[o] * s;
                                }
                            }
                        }
                    }
                    for (int q = 0; q < FG && g * FG + q < F; ++q) {
                        T* dst = out + ((n * F + g * FG + q) * oh + oy) * ow;
                        for (int o = 0; o < OB; ++o) {
                            const i64 start = ox0 + o * L;
                            const i64 m = ow - start < L ? ow - start : L;
                            if (m <= 0) break;
                            std::memcpy(dst + start, &acc[q][o], sizeof(T) * m);
                        }
                    }
                }
            }
        }
    }
}

// dw of one image for kernels KW wide: dw[f, c, i, j] += sum over oy, ox of
// dpad[f, oy, ox] * xpad[c, oy + i, ox + j], dpad holding dout with rows padded to Wd (zeros)
template <typename T, int KW>
void dw_image(const T* xpad, i64 C, i64 Hp, i64 Wq, const T* dpad, i64 Fp, i64 kh, i64 oh,
              i64 Wd, i64 F, T* dw) {
    typedef Simd<T> S;
    typedef typename S::V V;
    constexpr int L = S::L;
    for (i64 f0 = 0; f0 < Fp; f0 += DG) {
        for (i64 c = 0; c < C; ++c) {
            for (i64 i = 0; i < kh; ++i) {
                V acc[DG][KW];
                for (int q = 0; q < DG; ++q)
                    for (int j = 0; j < KW; ++j) acc[q][j] = S::splat(T(0));
                for (i64 oy = 0; oy < oh; ++oy) {
                    const T* xr = xpad + (c * Hp + oy + i) * Wq;
                    const T* dr = dpad + (f0 * oh + oy) * Wd;
                    for (i64 ox = 0; ox < Wd; ox += L) {
                        V dv[DG];
                        for (int q = 0; q < DG; ++q) dv[q] = S::load(dr + q * oh * Wd + ox);
                        for (int j = 0; j < KW; ++j) {
                            const V xv = S::load(xr + ox + j);
                            for (int q = 0; q < DG; ++q) acc[q][j] += dv[q] * xv;
                        }
                    }
                }
                for (int q = 0; q < DG && f0 + q < F; ++q)
                    for (int j = 0; j < KW; ++j)
                        dw[(((f0 + q) * C + c) * kh + i) * KW + j] = S::sum(acc[q][j]);
            }
        }
    }
}

template <typename T, int KW>
void weight_grad(const T* x, i64 N, i64 C, i64 H, i64 W, const T* dout, i64 F, i64 kh,
                 i64 pad, T* dw) {
    typedef Simd<T> S;
    constexpr int L = S::L;
    const i64 Hp = H + 2 * pad, oh = Hp - kh + 1, ow = W + 2 * pad - KW + 1;
    const i64 Wd = round_up(ow, L), Wq = round_up(ow, OB * L) + KW - 1;
    const i64 Fp = round_up(F, DG);
    std::vector<T> xpad(C * Hp * Wq), dpad(Fp * oh * Wd, T(0)), part(F * C * kh * KW);
    for (i64 n = 0; n < N; ++n) {
        pad_image(x + n * C * H * W, C, H, W, pad, Hp, Wq, xpad.data());
        for (i64 f = 0; f < F; ++f)
            for (i64 oy = 0; oy < oh; ++oy)
                std::memcpy(dpad.data() + (f * oh + oy) * Wd,
                            dout + ((n * F + f) * oh + oy) * ow, sizeof(T) * ow);
        dw_image<T, KW>(xpad.data(), C, Hp, Wq, dpad.data(), Fp, kh, oh, Wd, F, part.data());
        for (i64 k = 0; k < F * C * kh * KW; ++k) dw[k] += part[k];
    }
}

template <typename T>
void weight_grad_any(const T* x, i64 N, i64 C, i64 H, i64 W, const T* dout, i64 F, i64 kh,
                    i64 kw, i64 pad, T* dw) {
    switch (kw) {  // the kernel width is a template argument: its accumulators stay in registers
        case 1: weight_grad<T, 1>(x, N, C, H, W, dout, F, kh, pad, dw); return;
        case 2: weight_grad<T, 2>(x, N, C, H, W, dout, F, kh, pad, dw); return;
        case 3: weight_grad<T, 3>(x, N, C, H, W, dout, F, kh, pad, dw); return;
        case 4: weight_grad<T, 4>(x, N, C, H, W, dout, F, kh, pad, dw); return;
        case 5: weight_grad<T, 5>(x, N, C, H, W, dout, F, kh, pad, dw); return;
        case 6: weight_grad<T, 6>(x, N, C, H, W, dout, F, kh, pad, dw); return;
        case 7: weight_grad<T, 7>(x, N, C, H, W, dout, F, kh, pad, dw); return;
        default: return;  // the glue never passes a wider kernel (direct.MAX_KERNEL)
    }
}

}  // namespace

extern "C" {

#define TINYSPP_DIRECT(T, SUFFIX)                                                              \
    void conv_direct_forward_##SUFFIX(const T* x, i64 N, i64 C, i64 H, i64 W, const T* w,       \
                                      i64 F, i64 kh, i64 kw, i64 pad, const T* b, T* out) {     \
        forward<T>(x, N, C, H, W, w, F, kh, kw, pad, b, out);                                    \
    }                                                                                            \
    void conv_direct_dw_##SUFFIX(const T* x, i64 N, i64 C, i64 H, i64 W, const T* dout, i64 F,  \
                                i64 kh, i64 kw, i64 pad, T* dw) {                               \
        weight_grad_any<T>(x, N, C, H, W, dout, F, kh, kw, pad, dw);                      \
    }

TINYSPP_DIRECT(float, f32)
TINYSPP_DIRECT(double, f64)

}  // extern "C"
