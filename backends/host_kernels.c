/* Fused host kernels of the NumPy adapter (backends/host_kernels.py builds and loads this file).
 *
 * Each kernel does in one or two passes over cache-resident data what NumPy does in four to
 * seven passes over whole arrays. The readable references, which define what each computes,
 * are backends/norm.py (layer norm), backends/softmax.py (column softmax),
 * backends/fused.py (ReLU and its gradient), backends/winograd.py (Winograd tile transforms) and
 * backends/fused_train.py (batch norm); tests/backends/test_host_kernels.py checks every kernel
 * against them, in float32 and float64.
 *
 * Work is split by rows (layer norm), batches (softmax) or flat ranges (ReLU) by the caller's
 * thread pool; a row's arithmetic does not depend on the split, so results are the same for any
 * thread count. Reductions use "omp simd" (compiled with -fopenmp-simd: vector lanes, no OpenMP
 * runtime), a fixed order for a given build.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, pthreads (host_pool.c) under -std=c99 */
#include <math.h>
#include <stddef.h>
#include <string.h>

typedef long long i64;

#include "host_gemm.c"

#define NNX_KERNELS(T, SUF, SQRT, LOG)                                                              \
/* Layer norm over rows of x (rows, n): xhat = (x - mean) * invstd, y = xhat * w + b (w, b may    \
 * be NULL). Biased variance of the centred row (two passes, as the reference). */                \
