// pyramid_pool.cu: spatial pyramid pooling (He et al. 2014) as plain CUDA C.
//
// Bins (paper Sec. 2.3 and Appendix; tinyspp/bins.py). A level with n bins per side splits an
// axis of length a into n half-open ranges [start, end). Image SPP reads them from a bin table
// built on the host by tinyspp.bins.bin_table (any mode: adaptive, paper, caffe). Region SPP
// computes them here, for each RoI, with the Appendix rule in integers only, the same
// expression as tinyspp.bins.bin_rule so CPU and GPU agree bit for bit:
//     start_i = (i * a) / n            end_i = ((i + 1) * a + n - 1) / n
//
// Output layout (the library's): out (N, D), D = C * M, M = sum over levels of n*n. Level l
// starts at column C * bin0[l] (bin0 = bins of the levels before it); inside a level the
// (C, n, n) block is channel-major: column = C * bin0[l] + c * n*n + by * n + bx.
//
// Thread-to-output mapping: one thread per output element, grid-stride loop over
// t = 0 .. N*C*M - 1, unravelled as (i, c, m) with the bin index m FASTEST. The ~50 bins of one
// channel plane (all levels) are therefore computed by neighbouring threads, which read the same
// plane while it is still in L1/L2; the price is scattered writes, but the output is ~100x smaller
// than the input. Region SPP does the same with i = RoI index.
//
// Max: argmax is the absolute flat index y * W + x within the (H, W) plane (for a RoI: within
// its image's plane), stored as int64 (long long). Ties go to the first maximal element in
// row-major order (strict >). NaN propagates and is sticky: the first NaN in the bin wins.
// Avg: the sum over the bin's cells in row-major order, then one division by the table's
// divisor (the bin's area; in Caffe mode Caffe's padded window, see mean_over_bin).
//
// The file uses no shared memory, no __syncthreads and no CUDA-only syntax, so that
// tinyspp/kernels/emulate.py can compile it unchanged as C++ and run every thread serially.
// It includes no headers, so NVRTC (cupy.RawModule) compiles it without include paths.

typedef long long index_t;

// Grid-stride loop: thread (blockIdx.x, threadIdx.x) handles t, t + gridDim.x*blockDim.x, ...
#define FOR_EACH_THREAD_ITEM(t, total)                                                        \
    for (index_t t = (index_t)blockIdx.x * blockDim.x + threadIdx.x; t < (total);             \
         t += (index_t)blockDim.x * gridDim.x)

// NaN test without <cmath>: NaN is the only value not equal to itself (valid without fast-math).
template <typename T>
__device__ inline bool is_nan(T v) { return v != v; }

// Which level bin m (0 <= m < M) belongs to: the last l with bin0[l] <= m (L is tiny).
__device__ inline index_t level_of_bin(index_t m, index_t L, const index_t* bin0) {
    index_t l = 0;
    while (l + 1 < L && m >= bin0[l + 1]) ++l;
    return l;
}

// Max over rows [y0, y1) and columns [x0, x1) of one (H, W) plane; writes the flat argmax.
template <typename T>
__device__ inline T max_over_bin(const T* plane, index_t W, index_t y0, index_t y1, index_t x0,
                                 index_t x1, index_t* arg) {
    T best = plane[y0 * W + x0];
    index_t best_at = y0 * W + x0;
    for (index_t y = y0; y < y1; ++y) {
        for (index_t x = x0; x < x1; ++x) {
            T v = plane[y * W + x];
            if (v > best || (is_nan(v) && !is_nan(best))) {
                best = v;
                best_at = y * W + x;
            }
        }
    }
    *arg = best_at;
    return best;
}

// Sum over rows [y0, y1) and columns [x0, x1) of one (H, W) plane, divided by `divisor`: the
// bin's area, except in Caffe mode, where it is Caffe's pool_size (the window clipped to the
// PADDED map, tinyspp.bins.bin_divisor), read from the bin table's `area`.
template <typename T>
__device__ inline T mean_over_bin(const T* plane, index_t W, index_t y0, index_t y1, index_t x0,
                                  index_t x1, index_t divisor) {
    T sum = 0;
    for (index_t y = y0; y < y1; ++y)
        for (index_t x = x0; x < x1; ++x) sum += plane[y * W + x];
    return sum / (T)divisor;
}

