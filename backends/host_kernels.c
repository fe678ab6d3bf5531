/* Fused host kernels of the NumPy adapter (backends/host_kernels.py builds and loads this file).
 *
 * Each kernel does in one or two passes over cache-resident data what NumPy does in four to
 * seven passes over whole arrays. The readable references, which define what each computes,
 * are backends/norm.py (layer norm), backends/softmax.py (column softmax) and
 * backends/fused.py (ReLU and its gradient); tests/backends/test_host_kernels.py checks every kernel
 * against them, in float32 and float64.
 *
 * Work is split by rows (layer norm), batches (softmax) or flat ranges (ReLU) by the caller's
 * thread pool; a row's arithmetic does not depend on the split, so results are the same for any
 * thread count. Reductions use "omp simd" (compiled with -fopenmp-simd: vector lanes, no OpenMP
 * runtime), a fixed order for a given build.
 */
#include <math.h>
#include <stddef.h>

typedef long long i64;

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