void nnx_ln_fwd_##SUF(const T* x, const T* w, const T* b, i64 rows, i64 n, double eps, T* y,     \
                      T* xhat, T* invstd) {                                                         \
    for (i64 r = 0; r < rows; ++r) {                                                                \
        const T* xr = x + r * n;                                                                    \
        T* hr = xhat + r * n;                                                                       \
        T* yr = y + r * n;                                                                          \
        T s = 0;                                                                                    \
        _Pragma("omp simd reduction(+:s)")                                                          \
        for (i64 k = 0; k < n; ++k) s += xr[k];                                                     \
        const T mean = s / (T)n;                                                                    \
        T v = 0;                                                                                    \
        _Pragma("omp simd reduction(+:v)")                                                          \
        for (i64 k = 0; k < n; ++k) { const T d = xr[k] - mean; v += d * d; }                     \
        const T inv = (T)1 / SQRT(v / (T)n + (T)eps);                                               \
        invstd[r] = inv;                                                                            \
        if (w && b) {                                                                               \
            _Pragma("omp simd")                                                                     \
            for (i64 k = 0; k < n; ++k) { const T h = (xr[k] - mean) * inv; hr[k] = h; yr[k] = h * w[k] + b[k]; } \
        } else if (w) {                                                                             \
            _Pragma("omp simd")                                                                     \
            for (i64 k = 0; k < n; ++k) { const T h = (xr[k] - mean) * inv; hr[k] = h; yr[k] = h * w[k]; } \
        } else if (b) {                                                                             \
            _Pragma("omp simd")                                                                     \
            for (i64 k = 0; k < n; ++k) { const T h = (xr[k] - mean) * inv; hr[k] = h; yr[k] = h + b[k]; } \
        } else {                                                                                    \
            _Pragma("omp simd")                                                                     \
            for (i64 k = 0; k < n; ++k) { const T h = (xr[k] - mean) * inv; hr[k] = h; yr[k] = h; } \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* Its input gradient: g = dy * w (w may be NULL), dx = (g - mean(g) - xhat * mean(g * xhat)) *   \
 * invstd. The parameter gradients (column sums) stay with the caller. */                          \
void nnx_ln_bwd_##SUF(const T* dy, const T* xhat, const T* invstd, const T* w, i64 rows, i64 n,   \
                      T* dx) {                                                                      \
    const T inv_n = (T)1 / (T)n;                                                                    \
    for (i64 r = 0; r < rows; ++r) {                                                                \
        const T* d = dy + r * n;                                                                    \
        const T* h = xhat + r * n;                                                                  \
        T* o = dx + r * n;                                                                          \
        T m1 = 0, m2 = 0;                                                                           \
        if (w) {                                                                                    \
            _Pragma("omp simd reduction(+:m1, m2)")                                                 \
            for (i64 k = 0; k < n; ++k) { const T g = d[k] * w[k]; m1 += g; m2 += g * h[k]; }     \
        } else {                                                                                    \
            _Pragma("omp simd reduction(+:m1, m2)")                                                 \
            for (i64 k = 0; k < n; ++k) { m1 += d[k]; m2 += d[k] * h[k]; }                         \
        }                                                                                           \
        m1 *= inv_n;                                                                                \
        m2 *= inv_n;                                                                                \
        const T is = invstd[r];                                                                     \
        if (w) {                                                                                    \
            _Pragma("omp simd")                                                                     \
            for (i64 k = 0; k < n; ++k) o[k] = (d[k] * w[k] - m1 - h[k] * m2) * is;                 \
        } else {                                                                                    \
            _Pragma("omp simd")                                                                     \
            for (i64 k = 0; k < n; ++k) o[k] = (d[k] - m1 - h[k] * m2) * is;                        \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* Column softmax of s (batches, S, L), first half: m = max down each column (NaN propagates;     \
 * a non-finite max counts as 0, as the reference), s -= m in place. The caller takes exp in place \
 * (NumPy's vectorised exp), then calls the second half. */                                        \
void nnx_colmax_sub_##SUF(T* s, i64 batches, i64 S, i64 L, T* m) {                                \
    for (i64 bi = 0; bi < batches; ++bi) {                                                          \
        T* sb = s + bi * S * L;                                                                     \
        T* mb = m + bi * L;                                                                         \
        for (i64 l = 0; l < L; ++l) mb[l] = sb[l];                                                  \
        for (i64 i = 1; i < S; ++i) {                                                               \
            const T* row = sb + i * L;                                                              \
            _Pragma("omp simd")                                                                     \
            for (i64 l = 0; l < L; ++l) mb[l] = (row[l] > mb[l] || row[l] != row[l]) ? row[l] : mb[l]; \
        }                                                                                           \
        for (i64 l = 0; l < L; ++l) if (!isfinite(mb[l])) mb[l] = 0;                                \
        for (i64 i = 0; i < S; ++i) {                                                               \
            T* row = sb + i * L;                                                                    \
            _Pragma("omp simd")                                                                     \
            for (i64 l = 0; l < L; ++l) row[l] -= mb[l];                                            \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* Second half: z = sum down each column of e = exp(s - m); e *= 1/z (all-masked columns, z = 0,   \
 * stay 0; a NaN z makes the column NaN); lse = log(z) + m, +inf where z = 0. m: the max. */       \
void nnx_colsum_scale_##SUF(T* e, i64 batches, i64 S, i64 L, const T* m, T* lse, T* z) {          \
    for (i64 bi = 0; bi < batches; ++bi) {                                                          \
        T* eb = e + bi * S * L;                                                                     \
        T* zb = z + bi * L;                                                                         \
        for (i64 l = 0; l < L; ++l) zb[l] = 0;                                                      \
        for (i64 i = 0; i < S; ++i) {                                                               \
            const T* row = eb + i * L;                                                              \
            _Pragma("omp simd")                                                                     \
            for (i64 l = 0; l < L; ++l) zb[l] += row[l];                                            \
        }                                                                                           \
        for (i64 l = 0; l < L; ++l) {                                                               \
            const T zl = zb[l];                                                                     \
            lse[bi * L + l] = zl == 0 ? (T)INFINITY : LOG(zl) + m[bi * L + l];                     \
            zb[l] = zl == 0 ? (T)1 : (T)1 / zl;                                                     \
        }                                                                                           \
        for (i64 i = 0; i < S; ++i) {                                                               \
            T* row = eb + i * L;                                                                    \
            _Pragma("omp simd")                                                                     \
            for (i64 l = 0; l < L; ++l) row[l] *= zb[l];                                            \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* Column softmax backward on (batches, S, L), in place on dp: dp = p * (dp - colsum(dp * p)).    \
 * c is scratch of L entries. */                                                                    \
void nnx_softmax_cols_bwd_##SUF(T* dp, const T* p, i64 batches, i64 S, i64 L, T* c) {             \
    for (i64 bi = 0; bi < batches; ++bi) {                                                          \
        T* db = dp + bi * S * L;                                                                    \
        const T* pb = p + bi * S * L;                                                               \
        for (i64 l = 0; l < L; ++l) c[l] = 0;                                                       \
        for (i64 i = 0; i < S; ++i) {                                                               \
            const T* dr = db + i * L;                                                               \
            const T* pr = pb + i * L;                                                               \
            _Pragma("omp simd")                                                                     \
            for (i64 l = 0; l < L; ++l) c[l] += dr[l] * pr[l];                                      \
        }                                                                                           \
        for (i64 i = 0; i < S; ++i) {                                                               \
            T* dr = db + i * L;                                                                     \
            const T* pr = pb + i * L;                                                               \
            _Pragma("omp simd")                                                                     \
            for (i64 l = 0; l < L; ++l) dr[l] = pr[l] * (dr[l] - c[l]);                             \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* z = relu(x + b) over rows (rows, n), b (n,) or NULL; NaN propagates as torch.relu; z may be x. */ \
void nnx_bias_relu_fwd_##SUF(const T* x, const T* b, i64 rows, i64 n, T* z) {                     \
    for (i64 r = 0; r < rows; ++r) {                                                                \
        const T* xr = x + r * n;                                                                    \
        T* zr = z + r * n;                                                                          \
        if (b) {                                                                                    \
            _Pragma("omp simd")                                                                     \
            for (i64 k = 0; k < n; ++k) { const T v = xr[k] + b[k]; zr[k] = (v > 0 || v != v) ? v : (T)0; } \
        } else {                                                                                    \
            _Pragma("omp simd")                                                                     \
            for (i64 k = 0; k < n; ++k) { const T v = xr[k]; zr[k] = (v > 0 || v != v) ? v : (T)0; } \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* ReLU's gradient from its saved output y: d = g where y > 0, else 0 (d may be g). */            \
void nnx_relu_bwd_##SUF(const T* g, const T* y, i64 n, T* d) {                                     \
    _Pragma("omp simd")                                                                             \
    for (i64 i = 0; i < n; ++i) d[i] = y[i] > 0 ? g[i] : (T)0;                                      \
}

NNX_KERNELS(float, f32, sqrtf, logf)
NNX_KERNELS(double, f64, sqrt, log)

/* Winograd F(2x2, 3x3) tile transforms (backends/winograd.py is the reference, for any tile size).
 * Planes: (16, channels, N * th * tw), plane k = 4 * r + s for tile entry (r, s). */
#define NNX_WINOGRAD(T, SUF)                                                                        \
/* V = B^T d B of every 4x4 input tile of samples [n0, n1) of x (N, C, H, W); tile (ti, tj) starts \
 * at row 2 ti - top, column 2 tj - left; entries outside x are 0. scratch: 8 (2 tw + 2) entries. */ \
void nnx_wino2_in_##SUF(const T* x, i64 n0, i64 n1, i64 N, i64 C, i64 H, i64 W, i64 top, i64 left, \
                        i64 th, i64 tw, T* V, T* scratch) {                                          \
    const i64 P = th * tw, plane = C * N * P, wp = 2 * tw + 2;                                      \
    T* rows = scratch;                                                                              \
    T* t = scratch + 4 * wp;                                                                        \
    for (i64 c = 0; c < C; ++c) for (i64 n = n0; n < n1; ++n) {                                    \
        const T* xc = x + (n * C + c) * H * W;                                                      \
        T* vout = V + c * N * P + n * P;                                                            \
        for (i64 ti = 0; ti < th; ++ti) {                                                           \
            for (i64 r = 0; r < 4; ++r) {                                                           \
                const i64 hi = 2 * ti + r - top;                                                    \
                T* row = rows + r * wp;                                                             \
                if (hi < 0 || hi >= H) { for (i64 j = 0; j < wp; ++j) row[j] = 0; continue; }       \
                const T* xr = xc + hi * W;                                                          \
                for (i64 j = 0; j < wp; ++j) { const i64 wi = j - left; row[j] = (wi >= 0 && wi < W) ? xr[wi] : (T)0; } \
            }                                                                                       \
            _Pragma("omp simd")                                                                     \
            for (i64 j = 0; j < wp; ++j) { /* B^T down the rows */                                  \
                const T d0 = rows[j], d1 = rows[wp + j], d2 = rows[2 * wp + j], d3 = rows[3 * wp + j]; \
                t[j] = d0 - d2; t[wp + j] = d1 + d2; t[2 * wp + j] = d2 - d1; t[3 * wp + j] = d1 - d3; \
            }                                                                                       \
            for (i64 r = 0; r < 4; ++r) { /* B along the columns */                                 \
                const T* tr = t + r * wp;                                                           \
                T* o0 = vout + (4 * r) * plane + ti * tw;                                           \
                T* o1 = o0 + plane;                                                                 \
                T* o2 = o1 + plane;                                                                 \
                T* o3 = o2 + plane;                                                                 \
                _Pragma("omp simd")                                                                 \
                for (i64 tj = 0; tj < tw; ++tj) {                                                   \
                    const T a0 = tr[2 * tj], a1 = tr[2 * tj + 1], a2 = tr[2 * tj + 2], a3 = tr[2 * tj + 3]; \
                    o0[tj] = a0 - a2; o1[tj] = a1 + a2; o2[tj] = a2 - a1; o3[tj] = a1 - a3;          \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* y = A^T M A of every tile of M (16, O, N*th*tw) into y (N, O, oh, ow), samples [n0, n1), tiles \
 * cropped at the edge. */                                                                          \
void nnx_wino2_out_##SUF(const T* M, i64 n0, i64 n1, i64 N, i64 O, i64 th, i64 tw, i64 oh, i64 ow, \
                         T* y) {                                                                     \
    const i64 P = th * tw, plane = O * N * P;                                                       \
    for (i64 o = 0; o < O; ++o) for (i64 n = n0; n < n1; ++n) {                                    \
        const T* mo = M + o * N * P + n * P;                                                        \
        T* yo = y + (n * O + o) * oh * ow;                                                          \
        for (i64 ti = 0; ti < th; ++ti) {                                                           \
            T* y0 = yo + (2 * ti) * ow;                                                             \
            T* y1 = y0 + ow;                                                                        \
            const int has1 = 2 * ti + 1 < oh;                                                       \
            const T* mt = mo + ti * tw;                                                             \
            for (i64 tj = 0; tj < tw; ++tj) {                                                       \
                T z0[4], z1[4];                                                                     \
                for (int s = 0; s < 4; ++s) { /* A^T down the rows */                               \
                    const T m0 = mt[s * plane + tj], m1 = mt[(4 + s) * plane + tj];                  \
                    const T m2 = mt[(8 + s) * plane + tj], m3 = mt[(12 + s) * plane + tj];           \
                    z0[s] = m0 + m1 + m2;                                                           \
                    z1[s] = m1 - m2 - m3;                                                           \
                }                                                                                   \
                const i64 j = 2 * tj;                                                               \
                y0[j] = z0[0] + z0[1] + z0[2];                                                      \
                if (j + 1 < ow) y0[j + 1] = z0[1] - z0[2] - z0[3];                                  \
                if (has1) {                                                                         \
                    y1[j] = z1[0] + z1[1] + z1[2];                                                  \
                    if (j + 1 < ow) y1[j + 1] = z1[1] - z1[2] - z1[3];                              \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* The adjoint of the output transform: D = A dY A^T per 2x2 tile of dy (N, O, oh, ow), samples   \
 * [n0, n1), entries beyond the output 0, into D (16, O, N*th*tw). scratch: 6 (2 tw) entries. */    \
void nnx_wino2_dy_##SUF(const T* dy, i64 n0, i64 n1, i64 N, i64 O, i64 oh, i64 ow, i64 th, i64 tw, \
                        T* D, T* scratch) {                                                          \
    const i64 P = th * tw, plane = O * N * P, wp = 2 * tw;                                          \
    T* g0 = scratch;                                                                                \
    T* g1 = scratch + wp;                                                                           \
    T* w = scratch + 2 * wp; /* 4 rows of A dY */                                                   \
    for (i64 o = 0; o < O; ++o) for (i64 n = n0; n < n1; ++n) {                                    \
        const T* g = dy + (n * O + o) * oh * ow;                                                    \
        T* d = D + o * N * P + n * P;                                                               \
        for (i64 ti = 0; ti < th; ++ti) {                                                           \
            const i64 r0 = 2 * ti, r1 = 2 * ti + 1;                                                 \
            for (i64 j = 0; j < wp; ++j) {                                                          \
                g0[j] = j < ow ? g[r0 * ow + j] : (T)0;                                             \
                g1[j] = (j < ow && r1 < oh) ? g[r1 * ow + j] : (T)0;                                \
            }                                                                                       \
            _Pragma("omp simd")                                                                     \
            for (i64 j = 0; j < wp; ++j) { /* A down the rows */                                    \
                w[j] = g0[j]; w[wp + j] = g0[j] + g1[j]; w[2 * wp + j] = g0[j] - g1[j]; w[3 * wp + j] = -g1[j]; \
            }                                                                                       \
            for (i64 r = 0; r < 4; ++r) { /* A^T along the columns */                               \
                const T* wr = w + r * wp;                                                           \
                T* o0 = d + (4 * r) * plane + ti * tw;                                              \
                T* o1 = o0 + plane;                                                                 \
                T* o2 = o1 + plane;                                                                 \
                T* o3 = o2 + plane;                                                                 \
                _Pragma("omp simd")                                                                 \
                for (i64 tj = 0; tj < tw; ++tj) {                                                   \
                    const T a0 = wr[2 * tj], a1 = wr[2 * tj + 1];                                   \
                    o0[tj] = a0; o1[tj] = a0 + a1; o2[tj] = a0 - a1; o3[tj] = -a1;                  \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
}

NNX_WINOGRAD(float, f32)
NNX_WINOGRAD(double, f64)

/* Winograd F(4x4, 3x3) tile transforms, the same layout with 36 planes (k = 6 r + s) and the
 * matrices of backends/winograd.py, each row written with its zero terms dropped and the common
 * pairs shared (the reference sums the same terms in another order: equal to float rounding).
 * B^T d for d0..d5; A^T m for m0..m5; A g for g0..g3. */
#define NNX_BT4(T, d0, d1, d2, d3, d4, d5, o0, o1, o2, o3, o4, o5) do {                            \
    const T p12 = (d1) + (d2), m12 = (d1) - (d2), p34 = (d3) + (d4), m43 = (d4) - (d3);            \
    const T m42 = (d4) - (d2), m31 = (d3) - (d1);                                                   \
    o0 = (T)4 * (d0) - (T)5 * (d2) + (d4); o1 = p34 - (T)4 * p12; o2 = m43 + (T)4 * m12;             \
    o3 = m42 + (T)2 * m31; o4 = m42 - (T)2 * m31; o5 = (T)4 * (d1) - (T)5 * (d3) + (d5);             \
} while (0)
#define NNX_AT4(T, m0, m1, m2, m3, m4, m5, y0, y1, y2, y3) do {                                     \
    const T p12 = (m1) + (m2), m12 = (m1) - (m2), p34 = (m3) + (m4), m34 = (m3) - (m4);            \
    y0 = (m0) + p12 + p34; y1 = m12 + (T)2 * m34; y2 = p12 + (T)4 * p34; y3 = m12 + (T)8 * m34 + (m5); \
} while (0)
#define NNX_A4(T, g0, g1, g2, g3, w0, w1, w2, w3, w4, w5) do {                                      \
    const T p02 = (g0) + (g2), p13 = (g1) + (g3), q02 = (g0) + (T)4 * (g2), q13 = (T)2 * (g1) + (T)8 * (g3); \
    w0 = (g0); w1 = p02 + p13; w2 = p02 - p13; w3 = q02 + q13; w4 = q02 - q13; w5 = (g3);           \
} while (0)

#define NNX_WINOGRAD4(T, SUF)                                                                       \
/* De-interleave one row: d[q * s + t] = row[4 t + q] for the padded row of x at row index hi     \
 * (0 outside x), columns 4 t + q - left, q in 0..3, t in 0..tw. */                                 \
static void nnx_wino4_split_row_##SUF(const T* xc, i64 H, i64 W, i64 hi, i64 left, i64 tw, T* row, T* d) { \
    const i64 s = tw + 1, wp = 4 * s;                                                               \
    if (hi < 0 || hi >= H) { for (i64 j = 0; j < wp; ++j) d[j] = 0; return; }                       \
    const T* xr = xc + hi * W;                                                                      \
    for (i64 j = 0; j < wp; ++j) { const i64 wi = j - left; row[j] = (wi >= 0 && wi < W) ? xr[wi] : (T)0; } \
    _Pragma("omp simd")                                                                             \
    for (i64 t = 0; t < s; ++t) {                                                                   \
        d[t] = row[4 * t]; d[s + t] = row[4 * t + 1]; d[2 * s + t] = row[4 * t + 2]; d[3 * s + t] = row[4 * t + 3]; \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* V = B^T d B of every 6x6 input tile of samples [n0, n1); tile (ti, tj) starts at row 4 ti - top, \
 * column 4 tj - left; entries outside x are 0. Each row is de-interleaved by column mod 4 first,   \
 * so that both passes read contiguous runs (read in place, the second pass's stride-4 loads kept   \
 * it scalar: 3.5 against 1.0 ms at 16 x 64 x 32 x 32). scratch: 4 (tw + 1) (4 th + 9) entries. */ \
void nnx_wino4_in_##SUF(const T* x, i64 n0, i64 n1, i64 N, i64 C, i64 H, i64 W, i64 top, i64 left, \
                        i64 th, i64 tw, T* V, T* scratch) {                                          \
    const i64 P = th * tw, plane = C * N * P, s = tw + 1, wp = 4 * s, nrows = 4 * th + 2;           \
    T* rows = scratch;                 /* nrows de-interleaved padded rows of wp */                 \
    T* t = rows + nrows * wp;          /* 6 rows of B^T d, same layout */                           \
    T* tmp = t + 6 * wp;               /* one padded row */                                         \
    for (i64 c = 0; c < C; ++c) for (i64 n = n0; n < n1; ++n) {                                    \
        const T* xc = x + (n * C + c) * H * W;                                                      \
        T* vout = V + c * N * P + n * P;                                                            \
        for (i64 i = 0; i < nrows; ++i) nnx_wino4_split_row_##SUF(xc, H, W, i - top, left, tw, tmp, rows + i * wp); \
        for (i64 ti = 0; ti < th; ++ti) {                                                           \
            const T* r0 = rows + 4 * ti * wp;                                                       \
            _Pragma("omp simd")                                                                     \
            for (i64 j = 0; j < wp; ++j) /* B^T down the rows (elementwise: any column order) */    \
                NNX_BT4(T, r0[j], r0[wp + j], r0[2 * wp + j], r0[3 * wp + j], r0[4 * wp + j], r0[5 * wp + j], \
                        t[j], t[wp + j], t[2 * wp + j], t[3 * wp + j], t[4 * wp + j], t[5 * wp + j]); \
            for (i64 r = 0; r < 6; ++r) { /* B along the columns: column 4 tj + k is e[k % 4][tj + k / 4] */ \
                const T* e = t + r * wp;                                                            \
                T* o = vout + (6 * r) * plane + ti * tw;                                            \
                _Pragma("omp simd")                                                                 \
                for (i64 tj = 0; tj < tw; ++tj)                                                     \
                    NNX_BT4(T, e[tj], e[s + tj], e[2 * s + tj], e[3 * s + tj], e[tj + 1], e[s + tj + 1], \
                            o[tj], o[plane + tj], o[2 * plane + tj], o[3 * plane + tj], o[4 * plane + tj], \
                            o[5 * plane + tj]);                                                     \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* y = A^T M A of every tile of M (36, O, N*th*tw) into y (N, O, oh, ow), samples [n0, n1), tiles \
 * cropped at the edge. scratch: 40 tw entries. */                                                  \
void nnx_wino4_out_##SUF(const T* M, i64 n0, i64 n1, i64 N, i64 O, i64 th, i64 tw, i64 oh, i64 ow, \
                         T* y, T* scratch) {                                                         \
    const i64 P = th * tw, plane = O * N * P, wy = 4 * tw;                                          \
    T* z = scratch;            /* z[p][s][tj]: A^T down the rows, 4 x 6 x tw */                     \
    T* yr = scratch + 24 * tw; /* 4 output rows of 4 tw */                                          \
    for (i64 o = 0; o < O; ++o) for (i64 n = n0; n < n1; ++n) {                                    \
        const T* mo = M + o * N * P + n * P;                                                        \
        T* yo = y + (n * O + o) * oh * ow;                                                          \
        for (i64 ti = 0; ti < th; ++ti) {                                                           \
            const T* mt = mo + ti * tw;                                                             \
            for (i64 s = 0; s < 6; ++s) {                                                           \
                const T* m = mt + s * plane;                                                        \
                T* zs = z + s * tw;                                                                 \
                _Pragma("omp simd")                                                                 \
                for (i64 tj = 0; tj < tw; ++tj)                                                     \
                    NNX_AT4(T, m[tj], m[6 * plane + tj], m[12 * plane + tj], m[18 * plane + tj],    \
                            m[24 * plane + tj], m[30 * plane + tj], zs[tj], zs[6 * tw + tj],         \
                            zs[12 * tw + tj], zs[18 * tw + tj]);                                    \
            }                                                                                       \
            const i64 rows_here = oh - 4 * ti < 4 ? oh - 4 * ti : 4;                                \
            for (i64 p = 0; p < rows_here; ++p) { /* A along the columns */                         \
                const T* zp = z + 6 * tw * p;                                                       \
                T* out = yr + p * wy;                                                               \
                _Pragma("omp simd")                                                                 \
                for (i64 tj = 0; tj < tw; ++tj)                                                     \
                    NNX_AT4(T, zp[tj], zp[tw + tj], zp[2 * tw + tj], zp[3 * tw + tj], zp[4 * tw + tj], \
                            zp[5 * tw + tj], out[4 * tj], out[4 * tj + 1], out[4 * tj + 2], out[4 * tj + 3]); \
                memcpy(yo + (4 * ti + p) * ow, out, (size_t)ow * sizeof(T));                        \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* The adjoint of the output transform: D = A dY A^T per 4x4 tile of dy (N, O, oh, ow), samples   \
 * [n0, n1), entries beyond the output 0, into D (36, O, N*th*tw). Rows de-interleaved as in the  \
 * input transform. scratch: 4 tw (4 th + 7) entries. */                                             \
void nnx_wino4_dy_##SUF(const T* dy, i64 n0, i64 n1, i64 N, i64 O, i64 oh, i64 ow, i64 th, i64 tw, \
                        T* D, T* scratch) {                                                          \
    const i64 P = th * tw, plane = O * N * P, wp = 4 * tw, nrows = 4 * th;                          \
    T* g = scratch;             /* nrows de-interleaved rows of dy, zero beyond the output */       \
    T* w = g + nrows * wp;      /* 6 rows of A dY */                                                \
    T* tmp = w + 6 * wp;        /* one padded row */                                                \
    for (i64 o = 0; o < O; ++o) for (i64 n = n0; n < n1; ++n) {                                    \
        const T* go = dy + (n * O + o) * oh * ow;                                                   \
        T* d = D + o * N * P + n * P;                                                               \
        for (i64 i = 0; i < nrows; ++i) {                                                           \
            T* gi = g + i * wp;                                                                     \
            if (i >= oh) { for (i64 j = 0; j < wp; ++j) gi[j] = 0; continue; }                      \
            for (i64 j = 0; j < wp; ++j) tmp[j] = j < ow ? go[i * ow + j] : (T)0;                   \
            _Pragma("omp simd")                                                                     \
            for (i64 tj = 0; tj < tw; ++tj) {                                                       \
                gi[tj] = tmp[4 * tj]; gi[tw + tj] = tmp[4 * tj + 1];                                \
                gi[2 * tw + tj] = tmp[4 * tj + 2]; gi[3 * tw + tj] = tmp[4 * tj + 3];               \
            }                                                                                       \
        }                                                                                           \
        for (i64 ti = 0; ti < th; ++ti) {                                                           \
            const T* g0 = g + 4 * ti * wp;                                                          \
            _Pragma("omp simd")                                                                     \
            for (i64 j = 0; j < wp; ++j) /* A down the rows (elementwise) */                        \
                NNX_A4(T, g0[j], g0[wp + j], g0[2 * wp + j], g0[3 * wp + j], w[j], w[wp + j], w[2 * wp + j], \
                       w[3 * wp + j], w[4 * wp + j], w[5 * wp + j]);                                \
            for (i64 r = 0; r < 6; ++r) { /* A^T along the columns: column 4 tj + q is e[q][tj] */   \
                const T* e = w + r * wp;                                                            \
                T* out = d + (6 * r) * plane + ti * tw;                                             \
                _Pragma("omp simd")                                                                 \
                for (i64 tj = 0; tj < tw; ++tj)                                                     \
                    NNX_A4(T, e[tj], e[tw + tj], e[2 * tw + tj], e[3 * tw + tj], out[tj], out[plane + tj], \
                           out[2 * plane + tj], out[3 * plane + tj], out[4 * plane + tj], out[5 * plane + tj]); \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
}

NNX_WINOGRAD4(float, f32)
NNX_WINOGRAD4(double, f64)

/* The filter side of a Winograd convolution (backends/winograd.py's filter_transform and
 * filter_grad are the references): the products there are of shape (O*C*3, 3) x (3, a), whose
 * permuted copies cost more than the arithmetic. Here 16 filters are transformed side by side
 * (vector lanes) and each tile-position plane is written or read in runs of 16: 0.09 ms per
 * 64 x 64 filter bank against 0.34 ms for the reference. g: G (a x 3), row-major, in double.
 *
 * nnx_wino_filter: U = G w G^T into out (a*a, P, Q), rows p in [lo, hi): the filter of (p, q) is
 * w[p, q] of w (P, Q, 3, 3), or with flip w[q, p] of w (Q, P, 3, 3) turned by 180 degrees (the
 * filter of the input gradient). */
#define NNX_WINO_FILTER(T, SUF)                                                                     \
void nnx_wino_filter_##SUF(const T* w, i64 lo, i64 hi, i64 P, i64 Q, i64 a, const double* g, i64 flip, \
                           T* out) {                                                                \
    T G[18], k[9 * 16], t[18 * 16], u[36 * 16];                                                     \
    for (i64 i = 0; i < 3 * a; ++i) G[i] = (T)g[i];                                                 \
    const i64 plane = P * Q;                                                                        \
    for (i64 p = lo; p < hi; ++p) {                                                                 \
        for (i64 q0 = 0; q0 < Q; q0 += 16) {                                                        \
            const i64 nq = Q - q0 < 16 ? Q - q0 : 16;                                               \
            for (i64 qq = 0; qq < 16; ++qq) {   /* 16 filters side by side: k[r][qq] */             \
                const i64 q = q0 + (qq < nq ? qq : 0);                                              \
                if (flip) { const T* f = w + (q * P + p) * 9; for (int r = 0; r < 9; ++r) k[r * 16 + qq] = f[8 - r]; } \
                else { const T* f = w + (p * Q + q) * 9; for (int r = 0; r < 9; ++r) k[r * 16 + qq] = f[r]; } \
            }                                                                                       \
            for (i64 i = 0; i < a; ++i)                                                             \
                for (int l = 0; l < 3; ++l) {                                                       \
                    const T g0 = G[i * 3], g1 = G[i * 3 + 1], g2 = G[i * 3 + 2];                    \
                    _Pragma("omp simd")                                                             \
                    for (int qq = 0; qq < 16; ++qq)                                                 \
                        t[(i * 3 + l) * 16 + qq] = g0 * k[l * 16 + qq] + g1 * k[(3 + l) * 16 + qq]   \
                                                   + g2 * k[(6 + l) * 16 + qq];                     \
                }                                                                                   \
            for (i64 i = 0; i < a; ++i)                                                             \
                for (i64 j = 0; j < a; ++j) {                                                       \
                    const T g0 = G[j * 3], g1 = G[j * 3 + 1], g2 = G[j * 3 + 2];                    \
                    _Pragma("omp simd")                                                             \
                    for (int qq = 0; qq < 16; ++qq)                                                 \
                        u[(i * a + j) * 16 + qq] = t[(i * 3) * 16 + qq] * g0 + t[(i * 3 + 1) * 16 + qq] * g1 \
                                                   + t[(i * 3 + 2) * 16 + qq] * g2;                 \
                }                                                                                   \
            /* a run of up to 16 per plane: the planes lie a power of two apart, and one store per \
             * plane per filter would keep evicting the same cache sets */                          \
            for (i64 ij = 0; ij < a * a; ++ij) {                                                    \
                T* dst = out + ij * plane + p * Q + q0;                                             \
                if (nq == 16) { _Pragma("omp simd") for (int qq = 0; qq < 16; ++qq) dst[qq] = u[ij * 16 + qq]; } \
                else for (i64 qq = 0; qq < nq; ++qq) dst[qq] = u[ij * 16 + qq];                     \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* The filter gradient dW = G^T dU G of du (a*a, O, C) into dw (O, C, 3, 3), rows o in [lo, hi). */ \
void nnx_wino_filter_grad_##SUF(const T* du, i64 lo, i64 hi, i64 O, i64 C, i64 a, const double* g,  \
                                T* dw) {                                                            \
    T G[18], d[36 * 16], t[18 * 16], r9[9 * 16];                                                    \
    for (i64 i = 0; i < 3 * a; ++i) G[i] = (T)g[i];                                                 \
    const i64 plane = O * C;                                                                        \
    for (i64 o = lo; o < hi; ++o) {                                                                 \
        for (i64 c0 = 0; c0 < C; c0 += 16) {                                                        \
            const i64 nc = C - c0 < 16 ? C - c0 : 16;                                               \
            for (i64 ij = 0; ij < a * a; ++ij) {  /* runs of up to 16 per plane, as above */        \
                const T* src = du + ij * plane + o * C + c0;                                        \
                if (nc == 16) { _Pragma("omp simd") for (int cc = 0; cc < 16; ++cc) d[ij * 16 + cc] = src[cc]; } \
                else for (i64 cc = 0; cc < 16; ++cc) d[ij * 16 + cc] = cc < nc ? src[cc] : (T)0;    \
            }                                                                                       \
            for (int k = 0; k < 3; ++k)                                                             \
                for (i64 j = 0; j < a; ++j) {                                                       \
                    T acc[16] = {0};                                                                \
                    for (i64 i = 0; i < a; ++i) {                                                   \
                        const T gi = G[i * 3 + k];                                                  \
                        _Pragma("omp simd")                                                         \
                        for (int cc = 0; cc < 16; ++cc) acc[cc] += gi * d[(i * a + j) * 16 + cc];   \
                    }                                                                               \
                    for (int cc = 0; cc < 16; ++cc) t[(k * a + j) * 16 + cc] = acc[cc];             \
                }                                                                                   \
            for (int k = 0; k < 3; ++k)                                                             \
                for (int l = 0; l < 3; ++l) {                                                       \
                    T acc[16] = {0};                                                                \
                    for (i64 j = 0; j < a; ++j) {                                                   \
                        const T gj = G[j * 3 + l];                                                  \
                        _Pragma("omp simd")                                                         \
                        for (int cc = 0; cc < 16; ++cc) acc[cc] += t[(k * a + j) * 16 + cc] * gj;   \
                    }                                                                               \
                    for (int cc = 0; cc < 16; ++cc) r9[(k * 3 + l) * 16 + cc] = acc[cc];            \
                }                                                                                   \
            for (i64 cc = 0; cc < nc; ++cc)                                                         \
                for (int r = 0; r < 9; ++r) dw[(o * C + c0 + cc) * 9 + r] = r9[r * 16 + cc];        \
        }                                                                                           \
    }                                                                                               \
}

NNX_WINO_FILTER(float, f32)
NNX_WINO_FILTER(double, f64)

/* 2-d max pooling over planes [p0, p1) of x (planes, H, W) (fused_api.py's im2col/argmax is the
 * reference): window (oy, ox) reads rows oy sh - ph + i dh, columns ox sw - pw + j dw that lie
 * inside the plane (padding is -inf: never the maximum, as in PyTorch). As PyTorch's CPU kernel,
 * a later element replaces the maximum when it is greater or NaN, so ties go to the first maximum
 * and a NaN to the last NaN; idx is its flat index in the plane (-1 for a window with no element). */
#define NNX_MAXPOOL(T, SUF)                                                                         \
/* The common 2x2 window with stride 2 inside the plane, branch-free over a row of windows. */    \
static void nnx_maxpool22_##SUF(const T* xp, i64 W, i64 OH, i64 OW, T* yp, int* ip) {               \
    for (i64 oy = 0; oy < OH; ++oy) {                                                               \
        const T* r0 = xp + 2 * oy * W;                                                              \
        const T* r1 = r0 + W;                                                                       \
        T* yr = yp + oy * OW;                                                                       \
        int* ir = ip + oy * OW;                                                                     \
        const int base = (int)(2 * oy * W);                                                         \
        _Pragma("omp simd simdlen(8)") /* rows are short (14 at LeNet): 16 lanes ran 2.7x slower */ \
        for (i64 ox = 0; ox < OW; ++ox) {                                                           \
            const T a = r0[2 * ox], b = r0[2 * ox + 1], c = r1[2 * ox], d = r1[2 * ox + 1];         \
            const int tb = b > a || b != b;                                                         \
            const T m1 = tb ? b : a;                                                                \
            const int tc = c > m1 || c != c;                                                        \
            const T m2 = tc ? c : m1;                                                               \
            const int k2 = tc ? 2 : tb;                                                             \
            const int td = d > m2 || d != d;                                                        \
            yr[ox] = td ? d : m2;                                                                   \
            const int k = td ? 3 : k2; /* the tap: 0 1 over 2 3 */                                  \
            ir[ox] = base + (int)(2 * ox) + (k & 1) + (k >> 1) * (int)W;                            \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
void nnx_maxpool_fwd_##SUF(const T* x, i64 p0, i64 p1, i64 H, i64 W, i64 kh, i64 kw, i64 sh, i64 sw, \
                           i64 dh, i64 dw, i64 ph, i64 pw, i64 OH, i64 OW, T* y, int* idx) {          \
    const int two = kh == 2 && kw == 2 && sh == 2 && sw == 2 && dh == 1 && dw == 1 && ph == 0 && pw == 0 \
                    && 2 * OH <= H && 2 * OW <= W;                                                  \
    for (i64 p = p0; p < p1; ++p) {                                                                 \
        const T* xp = x + p * H * W;                                                                \
        T* yp = y + p * OH * OW;                                                                    \
        int* ip = idx + p * OH * OW;                                                                \
        if (two) { nnx_maxpool22_##SUF(xp, W, OH, OW, yp, ip); continue; }                          \
        for (i64 oy = 0; oy < OH; ++oy) for (i64 ox = 0; ox < OW; ++ox) {                          \
            T best = (T)-INFINITY;                                                                  \
            i64 at = -1;                                                                            \
            for (i64 i = 0; i < kh; ++i) {                                                          \
                const i64 r = oy * sh - ph + i * dh;                                                \
                if (r < 0 || r >= H) continue;                                                      \
                for (i64 j = 0; j < kw; ++j) {                                                      \
                    const i64 q = ox * sw - pw + j * dw;                                            \
                    if (q < 0 || q >= W) continue;                                                  \
                    const T v = xp[r * W + q];                                                      \
                    if (at < 0 || v > best || v != v) { best = v; at = r * W + q; }                 \
                }                                                                                   \
            }                                                                                       \
            yp[oy * OW + ox] = at < 0 ? (T)-INFINITY : best;                                        \
            ip[oy * OW + ox] = (int)at;                                                             \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* dx of planes [p0, p1): zero, then each dy added at its window's maximum (summed where windows  \
 * overlap, in output order). */                                                                    \
void nnx_maxpool_bwd_##SUF(const T* dy, const int* idx, i64 p0, i64 p1, i64 HW, i64 OHW, T* dx) {   \
    for (i64 p = p0; p < p1; ++p) {                                                                 \
        T* d = dx + p * HW;                                                                         \
        const T* g = dy + p * OHW;                                                                  \
        const int* ip = idx + p * OHW;                                                              \
        memset(d, 0, (size_t)HW * sizeof(T));                                                       \
        for (i64 o = 0; o < OHW; ++o) if (ip[o] >= 0) d[ip[o]] += g[o];                             \
    }                                                                                               \
}

NNX_MAXPOOL(float, f32)
NNX_MAXPOOL(double, f64)

/* Batch norm over (N, C, L) per channel, channels [c0, c1) (fused_train.py is the reference).
 * Sums over N*L run in double, two passes for the variance, as the reference's two-pass mean. */
#define NNX_BATCHNORM(T, SUF)                                                                       \
void nnx_bn_stats_##SUF(const T* x, i64 N, i64 C, i64 L, i64 c0, i64 c1, T* mean, T* var) {        \
    const double inv = 1.0 / (double)(N * L);                                                       \
    for (i64 c = c0; c < c1; ++c) {                                                                 \
        double s = 0;                                                                               \
        for (i64 n = 0; n < N; ++n) {                                                               \
            const T* p = x + (n * C + c) * L;                                                       \
            double t = 0;                                                                           \
            _Pragma("omp simd reduction(+:t)")                                                      \
            for (i64 k = 0; k < L; ++k) t += (double)p[k];                                          \
            s += t;                                                                                 \
        }                                                                                           \
        const T m = (T)(s * inv);                                                                   \
        double v = 0;                                                                               \
        for (i64 n = 0; n < N; ++n) {                                                               \
            const T* p = x + (n * C + c) * L;                                                       \
            double t = 0;                                                                           \
            _Pragma("omp simd reduction(+:t)")                                                      \
            for (i64 k = 0; k < L; ++k) { const double d = (double)(p[k] - m); t += d * d; }        \
            v += t;                                                                                 \
        }                                                                                           \
        mean[c] = m;                                                                                \
        var[c] = (T)(v * inv);                                                                      \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* y = (x - mean) * invstd * w + b (w, b may be NULL); invstd = 1 / sqrt(var + eps) out. */         \
void nnx_bn_fwd_##SUF(const T* x, i64 N, i64 C, i64 L, i64 c0, i64 c1, const T* mean, const T* var, \
                      const T* w, const T* b, double eps, T* y, T* invstd) {                        \
    for (i64 c = c0; c < c1; ++c) {                                                                 \
        const T is = (T)1 / (T)sqrt((double)var[c] + eps);                                          \
        invstd[c] = is;                                                                             \
        const T m = mean[c], sc = w ? is * w[c] : is, sh = b ? b[c] : (T)0;                         \
        for (i64 n = 0; n < N; ++n) {                                                               \
            const T* p = x + (n * C + c) * L;                                                       \
            T* q = y + (n * C + c) * L;                                                             \
            _Pragma("omp simd")                                                                     \
            for (i64 k = 0; k < L; ++k) q[k] = (p[k] - m) * sc + sh;                                \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* Training-mode backward: dbias = sum dy, dweight = sum dy * xhat, dx = (scale / m) (m dy -       \
 * dbias - xhat dweight) with xhat = (x - mean) invstd, scale = invstd * w (w may be NULL). */      \
void nnx_bn_bwd_##SUF(const T* dy, const T* x, i64 N, i64 C, i64 L, i64 c0, i64 c1, const T* mean, \
                      const T* invstd, const T* w, T* dx, T* dweight, T* dbias) {                   \
    const T cnt = (T)(N * L);                                                                       \
    for (i64 c = c0; c < c1; ++c) {                                                                 \
        const T m = mean[c], is = invstd[c];                                                        \
        double sb = 0, sw = 0;                                                                      \
        for (i64 n = 0; n < N; ++n) {                                                               \
            const T* g = dy + (n * C + c) * L;                                                      \
            const T* p = x + (n * C + c) * L;                                                       \
            double tb = 0, tw = 0;                                                                  \
            _Pragma("omp simd reduction(+:tb, tw)")                                                 \
            for (i64 k = 0; k < L; ++k) { tb += (double)g[k]; tw += (double)(g[k] * ((p[k] - m) * is)); } \
            sb += tb;                                                                               \
            sw += tw;                                                                               \
        }                                                                                           \
        const T db = (T)sb, dw = (T)sw;                                                             \
        dbias[c] = db;                                                                              \
        dweight[c] = dw;                                                                            \
        if (!dx) continue;                                                                          \
        const T f = (w ? is * w[c] : is) / cnt;                                                     \
        for (i64 n = 0; n < N; ++n) {                                                               \
            const T* g = dy + (n * C + c) * L;                                                      \
            const T* p = x + (n * C + c) * L;                                                       \
            T* o = dx + (n * C + c) * L;                                                            \
            _Pragma("omp simd")                                                                     \
            for (i64 k = 0; k < L; ++k) o[k] = f * (cnt * g[k] - db - ((p[k] - m) * is) * dw);      \
        }                                                                                           \
    }                                                                                               \
}

NNX_BATCHNORM(float, f32)
NNX_BATCHNORM(double, f64)

/* Vectorisable exp, tanh and sigmoid for the recurrent cells. libm's calls do not vectorise, and
 * NumPy's SIMD versions need a pass over memory per call; these inline into the cells' single
 * pass. x = k ln2 + r with |r| <= ln2/2 (ln2 in two parts, so k ln2 is exact), e^r - 1 by its
 * Taylor series without the leading 1 (degree 7 for float32, 13 for float64: truncation below
 * half an ulp), 2^k built in the exponent bits. So exp(x) = 2^k (1 + q) and expm1(x) =
 * (2^k - 1) + 2^k q, accurate near 0 as well. Rounding to k uses the 1.5 * 2^(mantissa bits)
 * trick (floor does not vectorise without -ffast-math). Inputs are clamped where the results
 * saturate (the clamps are written so that NaN passes through them), and exp is 0 where e^x is
 * below the smallest normal number. Tested against long double in
 * tests/backends/test_host_cell_kernels.py: within 4 ulp. */
static inline float nnx_pow2_f32(float k) { union { int i; float f; } u; u.i = ((int)k + 127) << 23; return u.f; }
static inline double nnx_pow2_f64(double k) { union { long long i; double f; } u; u.i = ((long long)k + 1023) << 52; return u.f; }

/* k and q = e^r - 1 of x = k ln2 + r, x clamped to [ln(smallest normal), 88] (float32) or
 * [ln(smallest normal), 709] (float64): 2^k stays a normal number */
#define NNX_REDUCE_F32(x, k, q)                                                                     \
    x = x > 88.0f ? 88.0f : x;                                                                      \
    x = x < -87.33655f ? -87.33655f : x;                                                            \
    const float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;                        \
    const float r_ = (x - k * 0.693115234375f) - k * 3.19461833e-05f;                              \
    const float q = r_ * (1.0f + r_ * (0.5f + r_ * (1.0f / 6 + r_ * (1.0f / 24 + r_ * (1.0f / 120  \
                    + r_ * (1.0f / 720 + r_ * (1.0f / 5040)))))));
#define NNX_REDUCE_F64(x, k, q)                                                                     \
    x = x > 709.0 ? 709.0 : x;                                                                      \
    x = x < -708.3964185322642 ? -708.3964185322642 : x;                                            \
    const double k = (x * 1.4426950408889634 + 6755399441055744.0) - 6755399441055744.0;           \
    const double r_ = (x - k * 0.6931467056274414) - k * 4.7493250390316726e-07;                   \
    double p_ = 1.0 / 6227020800.0;                                                                 \
    p_ = 1.0 / 479001600.0 + r_ * p_; p_ = 1.0 / 39916800.0 + r_ * p_; p_ = 1.0 / 3628800.0 + r_ * p_; \
    p_ = 1.0 / 362880.0 + r_ * p_; p_ = 1.0 / 40320.0 + r_ * p_; p_ = 1.0 / 5040.0 + r_ * p_;       \
    p_ = 1.0 / 720.0 + r_ * p_; p_ = 1.0 / 120.0 + r_ * p_; p_ = 1.0 / 24.0 + r_ * p_;              \
    p_ = 1.0 / 6.0 + r_ * p_; p_ = 0.5 + r_ * p_; p_ = 1.0 + r_ * p_;                                \
    const double q = r_ * p_;

static inline float nnx_exp_f32(float x) {
    const float keep = x < -87.33655f ? 0.0f : 1.0f;  /* e^x below float32's smallest normal: 0 */
    NNX_REDUCE_F32(x, k, q)
    const float s = nnx_pow2_f32(k);
    return (s + s * q) * keep;
}
static inline float nnx_expm1_f32(float x) { NNX_REDUCE_F32(x, k, q) const float s = nnx_pow2_f32(k); return (s - 1.0f) + s * q; }
static inline double nnx_exp_f64(double x) {
    const double keep = x < -708.3964185322642 ? 0.0 : 1.0;
    NNX_REDUCE_F64(x, k, q)
    const double s = nnx_pow2_f64(k);
    return (s + s * q) * keep;
}
static inline double nnx_expm1_f64(double x) { NNX_REDUCE_F64(x, k, q) const double s = nnx_pow2_f64(k); return (s - 1.0) + s * q; }

/* tanh x = sign(x) e / (e + 2), e = expm1(2|x|); sigmoid x = 1 / (1 + e^-x) for x >= 0 and
 * e^x / (1 + e^x) below (no cancellation either side). */
#define NNX_ACTIVATIONS(T, SUF, FABS, COPYSIGN)                                                     \
static inline T nx_tanh_##SUF(T x) { const T e = nnx_expm1_##SUF((T)2 * FABS(x)); return COPYSIGN(e / (e + (T)2), x); } \
static inline T nx_sigmoid_##SUF(T x) {                                                            \
    const T e = nnx_exp_##SUF(-FABS(x));                                                            \
    const T p = (T)1 / ((T)1 + e);                                                                  \
    return x >= 0 ? p : e * p;                                                                      \
}                                                                                                   \
/* y = tanh(x) or sigmoid(x) over n elements (y may be x): sigmoid is the Sigmoid layer's kernel;  \
 * tanh is exported for the accuracy tests only (NumPy's own SIMD tanh is faster as a lone pass). */ \
void nnx_tanh_##SUF(const T* x, i64 n, T* y) { _Pragma("omp simd") for (i64 i = 0; i < n; ++i) y[i] = nx_tanh_##SUF(x[i]); } \
void nnx_sigmoid_##SUF(const T* x, i64 n, T* y) { _Pragma("omp simd") for (i64 i = 0; i < n; ++i) y[i] = nx_sigmoid_##SUF(x[i]); }

NNX_ACTIVATIONS(float, f32, fabsf, copysignf)
NNX_ACTIVATIONS(double, f64, fabs, copysign)

/* The recurrent cells of backends/fused.py (the reference) in one pass over a step's rows. Arrays
 * are rows with a unit-stride last axis and a row stride (ld*, in elements); a gate-major block
 * layout along the row, as the reference. "omp simd" lets the one output that may alias an input
 * (the time loop's shared buffer) be written in place: every element is read before it is written,
 * and no element is read by another lane. */
#define NNX_CELLS(T, SUF)                                                                           \
/* LSTM: act = [i, f, g, o, tanh(c)], c = f c_prev + i g, h = o tanh(c) from gates (rows, 4H).     \
 * act (rows, 5H) may be gates itself (same rows, same row stride). */                             \
void nnx_lstm_fwd_##SUF(const T* gates, i64 ldg, const T* cp, i64 ldcp, i64 rows, i64 H, T* act,   \
                        i64 lda, T* h, i64 ldh, T* c, i64 ldc) {                                    \
    for (i64 r = 0; r < rows; ++r) {                                                                \
        const T* z = gates + r * ldg;                                                               \
        const T* cr = cp + r * ldcp;                                                                \
        T* a = act + r * lda;                                                                       \
        T* hr = h + r * ldh;                                                                        \
        T* co = c + r * ldc;                                                                        \
        _Pragma("omp simd")                                                                         \
        for (i64 j = 0; j < H; ++j) {                                                               \
            const T zi = z[j], zf = z[H + j], zg = z[2 * H + j], zo = z[3 * H + j];                 \
            const T i = nx_sigmoid_##SUF(zi), f = nx_sigmoid_##SUF(zf);                             \
            const T g = nx_tanh_##SUF(zg), o = nx_sigmoid_##SUF(zo);                                \
            const T cn = f * cr[j] + i * g;                                                         \
            const T tc = nx_tanh_##SUF(cn);                                                         \
            a[j] = i; a[H + j] = f; a[2 * H + j] = g; a[3 * H + j] = o; a[4 * H + j] = tc;          \
            co[j] = cn;                                                                             \
            hr[j] = o * tc;                                                                         \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* Its gradients: dct = dh o (1 - tanh(c)^2) + dc (dc may be NULL), d = the four gates'          \
 * pre-activation gradients (rows, 4H), dcp = dct f. d may be act itself. */                       \
void nnx_lstm_bwd_##SUF(const T* act, i64 lda, const T* cp, i64 ldcp, const T* dh, i64 lddh,        \
                        const T* dc, i64 lddc, i64 rows, i64 H, T* d, i64 ldd, T* dcp, i64 lddcp) { \
    for (i64 r = 0; r < rows; ++r) {                                                                \
        const T* a = act + r * lda;                                                                 \
        const T* cr = cp + r * ldcp;                                                                \
        const T* g_ = dh + r * lddh;                                                                \
        const T* dcr = dc ? dc + r * lddc : 0;                                                      \
        T* o_ = d + r * ldd;                                                                        \
        T* dco = dcp + r * lddcp;                                                                   \
        _Pragma("omp simd")                                                                         \
        for (i64 j = 0; j < H; ++j) {                                                               \
            const T i = a[j], f = a[H + j], g = a[2 * H + j], o = a[3 * H + j], tc = a[4 * H + j];  \
            const T dhj = g_[j];                                                                    \
            T dct = dhj * o * ((T)1 - tc * tc);                                                     \
            if (dcr) dct += dcr[j];                                                                 \
            o_[j] = dct * g * i * ((T)1 - i);                                                       \
            o_[H + j] = dct * cr[j] * f * ((T)1 - f);                                               \
            o_[2 * H + j] = dct * i * ((T)1 - g * g);                                               \
            o_[3 * H + j] = dhj * tc * o * ((T)1 - o);                                              \
            dco[j] = dct * f;                                                                       \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* GRU (PyTorch's formulation): r, z = sigmoid(gx + gh) on the first 2H columns, hn = gh_n + b_hn  \
 * (b_hn may be NULL), n = tanh(gx_n + r hn), h = n + z (h_prev - n); act = [r, z, n, hn]         \
 * (rows, 4H) may be gx itself. */                                                                 \
void nnx_gru_fwd_##SUF(const T* gx, i64 ldx, const T* gh, i64 ldgh, const T* hp, i64 ldhp,          \
                       const T* bhn, i64 rows, i64 H, T* h, i64 ldh, T* act, i64 lda) {             \
    for (i64 r = 0; r < rows; ++r) {                                                                \
        const T* x = gx + r * ldx;                                                                  \
        const T* y = gh + r * ldgh;                                                                 \
        const T* p = hp + r * ldhp;                                                                 \
        T* hr = h + r * ldh;                                                                        \
        T* a = act + r * lda;                                                                       \
        _Pragma("omp simd")                                                                         \
        for (i64 j = 0; j < H; ++j) {                                                               \
            const T xr = x[j], xz = x[H + j], xn = x[2 * H + j];                                    \
            const T rg = nx_sigmoid_##SUF(xr + y[j]), zg = nx_sigmoid_##SUF(xz + y[H + j]);         \
            const T hn = bhn ? y[2 * H + j] + bhn[j] : y[2 * H + j];                                \
            const T n = nx_tanh_##SUF(xn + rg * hn);                                                \
            a[j] = rg; a[H + j] = zg; a[2 * H + j] = n; a[3 * H + j] = hn;                          \
            hr[j] = n + zg * (p[j] - n);                                                            \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* Its gradients: dn = dh (1 - z)(1 - n^2), dz = dh (h_prev - n) z (1 - z), dr = dn hn r (1 - r); \
 * dgx = [dr, dz, dn], dgh = [dr, dz, dn r] (rows, 3H), dhd = dh z. dgx may be act itself. */      \
void nnx_gru_bwd_##SUF(const T* act, i64 lda, const T* hp, i64 ldhp, const T* dh, i64 lddh, i64 rows, \
                       i64 H, T* dgx, i64 ldx, T* dgh, i64 ldgh, T* dhd, i64 lddhd) {              \
    for (i64 r = 0; r < rows; ++r) {                                                                \
        const T* a = act + r * lda;                                                                 \
        const T* p = hp + r * ldhp;                                                                 \
        const T* g_ = dh + r * lddh;                                                                \
        T* x = dgx + r * ldx;                                                                       \
        T* y = dgh + r * ldgh;                                                                      \
        T* dd = dhd + r * lddhd;                                                                    \
        _Pragma("omp simd")                                                                         \
        for (i64 j = 0; j < H; ++j) {                                                               \
            const T rg = a[j], zg = a[H + j], n = a[2 * H + j], hn = a[3 * H + j], dhj = g_[j];     \
            const T dn = dhj * ((T)1 - zg) * ((T)1 - n * n);                                        \
            const T dz = dhj * (p[j] - n) * zg * ((T)1 - zg);                                       \
            const T dr = dn * hn * rg * ((T)1 - rg);                                                \
            x[j] = dr; x[H + j] = dz; x[2 * H + j] = dn;                                            \
            y[j] = dr; y[H + j] = dz; y[2 * H + j] = dn * rg;                                       \
            dd[j] = dhj * zg;                                                                       \
        }                                                                                           \
    }                                                                                               \
}

NNX_CELLS(float, f32)
NNX_CELLS(double, f64)

/* The recurrent time loops (nnx/functional/recurrent_loop.py's _direction_forward/_backward with the
 * cells above, the reference): a whole direction of a layer in one call, so a step costs one GEMM
 * and one cell pass and no Python. The GEMMs go through BLAS's cblas_?gemm, a pointer to NumPy's
 * own OpenBLAS that backends/threads.py found (cblas_gemm) (int64 indices where that build is ILP64,
 * int otherwise), so they are the products np.matmul would run. Layout (the time loop's): buf is
 * (steps, B, S*H), step t's input projection in its first G*H columns, overwritten by the step's
 * saved activations and, backward, by its gate gradients; out and cprev are (steps, B, H): each
 * step's output and the cell state before it; hprev holds the state before each step, rows of H
 * elements ldh apart (ldh > H: the rows are the last columns of recurrent.py's [x | 1 | h_prev]
 * buffer); every other array is contiguous. reverse runs the steps from the last to the first. */
#define NNX_SCANS(T, SUF, ACT_TANH)                                                                 \
typedef void (*nnx_gemm64_##SUF)(int, int, int, i64, i64, i64, T, const T*, i64, const T*, i64, T, T*, i64); \
typedef void (*nnx_gemm32_##SUF)(int, int, int, int, int, int, T, const T*, int, const T*, int, T, T*, int); \
/* C (m, n) = A (m, k) B (k, n) + beta C, all row-major (CblasRowMajor 101, CblasNoTrans 111) */   \
static void nnx_gemm_##SUF(const void* fn, i64 ilp64, i64 m, i64 n, i64 k, const T* a, i64 lda,    \
                           const T* b, i64 ldb, T beta, T* c, i64 ldc) {                            \
    if (nnx_own_gemm_##SUF(0, 0, m, n, k, a, lda, b, ldb, beta, c, ldc)) return;                   \
    if (ilp64) ((nnx_gemm64_##SUF)fn)(101, 111, 111, m, n, k, (T)1, a, lda, b, ldb, beta, c, ldc); \
    else ((nnx_gemm32_##SUF)fn)(101, 111, 111, (int)m, (int)n, (int)k, (T)1, a, (int)lda, b, (int)ldb, \
                                beta, c, (int)ldc);                                                 \
}                                                                                                   \
/* the same with b packed by nnx_own_pack (bp; NULL: nnx_gemm) */                                  \
static void nnx_gemm_p_##SUF(const T* bp, const void* fn, i64 ilp64, i64 m, i64 n, i64 k, const T* a, \
                             i64 lda, const T* b, i64 ldb, T beta, T* c, i64 ldc) {                 \
    if (bp && nnx_own_packed_##SUF(bp, m, n, k, a, lda, beta, c, ldc)) return;                      \
    nnx_gemm_##SUF(fn, ilp64, m, n, k, a, lda, b, ldb, beta, c, ldc);                               \
}                                                                                                   \
/* rows of n elements from src (row stride lds) to dst (row stride ldd) */                        \
static void nnx_rows_##SUF(T* dst, i64 ldd, const T* src, i64 lds, i64 rows, i64 n) {              \
    for (i64 r = 0; r < rows; ++r) memcpy(dst + r * ldd, src + r * lds, (size_t)n * sizeof(T));     \
}                                                                                                   \
/* dst = a + b over n elements (b may be NULL: a copy) */                                           \
static void nnx_add_##SUF(T* dst, const T* a, const T* b, i64 n) {                                  \
    if (!b) { memcpy(dst, a, (size_t)n * sizeof(T)); return; }                                      \
    _Pragma("omp simd")                                                                             \
    for (i64 i = 0; i < n; ++i) dst[i] = a[i] + b[i];                                               \
}                                                                                                   \
                                                                                                    \
/* LSTM forward: S = 5 (act = i, f, g, o, tanh c'), gates = buf[t] + h W_hh^T by a GEMM with beta 1 \
 * on buf[t] itself. hn, cn: the final states. */                                                   \
void nnx_lstm_scan_fwd_##SUF(const void* gemm, i64 ilp64, i64 steps, i64 B, i64 BF, i64 H, i64 reverse,   \
                             T* buf, const T* whhT, const T* h0, const T* c0, T* out, T* hprev,    \
                             i64 ldh, T* cprev, T* hn, T* cn) {                                     \
    const i64 BH = B * H, BFH = BF * H, S = 5 * H;                                                                \
    const T* wp = nnx_own_pack_##SUF(whhT, 4 * H, H, 4 * H);                                        \
    for (i64 s = 0; s < steps; ++s) {                                                               \
        const i64 t = reverse ? steps - 1 - s : s, nx = reverse ? t - 1 : t + 1;                    \
        const int last = s + 1 == steps;                                                            \
        if (s == 0) { nnx_rows_##SUF(hprev + t * BF * ldh, ldh, h0, H, B, H);                        \
                      memcpy(cprev + t * BFH, c0, (size_t)BH * sizeof(T)); }                         \
        T* g = buf + t * BF * S;                                                                     \
        nnx_gemm_p_##SUF(wp, gemm, ilp64, B, 4 * H, H, hprev + t * BF * ldh, ldh, whhT, 4 * H, (T)1, g, S); \
        nnx_lstm_fwd_##SUF(g, S, cprev + t * BFH, H, B, H, g, S, out + t * BFH, H,                    \
                           last ? cn : cprev + nx * BFH, H);                                         \
        if (last) memcpy(hn, out + t * BFH, (size_t)BH * sizeof(T));                                 \
        else nnx_rows_##SUF(hprev + nx * BF * ldh, ldh, out + t * BFH, H, B, H);                      \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* LSTM backward: buf[t]'s activations become the gate gradients, dh (B, H) and dc (B, H) carry    \
 * the state gradients (in: those of the final states, dc_in 0 when there is none; out: those of   \
 * h0, c0); dout (steps, B, H) may be NULL; tmp: B*H scratch. */                                    \
void nnx_lstm_scan_bwd_##SUF(const void* gemm, i64 ilp64, i64 steps, i64 B, i64 BF, i64 H, i64 reverse,   \
                             T* buf, const T* whh, const T* cprev, const T* dout, T* dh, T* dc,    \
                             i64 dc_in, T* tmp) {                                                   \
    const i64 BH = B * H, BFH = BF * H, S = 5 * H;                                                                \
    const T* wp = nnx_own_pack_##SUF(whh, H, 4 * H, H);                                             \
    for (i64 s = 0; s < steps; ++s) {                                                               \
        const i64 t = reverse ? s : steps - 1 - s;                                                  \
        T* g = buf + t * BF * S;                                                                     \
        const T* dhs = dh;                                                                          \
        if (dout) { nnx_add_##SUF(tmp, dh, dout + t * BFH, BH); dhs = tmp; }                         \
        nnx_lstm_bwd_##SUF(g, S, cprev + t * BFH, H, dhs, H, (s || dc_in) ? dc : 0, H, B, H, g, S, dc, H); \
        nnx_gemm_p_##SUF(wp, gemm, ilp64, B, H, 4 * H, g, S, whh, H, (T)0, dh, H);                  \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* GRU forward: S = 4 (act = r, z, n, gh_n + b_hn), gh (B, 3H) scratch for h W_hh^T; bhn may be    \
 * NULL. */                                                                                         \
void nnx_gru_scan_fwd_##SUF(const void* gemm, i64 ilp64, i64 steps, i64 B, i64 BF, i64 H, i64 reverse,    \
                            T* buf, const T* whhT, const T* bhn, const T* h0, T* out, T* hprev,    \
                            i64 ldh, T* hn, T* gh) {                                                \
    const i64 BH = B * H, BFH = BF * H, S = 4 * H;                                                                \
    const T* wp = nnx_own_pack_##SUF(whhT, 3 * H, H, 3 * H);                                        \
    for (i64 s = 0; s < steps; ++s) {                                                               \
        const i64 t = reverse ? steps - 1 - s : s, nx = reverse ? t - 1 : t + 1;                    \
        T* hp = hprev + t * BF * ldh;                                                                \
        if (s == 0) nnx_rows_##SUF(hp, ldh, h0, H, B, H);                                           \
        T* g = buf + t * BF * S;                                                                     \
        nnx_gemm_p_##SUF(wp, gemm, ilp64, B, 3 * H, H, hp, ldh, whhT, 3 * H, (T)0, gh, 3 * H);      \
        nnx_gru_fwd_##SUF(g, S, gh, 3 * H, hp, ldh, bhn, B, H, out + t * BFH, H, g, S);              \
        if (s + 1 == steps) memcpy(hn, out + t * BFH, (size_t)BH * sizeof(T));                       \
        else nnx_rows_##SUF(hprev + nx * BF * ldh, ldh, out + t * BFH, H, B, H);                      \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* GRU backward: buf[t] becomes dgx, dgh (steps, B, 3H) the recurrent part's gradients; dh (in:    \
 * the final state's gradient, out: h0's) = dh' z + dgh W_hh. */                                     \
void nnx_gru_scan_bwd_##SUF(const void* gemm, i64 ilp64, i64 steps, i64 B, i64 BF, i64 H, i64 reverse,    \
                            T* buf, const T* whh, const T* hprev, i64 ldh, const T* dout, T* dgh,  \
                            T* dh, T* tmp) {                                                        \
    const i64 BH = B * H, BFH = BF * H, S = 4 * H;                                                                \
    const T* wp = nnx_own_pack_##SUF(whh, H, 3 * H, H);                                             \
    for (i64 s = 0; s < steps; ++s) {                                                               \
        const i64 t = reverse ? s : steps - 1 - s;                                                  \
        T* g = buf + t * BF * S;                                                                     \
        T* gh = dgh + t * BF * 3 * H;                                                                \
        const T* dhs = dh;                                                                          \
        if (dout) { nnx_add_##SUF(tmp, dh, dout + t * BFH, BH); dhs = tmp; }                         \
        nnx_gru_bwd_##SUF(g, S, hprev + t * BF * ldh, ldh, dhs, H, B, H, g, S, gh, 3 * H, dh, H);    \
        nnx_gemm_p_##SUF(wp, gemm, ilp64, B, H, 3 * H, gh, 3 * H, whh, H, (T)1, dh, H);             \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* Elman RNN forward: S = 1, buf[t] = act(buf[t] + h W_hh^T) is the step's state and what its     \
 * backward needs; relu != 0 for ReLU, else tanh. */                                                \
void nnx_rnn_scan_fwd_##SUF(const void* gemm, i64 ilp64, i64 steps, i64 B, i64 BF, i64 H, i64 reverse,    \
                            i64 relu, T* buf, const T* whhT, const T* h0, T* out, T* hprev, i64 ldh, \
                            T* hn) {                                                                \
    const i64 BH = B * H, BFH = BF * H;                                                                           \
    const T* wp = nnx_own_pack_##SUF(whhT, H, H, H);                                                \
    for (i64 s = 0; s < steps; ++s) {                                                               \
        const i64 t = reverse ? steps - 1 - s : s, nx = reverse ? t - 1 : t + 1;                    \
        if (s == 0) nnx_rows_##SUF(hprev + t * BF * ldh, ldh, h0, H, B, H);                          \
        T* g = buf + t * BFH;                                                                        \
        T* o = out + t * BFH;                                                                        \
        nnx_gemm_p_##SUF(wp, gemm, ilp64, B, H, H, hprev + t * BF * ldh, ldh, whhT, H, (T)1, g, H);  \
        if (relu) { _Pragma("omp simd") for (i64 i = 0; i < BH; ++i) { const T v = g[i] > 0 ? g[i] : (T)0; \
                                                                      g[i] = v; o[i] = v; } }     \
        else { _Pragma("omp simd") for (i64 i = 0; i < BH; ++i) { const T v = ACT_TANH(g[i]);      \
                                                                 g[i] = v; o[i] = v; } }          \
        if (s + 1 == steps) memcpy(hn, o, (size_t)BH * sizeof(T));                                  \
        else nnx_rows_##SUF(hprev + nx * BF * ldh, ldh, o, H, B, H);                                 \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* Elman RNN backward: buf[t] (the state h') becomes dz = dh' act'(h'), dh = dz W_hh. */            \
void nnx_rnn_scan_bwd_##SUF(const void* gemm, i64 ilp64, i64 steps, i64 B, i64 BF, i64 H, i64 reverse,    \
                            i64 relu, T* buf, const T* whh, const T* dout, T* dh) {                 \
    const i64 BH = B * H, BFH = BF * H;                                                                           \
    const T* wp = nnx_own_pack_##SUF(whh, H, H, H);                                                 \
    for (i64 s = 0; s < steps; ++s) {                                                               \
        const i64 t = reverse ? s : steps - 1 - s;                                                  \
        T* g = buf + t * BFH;                                                                        \
        const T* d = dout ? dout + t * BFH : 0;                                                      \
        if (relu) { _Pragma("omp simd") for (i64 i = 0; i < BH; ++i) {                             \
                        const T v = d ? dh[i] + d[i] : dh[i]; g[i] = g[i] > 0 ? v : (T)0; } }     \
        else { _Pragma("omp simd") for (i64 i = 0; i < BH; ++i) {                                  \
                   const T v = d ? dh[i] + d[i] : dh[i]; g[i] = v * ((T)1 - g[i] * g[i]); } }     \
        nnx_gemm_p_##SUF(wp, gemm, ilp64, B, H, H, g, H, whh, H, (T)0, dh, H);                      \
    }                                                                                               \
}

NNX_SCANS(float, f32, nx_tanh_f32)
NNX_SCANS(double, f64, nx_tanh_f64)

/* Adam's update in one pass (backends/numpy_fused.py's _adam_update_flat is the reference, in
 * torch.optim.Adam's order): m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2,
 * p -= step_size * m / (sqrt(v) * inv_sqrt_bc2 + eps), step_size = lr / bc1. The coefficients are
 * rounded to the arrays' type first, as NumPy does with Python floats. NumPy needs 11 passes. */
#define NNX_ADAM(T, SUF, SQRT)                                                                      \
void nnx_adam_##SUF(T* p, const T* g, T* m, T* v, i64 n, double b1, double b2, double eps,         \
                    double step_size, double inv_sqrt_bc2) {                                        \
    const T c1 = (T)b1, d1 = (T)(1.0 - b1), c2 = (T)b2, d2 = (T)(1.0 - b2), e = (T)eps;           \
    const T s = (T)step_size, ib = (T)inv_sqrt_bc2;                                                 \
    _Pragma("omp simd")                                                                             \
    for (i64 i = 0; i < n; ++i) {                                                                   \
        const T gi = g[i];                                                                          \
        const T mi = m[i] * c1 + d1 * gi;                                                           \
        const T vi = v[i] * c2 + (gi * gi) * d2;                                                    \
        m[i] = mi;                                                                                  \
        v[i] = vi;                                                                                  \
        p[i] -= (mi / (SQRT(vi) * ib + e)) * s;                                                     \
    }                                                                                               \
}

NNX_ADAM(float, f32, sqrtf)
NNX_ADAM(double, f64, sqrt)

/* torch.optim.SGD on n elements, in place (fused_train.py's sgd_step_ is the reference): g = grad
 * (+ wd * p); with momentum, buf = g on the first step, else buf = buf * momentum + (1 - dampening)
 * * g, and g = g + momentum * buf (Nesterov) or buf; p -= lr * g. buf is NULL without momentum.
 * Coefficients rounded to T first, as NumPy does with Python floats. */
#define NNX_SGD(T, SUF)                                                                             \
void nnx_sgd_##SUF(T* p, const T* grad, T* buf, i64 n, double lr, double momentum, double dampening, \
                   double wd, int nesterov, int first) {                                            \
    const T l = (T)lr, m = (T)momentum, d1 = (T)(1.0 - dampening), w = (T)wd;                      \
    _Pragma("omp simd")                                                                             \
    for (i64 i = 0; i < n; ++i) {                                                                   \
        T g = wd != 0.0 ? grad[i] + w * p[i] : grad[i];                                             \
        if (buf) {                                                                                  \
            const T b = first ? g : buf[i] * m + d1 * g;                                            \
            buf[i] = b;                                                                             \
            g = nesterov ? g + m * b : b;                                                           \
        }                                                                                           \
        p[i] -= l * g;                                                                              \
    }                                                                                               \
}

NNX_SGD(float, f32)
NNX_SGD(double, f64)

/* Cross-entropy of class indices, rows [lo, hi) of logits z (N, C) and targets t (int64), without
 * class weights or smoothing (numpy_fused.py's cross_entropy_forward/backward; the generic path in
 * fused_api.py is the reference). Forward: logp = z - max - log(sum(exp(z - max))) (the sum in
 * double), loss[i] = -logp[i, t[i]] and wy[i] = 1 on counted rows, 0 and 0 where t[i] == ignore.
 * A target outside [0, C) that is not ignore (the caller checks first) is never read through: its
 * row's loss is NaN. Backward: d = (exp(logp) - onehot(t)) * wy * s, with s = g[i] (reduction
 * none) or the scalar scale. */
#define NNX_CROSS_ENTROPY(T, SUF, EXP)                                                              \
void nnx_ce_fwd_##SUF(const T* z, const i64* t, i64 lo, i64 hi, i64 C, i64 ignore, T* logp, T* loss, \
                      T* wy) {                                                                      \
    for (i64 i = lo; i < hi; ++i) {                                                                 \
        const T* zi = z + i * C;                                                                    \
        T* li = logp + i * C;                                                                       \
        T mx = zi[0];                                                                               \
        for (i64 c = 1; c < C; ++c) mx = (zi[c] > mx || zi[c] != zi[c]) ? zi[c] : mx;               \
        double se = 0;                                                                              \
        for (i64 c = 0; c < C; ++c) { const T v = zi[c] - mx; li[c] = v; se += (double)EXP(v); }    \
        const T ls = (T)log(se);                                                                    \
        _Pragma("omp simd")                                                                         \
        for (i64 c = 0; c < C; ++c) li[c] -= ls;                                                    \
        const i64 ti = t[i];                                                                        \
        if (ti == ignore) { loss[i] = 0; wy[i] = 0; }                                               \
        else if (ti < 0 || ti >= C) { loss[i] = (T)NAN; wy[i] = 1; }                                \
        else { loss[i] = -li[ti]; wy[i] = 1; }                                                      \
    }                                                                                               \
}                                                                                                   \
void nnx_ce_bwd_##SUF(const T* logp, const i64* t, i64 lo, i64 hi, i64 C, i64 ignore, const T* g,  \
                      double scale, T* d) {                                                         \
    const T s0 = (T)scale;                                                                          \
    for (i64 i = lo; i < hi; ++i) {                                                                 \
        const T* li = logp + i * C;                                                                 \
        T* di = d + i * C;                                                                          \
        const i64 ti = t[i];                                                                        \
        if (ti == ignore) {                                                                         \
            _Pragma("omp simd")                                                                     \
            for (i64 c = 0; c < C; ++c) di[c] = 0;                                                  \
            continue;                                                                               \
        }                                                                                           \
        const T s = g ? g[i] : s0;                                                                  \
        _Pragma("omp simd")                                                                         \
        for (i64 c = 0; c < C; ++c) di[c] = EXP(li[c]);                                             \
        if (ti >= 0 && ti < C) di[ti] -= (T)1;                                                      \
        else di[0] = (T)NAN;                                                                        \
        _Pragma("omp simd")                                                                         \
        for (i64 c = 0; c < C; ++c) di[c] *= s;                                                     \
    }                                                                                               \
}

NNX_CROSS_ENTROPY(float, f32, expf)
NNX_CROSS_ENTROPY(double, f64, exp)

/* col2im of the flat-shift convolution (nnx/functional/_flat_shift.py; Backend.shift_add is the
 * reference): out (P, Cg, L) += cols (P, kk, Cg, run) shifted by off[k] along L, for each k, with
 * P = samples * groups. Each output row stays in cache while its kk shifted rows are added (NumPy:
 * kk read-modify-write passes over the whole output). */
#define NNX_SHIFT_ADD(T, SUF)                                                                       \
void nnx_shift_add_##SUF(T* out, const T* cols, i64 P, i64 kk, i64 cg, i64 L, i64 run, const i64* off) { \
    for (i64 p = 0; p < P; ++p) {                                                                   \
        for (i64 c = 0; c < cg; ++c) {                                                              \
            T* o = out + (p * cg + c) * L;                                                          \
            for (i64 k = 0; k < kk; ++k) {                                                          \
                const T* s = cols + ((p * kk + k) * cg + c) * run;                                  \
                T* d = o + off[k];                                                                  \
                _Pragma("omp simd")                                                                 \
                for (i64 j = 0; j < run; ++j) d[j] += s[j];                                         \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
}

NNX_SHIFT_ADD(float, f32)
NNX_SHIFT_ADD(double, f64)

/* Direct convolution for few input taps (stride 1, no dilation, one group; backends/fused_api.py's
 * conv2d_direct_* methods are the references): a LeNet-5 layer has 25-150 taps per output, too few
 * for a GEMM to pay for its im2col copies, and its M = O (6-16) is too short for OpenBLAS's kernels.
 * Each sample is copied, zero-padded, into scratch as C flat planes of (OH + KH - 1) x WP, WP =
 * OW + KW - 1, so that output (i, j) of tap (a, b) reads plane element (i*WP + j) + (a*WP + b): an
 * output plane is one run of OH*WP positions computed over the full padded width (the WP - OW extra
 * columns of each row are computed and dropped), in blocks of NNX_DJ positions for NNX_DO output
 * channels at once, held in registers, each input element loaded serving NNX_DO products. The
 * weight gradient runs the same scheme with dy laid out over the padded width (zero columns). */
#define NNX_DJ 32
#define NNX_DO 4
#define NNX_DIRECT_CONV(T, SUF)                                                                     \
/* Zero-padded copy of one sample x (C, H, W): C planes of `plane` elements, rows WP apart. */      \
static void nnx_pad_flat_##SUF(const T* x, i64 C, i64 H, i64 W, i64 pt, i64 pl, i64 HP, i64 WP,    \
                               i64 plane, T* xp) {                                                  \
    memset(xp, 0, (size_t)(C * plane) * sizeof(T));                                                 \
    for (i64 c = 0; c < C; ++c)                                                                     \
        for (i64 r = 0; r < H; ++r) {                                                               \
            const i64 dr = r + pt, c0 = pl < 0 ? -pl : 0, c1 = W < WP - pl ? W : WP - pl;           \
            if (dr < 0 || dr >= HP || c1 <= c0) continue;                                           \
            memcpy(xp + c * plane + dr * WP + pl + c0, x + (c * H + r) * W + c0, (size_t)(c1 - c0) * sizeof(T)); \
        }                                                                                           \
}                                                                                                   \
                                                                                                    \
/* y (N, O, OH, OW) = bias[o] + sum_{c,a,b} w[o,c,a,b] x[n, c, i+a-pt, j+b-pl] (outside x: 0) for  \
 * samples [n0, n1); bias may be NULL; scratch: nnx_conv_direct_scratch elements. */                \
void nnx_conv_direct_fwd_##SUF(const T* x, i64 n0, i64 n1, i64 C, i64 H, i64 W, const T* w, i64 O, \
                               i64 KH, i64 KW, i64 pt, i64 pl, i64 OH, i64 OW, const T* bias, T* y, \
                               T* scratch) {                                                        \
    const i64 WP = OW + KW - 1, HP = OH + KH - 1, run = OH * WP, taps = C * KH * KW;                \
    const i64 runp = (run + NNX_DJ - 1) / NNX_DJ * NNX_DJ;                                          \
    const i64 plane = HP * WP + (runp - run) + KW;  /* room for the last block's overrun */          \
    T* ext = scratch + C * plane;                   /* NNX_DO output planes over the padded width */ \
    for (i64 n = n0; n < n1; ++n) {                                                                 \
        nnx_pad_flat_##SUF(x + n * C * H * W, C, H, W, pt, pl, HP, WP, plane, scratch);             \
        for (i64 o0 = 0; o0 < O; o0 += NNX_DO) {                                                    \
            const i64 no = O - o0 < NNX_DO ? O - o0 : NNX_DO;                                       \
            for (i64 p0 = 0; p0 < runp; p0 += NNX_DJ) {                                             \
                T acc[NNX_DO][NNX_DJ];                                                              \
                for (int ob = 0; ob < NNX_DO; ++ob) {                                               \
                    const T b0 = bias && ob < no ? bias[o0 + ob] : (T)0;                            \
                    for (int jj = 0; jj < NNX_DJ; ++jj) acc[ob][jj] = b0;                           \
                }                                                                                   \
                for (i64 c = 0; c < C; ++c)                                                         \
                    for (i64 a = 0; a < KH; ++a)                                                    \
                        for (i64 b = 0; b < KW; ++b) {                                              \
                            const T* xr = scratch + c * plane + a * WP + b + p0;                    \
                            const i64 tap = (c * KH + a) * KW + b;                                  \
                            T wv[NNX_DO];                                                           \
                            for (int ob = 0; ob < NNX_DO; ++ob) wv[ob] = ob < no ? w[(o0 + ob) * taps + tap] : (T)0; \
                            for (int ob = 0; ob < NNX_DO; ++ob) {                                   \
                                _Pragma("omp simd")                                                 \
                                for (int jj = 0; jj < NNX_DJ; ++jj) acc[ob][jj] += wv[ob] * xr[jj]; \
                            }                                                                       \
                        }                                                                           \
                for (int ob = 0; ob < NNX_DO; ++ob)                                                 \
                    for (int jj = 0; jj < NNX_DJ; ++jj) ext[ob * runp + p0 + jj] = acc[ob][jj];     \
            }                                                                                       \
            for (int ob = 0; ob < no; ++ob)  /* drop the extra columns */                           \
                for (i64 i = 0; i < OH; ++i)                                                        \
                    memcpy(y + ((n * O + o0 + ob) * OH + i) * OW, ext + ob * runp + i * WP,         \
                           (size_t)OW * sizeof(T));                                                 \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* dw (O, C, KH, KW), rows o in [o0, o1), = sum over samples and outputs of dy[n,o,i,j] x[n, c,    \
 * i+a-pt, j+b-pl]: every sample in turn, padded into scratch as above, dy's planes laid over the  \
 * padded width with zeros in the extra columns. */                                                \
void nnx_conv_direct_dw_##SUF(const T* x, const T* dy, i64 o0, i64 o1, i64 N, i64 C, i64 H, i64 W, \
                              i64 O, i64 KH, i64 KW, i64 pt, i64 pl, i64 OH, i64 OW, T* dw, T* scratch) { \
    const i64 WP = OW + KW - 1, HP = OH + KH - 1, run = OH * WP, taps = C * KH * KW;                \
    const i64 runp = (run + NNX_DJ - 1) / NNX_DJ * NNX_DJ;                                          \
    const i64 plane = HP * WP + (runp - run) + KW;                                                  \
    T* gext = scratch + C * plane;                                                                  \
    for (i64 k = o0 * taps; k < o1 * taps; ++k) dw[k] = 0;                                          \
    for (i64 n = 0; n < N; ++n) {                                                                   \
        nnx_pad_flat_##SUF(x + n * C * H * W, C, H, W, pt, pl, HP, WP, plane, scratch);             \
        for (i64 q0 = o0; q0 < o1; q0 += NNX_DO) {                                                  \
            const i64 no = o1 - q0 < NNX_DO ? o1 - q0 : NNX_DO;                                     \
            memset(gext, 0, (size_t)(NNX_DO * runp) * sizeof(T));                                   \
            for (int ob = 0; ob < no; ++ob)                                                         \
                for (i64 i = 0; i < OH; ++i)                                                        \
                    memcpy(gext + ob * runp + i * WP, dy + ((n * O + q0 + ob) * OH + i) * OW, (size_t)OW * sizeof(T)); \
            for (i64 c = 0; c < C; ++c)                                                             \
                for (i64 a = 0; a < KH; ++a)                                                        \
                    for (i64 b = 0; b < KW; ++b) {                                                  \
                        const T* xr = scratch + c * plane + a * WP + b;                             \
                        T acc[NNX_DO][NNX_DJ];                                                      \
                        for (int ob = 0; ob < NNX_DO; ++ob)                                         \
                            for (int jj = 0; jj < NNX_DJ; ++jj) acc[ob][jj] = 0;                    \
                        for (i64 p0 = 0; p0 < runp; p0 += NNX_DJ)                                   \
                            for (int ob = 0; ob < NNX_DO; ++ob) {                                   \
                                const T* g = gext + ob * runp + p0;                                 \
                                _Pragma("omp simd")                                                 \
                                for (int jj = 0; jj < NNX_DJ; ++jj) acc[ob][jj] += g[jj] * xr[p0 + jj]; \
                            }                                                                       \
                        const i64 tap = (c * KH + a) * KW + b;                                      \
                        for (int ob = 0; ob < no; ++ob) {                                           \
                            T sum = 0;                                                              \
                            _Pragma("omp simd reduction(+:sum)")                                    \
                            for (int jj = 0; jj < NNX_DJ; ++jj) sum += acc[ob][jj];                 \
                            dw[(q0 + ob) * taps + tap] += sum;                                      \
                        }                                                                           \
                    }                                                                               \
        }                                                                                           \
    }                                                                                               \
}

NNX_DIRECT_CONV(float, f32)
NNX_DIRECT_CONV(double, f64)

/* Convolution as one GEMM per sample (stride 1, no dilation, one group; the flat-shift path of
 * nnx/functional/_flat_shift.py is the reference): the sample zero-padded into flat planes of
 * width WP = OW + KW - 1 (as the direct kernels), its im2col by KH*KW contiguous runs of OH*WP per
 * channel, and NumPy's own cblas GEMM (gemm, ilp64: threads.cblas_gemm) with the weight
 * (O, C*KH*KW). The WP - OW extra columns of each output row are computed and dropped. */
#define NNX_GEMM_CONV(T, SUF)                                                                       \
typedef void (*nnx_gemmt64_##SUF)(int, int, int, i64, i64, i64, T, const T*, i64, const T*, i64, T, T*, i64); \
typedef void (*nnx_gemmt32_##SUF)(int, int, int, int, int, int, T, const T*, int, const T*, int, T, T*, int); \
/* C (m, n) = op(A) op(B) + beta C, row-major; ta, tb: 111 (as is) or 112 (transposed) */        \
static void nnx_gemmt_##SUF(const void* fn, i64 ilp64, int ta, int tb, i64 m, i64 n, i64 k, const T* a, \
                            i64 lda, const T* b, i64 ldb, T beta, T* c, i64 ldc) {                  \
    if (nnx_own_gemm_##SUF(ta == 112, tb == 112, m, n, k, a, lda, b, ldb, beta, c, ldc)) return;   \
    if (ilp64) ((nnx_gemmt64_##SUF)fn)(101, ta, tb, m, n, k, (T)1, a, lda, b, ldb, beta, c, ldc);   \
    else ((nnx_gemmt32_##SUF)fn)(101, ta, tb, (int)m, (int)n, (int)k, (T)1, a, (int)lda, b, (int)ldb, \
                                 beta, c, (int)ldc);                                                \
}                                                                                                   \
/* cols (C*KH*KW, run) of one padded sample xs (C planes of `plane`) */                             \
static void nnx_flat_cols_##SUF(const T* xs, i64 C, i64 KH, i64 KW, i64 WP, i64 plane, i64 run, T* cols) { \
    for (i64 c = 0; c < C; ++c)                                                                     \
        for (i64 a = 0; a < KH; ++a)                                                                \
            for (i64 b = 0; b < KW; ++b)                                                            \
                memcpy(cols + ((c * KH + a) * KW + b) * run, xs + c * plane + a * WP + b, (size_t)run * sizeof(T)); \
}                                                                                                   \
/* dy of one sample (O, OH, OW) over the padded width: (O, run), zeros in the extra columns */     \
static void nnx_dy_ext_##SUF(const T* dy, i64 O, i64 OH, i64 OW, i64 WP, T* ext) {                 \
    for (i64 o = 0; o < O; ++o)                                                                     \
        for (i64 i = 0; i < OH; ++i) {                                                              \
            T* d = ext + (o * OH + i) * WP;                                                         \
            memcpy(d, dy + (o * OH + i) * OW, (size_t)OW * sizeof(T));                              \
            memset(d + OW, 0, (size_t)(WP - OW) * sizeof(T));                                       \
        }                                                                                           \
}                                                                                                   \
/* y (N, O, OH, OW) for samples [n0, n1): w (O, C*KH*KW), bias (O) or NULL, pads pt, pl >= 0;       \
 * scratch: C*plane + C*KH*KW*run + O*run entries (nnx_gemm_conv_scratch in numpy_gemm_conv.py). */ \
void nnx_gemm_conv_fwd_##SUF(const void* gemm, i64 ilp64, const T* x, i64 n0, i64 n1, i64 C, i64 H, i64 W, \
                             const T* w, i64 O, i64 KH, i64 KW, i64 pt, i64 pl, i64 OH, i64 OW,      \
                             const T* bias, T* y, T* scratch) {                                     \
    const i64 WP = OW + KW - 1, HP = OH + KH - 1, run = OH * WP, kc = C * KH * KW;                  \
    const i64 plane = HP * WP + KW;                                                                 \
    T* cols = scratch + C * plane;                                                                  \
    T* ext = cols + kc * run;                                                                       \
    const int pointwise = KH == 1 && KW == 1 && pt == 0 && pl == 0; /* x's planes are the columns */ \
    for (i64 n = n0; n < n1; ++n) {                                                                 \
        if (pointwise) {                                                                            \
            T* yn = y + n * O * run;                                                                \
            nnx_gemmt_##SUF(gemm, ilp64, 111, 111, O, run, C, w, C, x + n * C * H * W, run, (T)0, yn, run); \
            if (bias) for (i64 o = 0; o < O; ++o) {                                                 \
                T* d = yn + o * run;                                                                \
                const T b0 = bias[o];                                                               \
                _Pragma("omp simd")                                                                 \
                for (i64 j = 0; j < run; ++j) d[j] += b0;                                           \
            }                                                                                       \
            continue;                                                                               \
        }                                                                                           \
        nnx_pad_flat_##SUF(x + n * C * H * W, C, H, W, pt, pl, HP, WP, plane, scratch);             \
        nnx_flat_cols_##SUF(scratch, C, KH, KW, WP, plane, run, cols);                              \
        nnx_gemmt_##SUF(gemm, ilp64, 111, 111, O, run, kc, w, kc, cols, run, (T)0, ext, run);       \
        for (i64 o = 0; o < O; ++o) {                                                               \
            const T b0 = bias ? bias[o] : (T)0;                                                     \
            for (i64 i = 0; i < OH; ++i) {                                                          \
                T* d = y + ((n * O + o) * OH + i) * OW;                                             \
                const T* s = ext + o * run + i * WP;                                                \
                _Pragma("omp simd")                                                                 \
                for (i64 j = 0; j < OW; ++j) d[j] = s[j] + b0;                                      \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
/* Backward over sample blocks [k0, k1) of `block` samples (the last may be shorter): dwp[k]       \
 * (O, C*KH*KW) = the weight gradient summed over block k (NULL: none), dx (N, C, H, W) (NULL:      \
 * none). Scratch: C*plane + C*KH*KW*run + O*run entries. */                                        \
void nnx_gemm_conv_bwd_##SUF(const void* gemm, i64 ilp64, const T* x, const T* dy, i64 k0, i64 k1,   \
                             i64 block, i64 N, i64 C, i64 H, i64 W, const T* w, i64 O, i64 KH, i64 KW, \
                             i64 pt, i64 pl, i64 OH, i64 OW, T* dwp, T* dx, T* scratch) {           \
    const i64 WP = OW + KW - 1, HP = OH + KH - 1, run = OH * WP, kc = C * KH * KW;                  \
    const i64 plane = HP * WP + KW;                                                                 \
    T* cols = scratch + C * plane;                                                                  \
    T* ext = cols + kc * run;                                                                       \
    const int pointwise = KH == 1 && KW == 1 && pt == 0 && pl == 0; /* dy, x and dx need no layout */ \
    for (i64 k = k0; k < k1; ++k) {                                                                 \
        const i64 s0 = k * block, s1 = s0 + block < N ? s0 + block : N;                             \
        for (i64 n = s0; n < s1; ++n) {                                                             \
            if (pointwise) {                                                                        \
                const T* g = dy + n * O * run;                                                      \
                if (dwp) nnx_gemmt_##SUF(gemm, ilp64, 111, 112, O, C, run, g, run, x + n * C * run, run, \
                                         n == s0 ? (T)0 : (T)1, dwp + k * O * kc, kc);              \
                if (dx) nnx_gemmt_##SUF(gemm, ilp64, 112, 111, C, run, O, w, C, g, run, (T)0, dx + n * C * run, run); \
                continue;                                                                           \
            }                                                                                       \
            nnx_dy_ext_##SUF(dy + n * O * OH * OW, O, OH, OW, WP, ext);                             \
            if (dwp) { /* dW (O, kc) += dy_ext (O, run) cols^T (run, kc) */                         \
                nnx_pad_flat_##SUF(x + n * C * H * W, C, H, W, pt, pl, HP, WP, plane, scratch);     \
                nnx_flat_cols_##SUF(scratch, C, KH, KW, WP, plane, run, cols);                      \
                nnx_gemmt_##SUF(gemm, ilp64, 111, 112, O, kc, run, ext, run, cols, run, n == s0 ? (T)0 : (T)1, \
                                dwp + k * O * kc, kc);                                              \
            }                                                                                       \
            if (dx) { /* dcols (kc, run) = w^T dy_ext, added back along the flat shifts */         \
                nnx_gemmt_##SUF(gemm, ilp64, 112, 111, kc, run, O, w, kc, ext, run, (T)0, cols, run); \
                memset(scratch, 0, (size_t)(C * plane) * sizeof(T));                                \
                for (i64 c = 0; c < C; ++c)                                                         \
                    for (i64 a = 0; a < KH; ++a)                                                    \
                        for (i64 b = 0; b < KW; ++b) {                                              \
                            T* d = scratch + c * plane + a * WP + b;                                \
                            const T* s = cols + ((c * KH + a) * KW + b) * run;                      \
                            _Pragma("omp simd")                                                     \
                            for (i64 j = 0; j < run; ++j) d[j] += s[j];                             \
                        }                                                                           \
                for (i64 c = 0; c < C; ++c)                                                         \
                    for (i64 r = 0; r < H; ++r)                                                     \
                        memcpy(dx + ((n * C + c) * H + r) * W, scratch + c * plane + (r + pt) * WP + pl, \
                               (size_t)W * sizeof(T));                                              \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
}

NNX_GEMM_CONV(float, f32)
NNX_GEMM_CONV(double, f64)

/* ------------------------------------------------------------------ tasks of the C thread pool */
#include "host_pool.c"

/* One task per kernel that nnx_pool_run splits: the kernel's arguments as 64-bit words (pointers
 * and integers), rows [lo, hi) its range; host_kernels.py's _TASKS lists the words' order. */
static double nnx_word_double(i64 w) { double d; memcpy(&d, &w, sizeof d); return d; }

/* The optimizers' group tasks (nnx_task_adam_multi, nnx_task_sgd_multi) cut every tensor of a group
 * into S slices: slice [lo, hi) of tensor k, whose elements are [off[k], off[k + 1]) of the group.
 * Returns the slice's element count (0 or less: none) and its first element in *first. */
static inline i64 nnx_group_slice(const i64* off, i64 k, i64 lo, i64 hi, i64 S, i64* first) {
    const i64 n = off[k + 1] - off[k];
    *first = n * lo / S;
    return n * hi / S - *first;
}

#define NNX_TASKS(T, SUF)                                                                           \
/* x, H, W, kh, kw, sh, sw, dh, dw, ph, pw, OH, OW, y, idx; rows = planes */                       \
void nnx_task_maxpool_fwd_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                           \
    (void)part;                                                                                     \
    nnx_maxpool_fwd_##SUF((const T*)a[0], lo, hi, a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], \
                          a[10], a[11], a[12], (T*)a[13], (int*)a[14]);                             \
}                                                                                                   \
/* dy, idx, HW, OHW, dx; rows = planes */                                                           \
void nnx_task_maxpool_bwd_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                           \
    (void)part;                                                                                     \
    nnx_maxpool_bwd_##SUF((const T*)a[0], (const int*)a[1], lo, hi, a[2], a[3], (T*)a[4]);          \
}                                                                                                   \
/* x, C, H, W, w, O, KH, KW, pt, pl, OH, OW, bias, y, scratch, scratch entries per part;          \
 * rows = samples */                                                                                \
void nnx_task_conv_direct_fwd_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                       \
    nnx_conv_direct_fwd_##SUF((const T*)a[0], lo, hi, a[1], a[2], a[3], (const T*)a[4], a[5], a[6], a[7], \
                              a[8], a[9], a[10], a[11], (const T*)a[12], (T*)a[13],                 \
                              (T*)a[14] + part * a[15]);                                            \
}                                                                                                   \
/* x, dy, N, C, H, W, O, KH, KW, pt, pl, OH, OW, dw, scratch, scratch entries per part;           \
 * rows = output channels */                                                                        \
void nnx_task_conv_direct_dw_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                        \
    nnx_conv_direct_dw_##SUF((const T*)a[0], (const T*)a[1], lo, hi, a[2], a[3], a[4], a[5], a[6], a[7], \
                             a[8], a[9], a[10], a[11], a[12], (T*)a[13], (T*)a[14] + part * a[15]); \
}                                                                                                   \
/* x, bias (or 0), n, z; rows of n elements */                                                      \
void nnx_task_bias_relu_fwd_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                         \
    (void)part;                                                                                     \
    nnx_bias_relu_fwd_##SUF((const T*)a[0] + lo * a[2], (const T*)a[1], hi - lo, a[2], (T*)a[3] + lo * a[2]); \
}                                                                                                   \
/* g, y, d; rows = elements */                                                                      \
void nnx_task_relu_bwd_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                              \
    (void)part;                                                                                     \
    nnx_relu_bwd_##SUF((const T*)a[0] + lo, (const T*)a[1] + lo, hi - lo, (T*)a[2] + lo);           \
}                                                                                                   \
/* x (N, C, P), N, C, P, out (C): out[c] = the sum of x[:, c, :] (a convolution's bias gradient); \
 * rows = channels. Each plane summed in T over vector lanes, the planes in double, n ascending:  \
 * one order whatever the split. */                                                                \
void nnx_task_chan_sum_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                              \
    (void)part;                                                                                     \
    const T* x = (const T*)a[0];                                                                    \
    const i64 N = a[1], C = a[2], P = a[3];                                                         \
    T* out = (T*)a[4];                                                                              \
    for (i64 c = lo; c < hi; ++c) {                                                                 \
        double acc = 0;                                                                             \
        for (i64 n = 0; n < N; ++n) {                                                               \
            const T* xp = x + (n * C + c) * P;                                                      \
            T s = 0;                                                                                \
            _Pragma("omp simd reduction(+:s)")                                                      \
            for (i64 i = 0; i < P; ++i) s += xp[i];                                                 \
            acc += (double)s;                                                                       \
        }                                                                                           \
        out[c] = (T)acc;                                                                            \
    }                                                                                               \
}                                                                                                   \
/* gemm, ilp64, x, C, H, W, w, O, KH, KW, pt, pl, OH, OW, bias, y, scratch, scratch entries per part; \
 * rows = samples */                                                                                \
void nnx_task_gemm_conv_fwd_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                         \
    nnx_gemm_conv_fwd_##SUF((const void*)a[0], a[1], (const T*)a[2], lo, hi, a[3], a[4], a[5], (const T*)a[6], \
                            a[7], a[8], a[9], a[10], a[11], a[12], a[13], (const T*)a[14], (T*)a[15], \
                            (T*)a[16] + part * a[17]);                                              \
}                                                                                                   \
/* gemm, ilp64, x, dy, block, N, C, H, W, w, O, KH, KW, pt, pl, OH, OW, dwp, dx, scratch, scratch   \
 * entries per part; rows = sample blocks */                                                        \
void nnx_task_gemm_conv_bwd_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                         \
    nnx_gemm_conv_bwd_##SUF((const void*)a[0], a[1], (const T*)a[2], (const T*)a[3], lo, hi, a[4], a[5], a[6], \
                            a[7], a[8], (const T*)a[9], a[10], a[11], a[12], a[13], a[14], a[15], a[16], \
                            (T*)a[17], (T*)a[18], (T*)a[19] + part * a[20]);                        \
}                                                                                                   \
/* gemm, ilp64, ta, tb, M, N, K, A, lda, B, ldb, C, ldc, parts, by columns: C (M, N) = op(A) op(B) \
 * (row-major; ta, tb: 111 as is, 112 transposed), rows = `parts` contiguous blocks of C's rows   \
 * or, by columns != 0, of its columns (each part packs its block of one operand and all of the    \
 * other: the columns when M is the smaller side) */                                               \
void nnx_task_gemm_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                                  \
    (void)part;                                                                                     \
    const int cols = a[14] != 0;                                                                    \
    const i64 parts = a[13];                                                                        \
    i64 p0, p1, unused;                                                                             \
    nnx_part(cols ? a[5] : a[4], parts, lo, &p0, &unused);                                          \
    nnx_part(cols ? a[5] : a[4], parts, hi - 1, &unused, &p1);                                      \
    if (p1 <= p0) return;                                                                           \
    const T* A = (const T*)a[7];                                                                    \
    const T* B = (const T*)a[9];                                                                    \
    T* C = (T*)a[11];                                                                               \
    i64 M = a[4], N = a[5];                                                                         \
    if (cols) { B += a[3] == 112 ? p0 * a[10] : p0; C += p0; N = p1 - p0; }                         \
    else { A += a[2] == 112 ? p0 : p0 * a[8]; C += p0 * a[12]; M = p1 - p0; }                       \
    nnx_gemmt_##SUF((const void*)a[0], a[1], (int)a[2], (int)a[3], M, N, a[6], A, a[8], B, a[10], (T)0, C, a[12]); \
}                                                                                                   \
/* gemm, ilp64, ta, tb, M, N, K, A, lda, stride A, B, ldb, stride B, C, ldc, stride C: a batch of \
 * products C[i] = op(A[i]) op(B[i]) (a stride 0 repeats one operand); rows = the batch */          \
void nnx_task_gemm_batch_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                            \
    (void)part;                                                                                     \
    for (i64 i = lo; i < hi; ++i)                                                                   \
        nnx_gemmt_##SUF((const void*)a[0], a[1], (int)a[2], (int)a[3], a[4], a[5], a[6],            \
                        (const T*)a[7] + i * a[9], a[8], (const T*)a[10] + i * a[12], a[11], (T)0,  \
                        (T*)a[13] + i * a[15], a[14]);                                              \
}                                                                                                   \
/* The recurrent time loops split by batch rows (rows never mix: each part runs the whole loop on  \
 * its rows, no synchronisation). Words: gemm, ilp64, steps, B (all rows), H, reverse, then the   \
 * kernel's arrays in its order (host_kernels.py's _SCAN_WORDS); rows = batch rows. */             \
void nnx_task_lstm_scan_fwd_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                         \
    (void)part;                                                                                     \
    const i64 H = a[4], S = 5 * H, ldh = a[12];                                                     \
    nnx_lstm_scan_fwd_##SUF((const void*)a[0], a[1], a[2], hi - lo, a[3], H, a[5], (T*)a[6] + lo * S, \
                            (const T*)a[7], (const T*)a[8] + lo * H, (const T*)a[9] + lo * H, (T*)a[10] + lo * H, \
                            (T*)a[11] + lo * ldh, ldh, (T*)a[13] + lo * H, (T*)a[14] + lo * H, (T*)a[15] + lo * H); \
}                                                                                                   \
void nnx_task_lstm_scan_bwd_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                         \
    (void)part;                                                                                     \
    const i64 H = a[4], S = 5 * H;                                                                  \
    nnx_lstm_scan_bwd_##SUF((const void*)a[0], a[1], a[2], hi - lo, a[3], H, a[5], (T*)a[6] + lo * S, \
                            (const T*)a[7], (const T*)a[8] + lo * H, a[9] ? (const T*)a[9] + lo * H : 0, \
                            (T*)a[10] + lo * H, (T*)a[11] + lo * H, a[12], (T*)a[13] + lo * H);     \
}                                                                                                   \
void nnx_task_gru_scan_fwd_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                          \
    (void)part;                                                                                     \
    const i64 H = a[4], S = 4 * H, ldh = a[12];                                                     \
    nnx_gru_scan_fwd_##SUF((const void*)a[0], a[1], a[2], hi - lo, a[3], H, a[5], (T*)a[6] + lo * S,  \
                           (const T*)a[7], (const T*)a[8], (const T*)a[9] + lo * H, (T*)a[10] + lo * H, \
                           (T*)a[11] + lo * ldh, ldh, (T*)a[13] + lo * H, (T*)a[14] + lo * 3 * H);  \
}                                                                                                   \
void nnx_task_gru_scan_bwd_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                          \
    (void)part;                                                                                     \
    const i64 H = a[4], S = 4 * H, ldh = a[9];                                                      \
    nnx_gru_scan_bwd_##SUF((const void*)a[0], a[1], a[2], hi - lo, a[3], H, a[5], (T*)a[6] + lo * S,  \
                           (const T*)a[7], (const T*)a[8] + lo * ldh, ldh, a[10] ? (const T*)a[10] + lo * H : 0, \
                           (T*)a[11] + lo * 3 * H, (T*)a[12] + lo * H, (T*)a[13] + lo * H);         \
}                                                                                                   \
void nnx_task_rnn_scan_fwd_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                          \
    (void)part;                                                                                     \
    const i64 H = a[4], ldh = a[12];                                                                \
    nnx_rnn_scan_fwd_##SUF((const void*)a[0], a[1], a[2], hi - lo, a[3], H, a[5], a[6], (T*)a[7] + lo * H, \
                           (const T*)a[8], (const T*)a[9] + lo * H, (T*)a[10] + lo * H, (T*)a[11] + lo * ldh, \
                           ldh, (T*)a[13] + lo * H);                                                \
}                                                                                                   \
void nnx_task_rnn_scan_bwd_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                          \
    (void)part;                                                                                     \
    const i64 H = a[4];                                                                             \
    nnx_rnn_scan_bwd_##SUF((const void*)a[0], a[1], a[2], hi - lo, a[3], H, a[5], a[6], (T*)a[7] + lo * H, \
                           (const T*)a[8], a[9] ? (const T*)a[9] + lo * H : 0, (T*)a[10] + lo * H); \
}                                                                                                   \
/* z, t, C, ignore, logp, loss, wy; rows = samples */                                              \
void nnx_task_ce_fwd_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                                \
    (void)part;                                                                                     \
    nnx_ce_fwd_##SUF((const T*)a[0], (const i64*)a[1], lo, hi, a[2], a[3], (T*)a[4], (T*)a[5], (T*)a[6]); \
}                                                                                                   \
/* logp, t, C, ignore, g per row (or 0), scale (the bits of a double), d; rows = samples */        \
void nnx_task_ce_bwd_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                                \
    (void)part;                                                                                     \
    nnx_ce_bwd_##SUF((const T*)a[0], (const i64*)a[1], lo, hi, a[2], a[3], (const T*)a[4],          \
                     nnx_word_double(a[5]), (T*)a[6]);                                              \
}                                                                                                   \
/* Adam over a group of tensors in one run: ptrs (p, g, m, v of each tensor), offs (each tensor's   \
 * first element in the group's concatenation, then the total), the tensor count, the number of    \
 * slices S, then the five coefficients of nnx_task_adam; rows = slices: slice r updates the r-th   \
 * S-th of every tensor, so the thread that produced a part of a gradient (the products split the   \
 * same way) updates it from its own cache. */                                                     \
void nnx_task_adam_multi_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                            \
    (void)part;                                                                                     \
    const i64* ptr = (const i64*)a[0];                                                              \
    for (i64 k = 0, l; k < a[2]; ++k) {                                                             \
        const i64 cnt = nnx_group_slice((const i64*)a[1], k, lo, hi, a[3], &l);                     \
        if (cnt > 0)                                                                                \
            nnx_adam_##SUF((T*)ptr[4 * k] + l, (const T*)ptr[4 * k + 1] + l, (T*)ptr[4 * k + 2] + l, \
                           (T*)ptr[4 * k + 3] + l, cnt, nnx_word_double(a[4]), nnx_word_double(a[5]), \
                           nnx_word_double(a[6]), nnx_word_double(a[7]), nnx_word_double(a[8]));    \
    }                                                                                               \
}                                                                                                   \
/* SGD over a group of tensors in one run: ptrs (p, g, buf or 0 of each tensor), offs, the tensor  \
 * count, the number of slices S, lr, momentum, dampening, weight decay (the bits of doubles),      \
 * nesterov, first; rows = slices, as nnx_task_adam_multi. */                                     \