// ---------------------------------------------------------------------------------------------
// Image SPP forward: all levels in one launch. Threads: N * C * M, t -> (i, c, m), m fastest.
// Bin m covers rows [bin_y0[m], bin_y1[m]) and columns [bin_x0[m], bin_x1[m]); bin_area[m] is
// what average pooling divides by.
// level_n[l] bins per side and bin0[l] first bin of level l (l < L). argmax unused for avg.
template <typename T>
__device__ void spp_forward_body(const T* x, index_t N, index_t C, index_t H, index_t W,
                                 index_t L, const index_t* level_n, const index_t* bin0,
                                 index_t M, const index_t* bin_y0, const index_t* bin_y1,
                                 const index_t* bin_x0, const index_t* bin_x1,
                                 const index_t* bin_area, index_t pool_max, T* out,
                                 index_t* argmax) {
    FOR_EACH_THREAD_ITEM(t, N * C * M) {
        index_t m = t % M;
        index_t c = (t / M) % C;
        index_t i = t / (M * C);
        index_t l = level_of_bin(m, L, bin0);
        index_t col = C * bin0[l] + c * level_n[l] * level_n[l] + (m - bin0[l]);
        index_t o = i * C * M + col;
        const T* plane = x + (i * C + c) * H * W;
        if (pool_max) {
            out[o] = max_over_bin(plane, W, bin_y0[m], bin_y1[m], bin_x0[m], bin_x1[m],
                                  &argmax[o]);
        } else {
            out[o] = mean_over_bin(plane, W, bin_y0[m], bin_y1[m], bin_x0[m], bin_x1[m],
                                   bin_area[m]);
        }
    }
}

// Image SPP backward as a GATHER: one thread per input cell (i, c, y, x) sums the gradient of
// every bin that covers it (max: only bins whose argmax is this cell; avg: dout / bin_area).
// Why gather, not a scatter with atomicAdd: the bins covering a cell are few (about one or two
// per axis per level) and easy to find from the table, every dx element is written exactly once
// (no zero-fill, no atomics, a deterministic sum in level order), and avg needs no loop over
// the bin's cells. Assumes what bin_table guarantees: within a level, the bins of one row (by)
// share y0/y1 and the bins of one column (bx) share x0/x1.
template <typename T>
__device__ void spp_backward_body(const T* dout, const index_t* argmax, index_t N, index_t C,
                                  index_t H, index_t W, index_t L, const index_t* level_n,
                                  const index_t* bin0, index_t M, const index_t* bin_y0,
                                  const index_t* bin_y1, const index_t* bin_x0,
                                  const index_t* bin_x1, const index_t* bin_area,
                                  index_t pool_max, T* dx) {
    FOR_EACH_THREAD_ITEM(t, N * C * H * W) {
        index_t x = t % W;
        index_t y = (t / W) % H;
        index_t c = (t / (W * H)) % C;
        index_t i = t / (W * H * C);
        index_t cell = y * W + x;
        T sum = 0;
        for (index_t l = 0; l < L; ++l) {
            index_t n = level_n[l];
            for (index_t by = 0; by < n; ++by) {
                index_t row = bin0[l] + by * n;  // first bin of this row of bins
                if (y < bin_y0[row] || y >= bin_y1[row]) continue;
                for (index_t bx = 0; bx < n; ++bx) {
                    index_t m = row + bx;
                    if (x < bin_x0[m] || x >= bin_x1[m]) continue;
                    index_t o = i * C * M + C * bin0[l] + c * n * n + by * n + bx;
                    if (pool_max) {
                        if (argmax[o] == cell) sum += dout[o];
                    } else {
                        sum += dout[o] / (T)bin_area[m];
                    }
                }
            }
        }
        dx[t] = sum;
    }
}

// ---------------------------------------------------------------------------------------------
// Region SPP: rois (R, 5) int64 rows [b, x0, y0, x1, y1], inclusive feature cells, validated on
// the host (0 <= b < N, so the kernels need no N). RoI r is pooled like image SPP of
// features[b, :, y0:y1+1, x0:x1+1] with adaptive bins over its own size (h, w). Bin (by, bx) of
// a level with n bins, in absolute cells:
__device__ inline void roi_bin(const index_t* roi, index_t n, index_t by, index_t bx,
                               index_t* y0, index_t* y1, index_t* x0, index_t* x1) {
    index_t h = roi[4] - roi[2] + 1;
    index_t w = roi[3] - roi[1] + 1;
    *y0 = roi[2] + (by * h) / n;
    *y1 = roi[2] + ((by + 1) * h + n - 1) / n;
    *x0 = roi[1] + (bx * w) / n;
    *x1 = roi[1] + ((bx + 1) * w + n - 1) / n;
}

// Region SPP forward. Threads: R * C * M, t -> (r, c, m), m fastest; out (R, C * M).
template <typename T>
__device__ void roi_spp_forward_body(const T* features, index_t C, index_t H, index_t W,
                                     const index_t* rois, index_t R, index_t L,
                                     const index_t* level_n, const index_t* bin0, index_t M,
                                     index_t pool_max, T* out, index_t* argmax) {
    FOR_EACH_THREAD_ITEM(t, R * C * M) {
        index_t m = t % M;
        index_t c = (t / M) % C;
        index_t r = t / (M * C);
        index_t l = level_of_bin(m, L, bin0);
        index_t n = level_n[l];
        index_t k = m - bin0[l];  // bin within the level: by * n + bx
        index_t y0, y1, x0, x1;
        roi_bin(rois + 5 * r, n, k / n, k % n, &y0, &y1, &x0, &x1);
        index_t o = r * C * M + C * bin0[l] + c * n * n + k;
        const T* plane = features + (rois[5 * r] * C + c) * H * W;
        if (pool_max) {
            out[o] = max_over_bin(plane, W, y0, y1, x0, x1, &argmax[o]);
        } else {
            out[o] = mean_over_bin(plane, W, y0, y1, x0, x1, (y1 - y0) * (x1 - x0));
        }
    }
}