void nnx_task_sgd_multi_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                             \
    (void)part;                                                                                     \
    const i64* ptr = (const i64*)a[0];                                                              \
    for (i64 k = 0, l; k < a[2]; ++k) {                                                             \
        const i64 cnt = nnx_group_slice((const i64*)a[1], k, lo, hi, a[3], &l);                     \
        if (cnt > 0)                                                                                \
            nnx_sgd_##SUF((T*)ptr[3 * k] + l, (const T*)ptr[3 * k + 1] + l,                         \
                          ptr[3 * k + 2] ? (T*)ptr[3 * k + 2] + l : 0, cnt, nnx_word_double(a[4]),   \
                          nnx_word_double(a[5]), nnx_word_double(a[6]), nnx_word_double(a[7]),       \
                          (int)a[8], (int)a[9]);                                                    \
    }                                                                                               \
}                                                                                                   \
/* p, g, m, v, then b1, b2, eps, step_size, inv_sqrt_bc2 as the bits of doubles; rows = elements */ \
void nnx_task_adam_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                                  \
    (void)part;                                                                                     \
    nnx_adam_##SUF((T*)a[0] + lo, (const T*)a[1] + lo, (T*)a[2] + lo, (T*)a[3] + lo, hi - lo,      \
                   nnx_word_double(a[4]), nnx_word_double(a[5]), nnx_word_double(a[6]),             \
                   nnx_word_double(a[7]), nnx_word_double(a[8]));                                   \
}                                                                                                   \
/* Winograd convolution per block of samples: gemm, ilp64, m (2 or 4), x, N, C, H, W, top, left,  \
 * th, tw, u (a2, O, C), O, oh, ow, y, samples per block, then per-part buffers v, mm, scratch and \
 * their sizes; rows = blocks. The input transform, one GEMM per tile position, the output         \
 * transform, in cache (numpy_winograd.py's winograd_conv says why). */                           \