// Region SPP backward as a SCATTER with atomicAdd: one thread per output element adds its
// gradient into dfeatures (zero-filled by the caller). Why scatter here, unlike image SPP: a
// feature cell can lie in any of thousands of overlapping RoIs, so a gather would scan all R
// RoIs for every cell; the scatter touches each bin once. Float sums in atomic order, so GPU
// results may differ from run to run in the last bits (exact in the serial emulation).
// atomicAdd on double needs sm_60 or newer.
template <typename T>
__device__ void roi_spp_backward_body(const T* dout, const index_t* argmax, const index_t* rois,
                                      index_t R, index_t C, index_t H, index_t W, index_t L,
                                      const index_t* level_n, const index_t* bin0, index_t M,
                                      index_t pool_max, T* dfeatures) {
    FOR_EACH_THREAD_ITEM(t, R * C * M) {
        index_t m = t % M;
        index_t c = (t / M) % C;
        index_t r = t / (M * C);
        index_t l = level_of_bin(m, L, bin0);
        index_t n = level_n[l];
        index_t k = m - bin0[l];
        index_t o = r * C * M + C * bin0[l] + c * n * n + k;
        T* plane = dfeatures + (rois[5 * r] * C + c) * H * W;
        if (pool_max) {
            // An index outside the plane cannot come from roi_spp_forward; skipping it keeps a
            // corrupted argmax from writing outside dfeatures.
            if (argmax[o] >= 0 && argmax[o] < H * W) atomicAdd(&plane[argmax[o]], dout[o]);
        } else {
            index_t y0, y1, x0, x1;
            roi_bin(rois + 5 * r, n, k / n, k % n, &y0, &y1, &x0, &x1);
            T g = dout[o] / (T)((y1 - y0) * (x1 - x0));
            for (index_t y = y0; y < y1; ++y)
                for (index_t x = x0; x < x1; ++x) atomicAdd(&plane[y * W + x], g);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points: one per kernel and dtype (f32 = float, f64 = double). Scalars are int64.

extern "C" __global__ void spp_forward_f32(const float* x, index_t N, index_t C, index_t H,
                                           index_t W, index_t L, const index_t* level_n,
                                           const index_t* bin0, index_t M, const index_t* bin_y0,
                                           const index_t* bin_y1, const index_t* bin_x0,
                                           const index_t* bin_x1, const index_t* bin_area,
                                           index_t pool_max, float* out, index_t* argmax) {
    spp_forward_body(x, N, C, H, W, L, level_n, bin0, M, bin_y0, bin_y1, bin_x0, bin_x1,
                     bin_area, pool_max, out, argmax);
}

extern "C" __global__ void spp_forward_f64(const double* x, index_t N, index_t C, index_t H,
                                           index_t W, index_t L, const index_t* level_n,
                                           const index_t* bin0, index_t M, const index_t* bin_y0,
                                           const index_t* bin_y1, const index_t* bin_x0,
                                           const index_t* bin_x1, const index_t* bin_area,
                                           index_t pool_max, double* out, index_t* argmax) {
    spp_forward_body(x, N, C, H, W, L, level_n, bin0, M, bin_y0, bin_y1, bin_x0, bin_x1,
                     bin_area, pool_max, out, argmax);
}

extern "C" __global__ void spp_backward_f32(const float* dout, const index_t* argmax, index_t N,
                                            index_t C, index_t H, index_t W, index_t L,
                                            const index_t* level_n, const index_t* bin0,
                                            index_t M, const index_t* bin_y0,
                                            const index_t* bin_y1, const index_t* bin_x0,
                                            const index_t* bin_x1, const index_t* bin_area,
                                            index_t pool_max, float* dx) {
    spp_backward_body(dout, argmax, N, C, H, W, L, level_n, bin0, M, bin_y0, bin_y1, bin_x0,
                      bin_x1, bin_area, pool_max, dx);
}

extern "C" __global__ void spp_backward_f64(const double* dout, const index_t* argmax, index_t N,
                                            index_t C, index_t H, index_t W, index_t L,
                                            const index_t* level_n, const index_t* bin0,
                                            index_t M, const index_t* bin_y0,
                                            const index_t* bin_y1, const index_t* bin_x0,
                                            const index_t* bin_x1, const index_t* bin_area,
                                            index_t pool_max, double* dx) {
    spp_backward_body(dout, argmax, N, C, H, W, L, level_n, bin0, M, bin_y0, bin_y1, bin_x0,
                      bin_x1, bin_area, pool_max, dx);
}

extern "C" __global__ void roi_spp_forward_f32(const float* features, index_t C, index_t H,
                                               index_t W, const index_t* rois, index_t R,
                                               index_t L, const index_t* level_n,
                                               const index_t* bin0, index_t M, index_t pool_max,
                                               float* out, index_t* argmax) {
    roi_spp_forward_body(features, C, H, W, rois, R, L, level_n, bin0, M, pool_max, out,
                         argmax);
}

extern "C" __global__ void roi_spp_forward_f64(const double* features, index_t C, index_t H,
                                               index_t W, const index_t* rois, index_t R,
                                               index_t L, const index_t* level_n,
                                               const index_t* bin0, index_t M, index_t pool_max,
                                               double* out, index_t* argmax) {
    roi_spp_forward_body(features, C, H, W, rois, R, L, level_n, bin0, M, pool_max, out,
                         argmax);
}

extern "C" __global__ void roi_spp_backward_f32(const float* dout, const index_t* argmax,
                                                const index_t* rois, index_t R, index_t C,
                                                index_t H, index_t W, index_t L,
                                                const index_t* level_n, const index_t* bin0,
                                                index_t M, index_t pool_max, float* dfeatures) {
    roi_spp_backward_body(dout, argmax, rois, R, C, H, W, L, level_n, bin0, M, pool_max,
                          dfeatures);
}

extern "C" __global__ void roi_spp_backward_f64(const double* dout, const index_t* argmax,
                                                const index_t* rois, index_t R, index_t C,
                                                index_t H, index_t W, index_t L,
                                                const index_t* level_n, const index_t* bin0,
                                                index_t M, index_t pool_max, double* dfeatures) {
    roi_spp_backward_body(dout, argmax, rois, R, C, H, W, L, level_n, bin0, M, pool_max,
                          dfeatures);
}