void nnx_task_wino_block_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                            \
    const i64 m = a[2], N = a[4], C = a[5], H = a[6], W = a[7], th = a[10], tw = a[11], O = a[13];  \
    const i64 oh = a[14], ow = a[15], nb = a[17], a2 = (m + 2) * (m + 2), P = th * tw;              \
    T* v = (T*)a[18] + part * a[21];                                                                \
    T* mm = (T*)a[19] + part * a[22];                                                               \
    T* sc = (T*)a[20] + part * a[23];                                                               \
    const T* u = (const T*)a[12];                                                                   \
    for (i64 blk = lo; blk < hi; ++blk) {                                                           \
        const i64 s0 = blk * nb, k = (s0 + nb < N ? s0 + nb : N) - s0, kp = k * P;                 \
        const T* xb = (const T*)a[3] + s0 * C * H * W;                                              \
        T* yb = (T*)a[16] + s0 * O * oh * ow;                                                       \
        if (m == 2) nnx_wino2_in_##SUF(xb, 0, k, k, C, H, W, a[8], a[9], th, tw, v, sc);           \
        else nnx_wino4_in_##SUF(xb, 0, k, k, C, H, W, a[8], a[9], th, tw, v, sc);                  \
        for (i64 q = 0; q < a2; ++q)                                                                \
            nnx_gemmt_##SUF((const void*)a[0], a[1], 111, 111, O, kp, C, u + q * O * C, C, v + q * C * kp, kp, \
                            (T)0, mm + q * O * kp, kp);                                             \
        if (m == 2) nnx_wino2_out_##SUF(mm, 0, k, k, O, th, tw, oh, ow, yb);                        \
        else nnx_wino4_out_##SUF(mm, 0, k, k, O, th, tw, oh, ow, yb, sc);                           \
    }                                                                                               \
}                                                                                                   \
/* Winograd transforms; m (2 or 4) first, per-part scratch and its size last; rows = samples      \
 * (filters: rows of the transformed bank; filter gradient: output channels). */                   \
void nnx_task_wino_in_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                               \
    T* sc = (T*)a[11] + part * a[12];                                                               \
    if (a[0] == 2) nnx_wino2_in_##SUF((const T*)a[1], lo, hi, a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], \
                                      (T*)a[10], sc);                                               \
    else nnx_wino4_in_##SUF((const T*)a[1], lo, hi, a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], (T*)a[10], sc); \
}                                                                                                   \
void nnx_task_wino_out_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                              \
    if (a[0] == 2) nnx_wino2_out_##SUF((const T*)a[1], lo, hi, a[2], a[3], a[4], a[5], a[6], a[7], (T*)a[8]); \
    else nnx_wino4_out_##SUF((const T*)a[1], lo, hi, a[2], a[3], a[4], a[5], a[6], a[7], (T*)a[8],  \
                             (T*)a[9] + part * a[10]);                                              \
}                                                                                                   \
void nnx_task_wino_dy_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                               \
    T* sc = (T*)a[9] + part * a[10];                                                                \
    if (a[0] == 2) nnx_wino2_dy_##SUF((const T*)a[1], lo, hi, a[2], a[3], a[4], a[5], a[6], a[7], (T*)a[8], sc); \
    else nnx_wino4_dy_##SUF((const T*)a[1], lo, hi, a[2], a[3], a[4], a[5], a[6], a[7], (T*)a[8], sc); \
}                                                                                                   \
/* w, P, Q, a, G (double), flip, u */                                                              \
void nnx_task_wino_filter_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                           \
    (void)part;                                                                                     \
    nnx_wino_filter_##SUF((const T*)a[0], lo, hi, a[1], a[2], a[3], (const double*)a[4], a[5], (T*)a[6]); \
}                                                                                                   \
/* du, O, C, a, G (double), dw */                                                                   \
void nnx_task_wino_filter_grad_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                      \
    (void)part;                                                                                     \
    nnx_wino_filter_grad_##SUF((const T*)a[0], lo, hi, a[1], a[2], a[3], (const double*)a[4], (T*)a[5]); \
}                                                                                                   \
/* Batch norm over (N, C, L), rows = channels. x, N, C, L, mean, var */                             \
void nnx_task_bn_stats_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                              \
    (void)part;                                                                                     \
    nnx_bn_stats_##SUF((const T*)a[0], a[1], a[2], a[3], lo, hi, (T*)a[4], (T*)a[5]);               \
}                                                                                                   \
/* x, N, C, L, mean, var, w, b, eps (the bits of a double), y, invstd */                            \
void nnx_task_bn_fwd_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                                \
    (void)part;                                                                                     \
    nnx_bn_fwd_##SUF((const T*)a[0], a[1], a[2], a[3], lo, hi, (const T*)a[4], (const T*)a[5], (const T*)a[6], \
                     (const T*)a[7], nnx_word_double(a[8]), (T*)a[9], (T*)a[10]);                   \
}                                                                                                   \
/* dy, x, N, C, L, mean, invstd, w, dx, dweight, dbias */                                           \
void nnx_task_bn_bwd_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                                \
    (void)part;                                                                                     \
    nnx_bn_bwd_##SUF((const T*)a[0], (const T*)a[1], a[2], a[3], a[4], lo, hi, (const T*)a[5], (const T*)a[6], \
                     (const T*)a[7], (T*)a[8], (T*)a[9], (T*)a[10]);                                \
}                                                                                                   \
/* out, cols, G, KK, Cg, length, run, offsets; rows = samples */                                    \
void nnx_task_shift_add_##SUF(const i64* a, i64 lo, i64 hi, i64 part) {                             \
    (void)part;                                                                                     \
    nnx_shift_add_##SUF((T*)a[0] + lo * a[2] * a[4] * a[5], (const T*)a[1] + lo * a[2] * a[3] * a[4] * a[6], \
                        (hi - lo) * a[2], a[3], a[4], a[5], a[6], (const i64*)a[7]);                \
}

NNX_TASKS(float, f32)
NNX_TASKS(double, f64)
