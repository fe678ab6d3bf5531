"""CUDA sources of the fused kernels, as data: no CuPy import here.

Elementwise kernels are ``(in_params, out_params, body)`` triples in CuPy's ``ElementwiseKernel``
syntax. Every body computes in the accumulation type ``A`` (``float`` for ``float16``, else the
array type), so half precision never meets ``double * half`` or ``sqrt(half)``. Row kernels are
plain C loops over one row (``row``) of a contiguous ``(rows, cols)`` array, run one thread per
row by a ``RawKernel``.

The same text serves three purposes: ``cupy.py`` builds kernels from it (compiled once, cached per
dtype), ``tests/backends/test_cuda_compile.py`` compiles every kernel with NVRTC for float16,
float32 and float64 without a GPU, and ``tests/backends/test_cuda_host.py`` compiles each body as
host C++ inside a loop and compares it with NumPy.
"""

from __future__ import annotations

PREAMBLE = r"""
template <typename X> struct nnx_acc { typedef X type; };
template <> struct nnx_acc<float16> { typedef float type; };
"""

_HEAD = "typedef typename nnx_acc<T>::type A;\n"

# activation of v (type A) and its derivative from s (output, or input for gelu/silu)
ACT_FWD = {
    "identity": "v",
    "relu": "((v > (A)0 || v != v) ? v : (A)0)",  # NaN propagates, as torch.relu
    "tanh": "tanh(v)",
    "sigmoid": "((A)1 / ((A)1 + exp(-v)))",
    "gelu": "((A)0.5 * v * ((A)1 + erf(v * (A)0.7071067811865476)))",
    "gelu_tanh": "((A)0.5 * v * ((A)1 + tanh((A)0.7978845608028654 * (v + (A)0.044715 * v * v * v))))",
    "silu": "(v / ((A)1 + exp(-v)))",
}
ACT_BWD = {
    "identity": "d",
    "relu": "(s > (A)0 ? d : (A)0)",
    "tanh": "d * ((A)1 - s * s)",
    "sigmoid": "d * s * ((A)1 - s)",
    "gelu": "d * ((A)0.5 * ((A)1 + erf(s * (A)0.7071067811865476))"
            " + s * (A)0.3989422804014327 * exp((A)-0.5 * s * s))",
    "gelu_tanh": "d * ((A)0.5 * ((A)1 + tanh((A)0.7978845608028654 * (s + (A)0.044715 * s * s * s)))"
                 " + (A)0.5 * s * ((A)1 - tanh((A)0.7978845608028654 * (s + (A)0.044715 * s * s * s))"
                 " * tanh((A)0.7978845608028654 * (s + (A)0.044715 * s * s * s)))"
                 " * (A)0.7978845608028654 * ((A)1 + (A)0.134145 * s * s))",
    "silu": "d * ((A)1 / ((A)1 + exp(-s))) * ((A)1 + s * ((A)1 - (A)1 / ((A)1 + exp(-s))))",
}
NEEDS_INPUT = ("gelu", "gelu_tanh", "silu")

_SIG = "((A)1 / ((A)1 + exp(-(A)({0}))))"


def _elementwise() -> dict[str, tuple[str, str, str]]:
    k: dict[str, tuple[str, str, str]] = {}
    for act, expr in ACT_FWD.items():
        save = "z = (T)v;" if act in NEEDS_INPUT else ""
        outs = "T y, T z" if act in NEEDS_INPUT else "T y"
        k[f"bias_{act}_fwd"] = ("T x, T b", outs,
                                _HEAD + f"A v = (A)x + (A)b; y = (T)({expr}); {save}")
        k[f"act_{act}_bwd"] = ("T dy, T saved", "T dx",
                               _HEAD + f"A d = (A)dy; A s = (A)saved; dx = (T)({ACT_BWD[act]});")
    k["lstm_fwd"] = (
        "T gi, T gf, T gg, T go, T cp", "T si, T sf, T sg, T so, T tc, T c, T h",
        _HEAD + "A ai = " + _SIG.format("gi") + "; A af = " + _SIG.format("gf") + ";\n"
        "A ag = tanh((A)gg); A ao = " + _SIG.format("go") + ";\n"
        "A ac = af * (A)cp + ai * ag; A at = tanh(ac);\n"
        "si = (T)ai; sf = (T)af; sg = (T)ag; so = (T)ao; tc = (T)at; c = (T)ac; h = (T)(ao * at);")
    k["lstm_bwd"] = (
        "T si, T sf, T sg, T so, T tc, T cp, T dh, T dc", "T di, T df, T dg, T do_, T dcp",
        _HEAD + "A ai = si, af = sf, ag = sg, ao = so, at = tc, adh = dh;\n"
        "A dct = adh * ao * ((A)1 - at * at) + (A)dc;\n"
        "di = (T)(dct * ag * ai * ((A)1 - ai)); df = (T)(dct * (A)cp * af * ((A)1 - af));\n"
        "dg = (T)(dct * ai * ((A)1 - ag * ag)); do_ = (T)(adh * at * ao * ((A)1 - ao));\n"
        "dcp = (T)(dct * af);")
    k["gru_fwd"] = (
        "T xr, T xz, T xn, T hr, T hz, T hn, T bn, T hp", "T r, T z, T n, T hs, T h",
        _HEAD + "A ar = " + _SIG.format("(A)xr + (A)hr") + "; A az = " + _SIG.format("(A)xz + (A)hz") + ";\n"
        "A ahn = (A)hn + (A)bn; A an = tanh((A)xn + ar * ahn);\n"
        "r = (T)ar; z = (T)az; n = (T)an; hs = (T)ahn; h = (T)(((A)1 - az) * an + az * (A)hp);")
    k["gru_bwd"] = (
        "T r, T z, T n, T hn, T hp, T dh", "T dxr, T dxz, T dxn, T dhr, T dhz, T dhn, T dhp",
        _HEAD + "A ar = r, az = z, an = n, adh = dh;\n"
        "A dn = adh * ((A)1 - az) * ((A)1 - an * an);\n"
        "A dz = adh * ((A)hp - an) * az * ((A)1 - az);\n"
        "A dr = dn * (A)hn * ar * ((A)1 - ar);\n"
        "dxr = (T)dr; dxz = (T)dz; dxn = (T)dn; dhr = (T)dr; dhz = (T)dz; dhn = (T)(dn * ar);\n"
        "dhp = (T)(adh * az);")
    k["adam"] = (
        "T g, float64 lr, float64 b1, float64 b2, float64 eps, float64 bc1, float64 inv_sqrt_bc2, "
        "float64 wd, int32 decoupled", "T p, T m, T v",
        _HEAD + "A ap = p, ag = g;\n"
        "if (decoupled) { ap = ap * (A)(1.0 - lr * wd); } else { ag = ag + (A)wd * ap; }\n"
        "A am = (A)b1 * (A)m + (A)(1.0 - b1) * ag; A av = (A)b2 * (A)v + (A)(1.0 - b2) * ag * ag;\n"
        "ap = ap - (A)(lr / bc1) * am / (sqrt(av) * (A)inv_sqrt_bc2 + (A)eps);\n"
        "m = (T)am; v = (T)av; p = (T)ap;")
    k["adam_amsgrad"] = (
        k["adam"][0], "T p, T m, T v, T vmax",
        k["adam"][2].replace("ap = ap - (A)(lr / bc1) * am / (sqrt(av)",
                             "A amax = fmax((A)vmax, av); vmax = (T)amax;\n"
                             "ap = ap - (A)(lr / bc1) * am / (sqrt(amax)"))
    k["sgd"] = (
        "T g, float64 lr, float64 wd", "T p",
        _HEAD + "A ap = p; A ag = (A)g + (A)wd * ap; p = (T)(ap - (A)lr * ag);")
    k["sgd_momentum"] = (
        "T g, float64 lr, float64 mom, float64 damp, float64 wd, int32 nesterov, int32 first", "T p, T buf",
        _HEAD + "A ap = p; A ag = (A)g + (A)wd * ap;\n"
        "A ab = first ? ag : (A)mom * (A)buf + (A)(1.0 - damp) * ag; buf = (T)ab;\n"
        "A step = nesterov ? ag + (A)mom * ab : ab; p = (T)(ap - (A)lr * step);")
    k["rmsprop"] = (
        "T g, float64 lr, float64 alpha, float64 eps, float64 wd", "T p, T sq",
        _HEAD + "A ap = p; A ag = (A)g + (A)wd * ap;\n"
        "A asq = (A)alpha * (A)sq + (A)(1.0 - alpha) * ag * ag; sq = (T)asq;\n"
        "p = (T)(ap - (A)lr * ag / (sqrt(asq) + (A)eps));")
    k["rmsprop_momentum"] = (
        "T g, float64 lr, float64 alpha, float64 eps, float64 wd, float64 mom", "T p, T sq, T buf",
        _HEAD + "A ap = p; A ag = (A)g + (A)wd * ap;\n"
        "A asq = (A)alpha * (A)sq + (A)(1.0 - alpha) * ag * ag; sq = (T)asq;\n"
        "A ab = (A)mom * (A)buf + ag / (sqrt(asq) + (A)eps); buf = (T)ab; p = (T)(ap - (A)lr * ab);")
    k["adagrad"] = (
        "T g, float64 clr, float64 wd, float64 eps", "T p, T s",
        _HEAD + "A ap = p; A ag = (A)g + (A)wd * ap; A as_ = (A)s + ag * ag; s = (T)as_;\n"
        "p = (T)(ap - (A)clr * ag / (sqrt(as_) + (A)eps));")
    k["bn_norm"] = (
        "T x, T mean, T invstd, T w, T b", "T y",
        _HEAD + "y = (T)(((A)x - (A)mean) * (A)invstd * (A)w + (A)b);")
    k["bn_bwd_dx"] = (
        "T dy, T x, T mean, T invstd, T w, T sdy, T sdxm, float64 m", "T dx",
        _HEAD + "A xh = ((A)x - (A)mean) * (A)invstd;\n"
        "dx = (T)((A)w * (A)invstd / (A)m * ((A)m * (A)dy - (A)sdy - xh * (A)sdxm * (A)invstd));")
    k["bn_invstd"] = ("T var, float64 eps", "T invstd", _HEAD + "invstd = (T)((A)1 / sqrt((A)var + (A)eps));")
    return k


#: every elementwise kernel: name -> (in_params, out_params, body)
ELEMENTWISE = _elementwise()

# Row kernels: C++ templates over T, one thread per row; ``row`` is the row index.
ROW_KERNELS = r"""
template <typename T>
__global__ void nnx_ce_fwd(const T* logits, const long long* target, const T* weight, int has_weight,
                           long long rows, long long cols, long long ignore_index, double smoothing,
                           T* loss, T* wy, T* lse) {
    long long row = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= rows) return;
    typedef typename nnx_acc<T>::type A;
    const T* z = logits + row * cols;
    A mx = (A)z[0];
    for (long long c = 1; c < cols; ++c) mx = fmax(mx, (A)z[c]);
    A s = 0;
    for (long long c = 0; c < cols; ++c) s += exp((A)z[c] - mx);
    A l = mx + log(s);
    lse[row] = (T)l;
    long long t = target[row];
    if (t == ignore_index) { loss[row] = (T)0; wy[row] = (T)0; return; }
    // a class index out of range (no host check on a GPU) is never read out of bounds: its loss is
    // NaN, which the training loop's finiteness check reports, instead of a wrapped or garbage value
    if (t < 0 || t >= cols) { loss[row] = (T)nan(""); wy[row] = (T)1; return; }
    A w = has_weight ? (A)weight[t] : (A)1;
    A out = -(A)(1.0 - smoothing) * w * ((A)z[t] - l);
    if (smoothing != 0.0) {
        A acc = 0;
        for (long long c = 0; c < cols; ++c)
            acc += (has_weight ? (A)weight[c] : (A)1) * ((A)z[c] - l);
        out -= (A)(smoothing / (double)cols) * acc;
    }
    loss[row] = (T)out; wy[row] = (T)w;
}

template <typename T>
__global__ void nnx_ce_bwd(const T* logits, const T* lse, const long long* target, const T* weight,
                           int has_weight, const T* wsum, long long rows, long long cols,
                           long long ignore_index, double smoothing, const T* grad, int grad_per_row,
                           const T* denom, int use_denom, T* dlogits) {
    long long row = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= rows) return;
    typedef typename nnx_acc<T>::type A;
    long long t = target[row];
    T* d = dlogits + row * cols;
    if (t == ignore_index) { for (long long c = 0; c < cols; ++c) d[c] = (T)0; return; }
    if (t < 0 || t >= cols) { for (long long c = 0; c < cols; ++c) d[c] = (T)nan(""); return; }
    A g = (A)grad[grad_per_row ? row : 0] / (use_denom ? (A)denom[0] : (A)1);
    A wy = has_weight ? (A)weight[t] : (A)1;
    A l = (A)lse[row];
    for (long long c = 0; c < cols; ++c) {
        A p = exp((A)logits[row * cols + c] - l);
        A v = (A)(1.0 - smoothing) * wy * (p - (c == t ? (A)1 : (A)0));
        if (smoothing != 0.0) {
            A wc = has_weight ? (A)weight[c] : (A)1;
            v += (A)(smoothing / (double)cols) * (p * (has_weight ? (A)wsum[0] : (A)cols) - wc);
        }
        d[c] = (T)(g * v);
    }
}

template <typename T>
__global__ void nnx_bn_reduce(const T* x, const T* dy, const T* mean, long long n, long long c, long long l,
                              int mode, T* out1, T* out2) {
    // one block per channel; mode 0: out1 = mean, out2 = biased var of x;
    // mode 1: out1 = sum(dy), out2 = sum(dy * (x - mean)) (the caller multiplies by invstd)
    typedef typename nnx_acc<T>::type A;
    __shared__ double s1[256];
    __shared__ double s2[256];
    long long ch = blockIdx.x;
    long long m = n * l;
    double a = 0, b = 0;
    double mu = mode ? (double)(A)mean[ch] : 0.0;
    for (long long k = threadIdx.x; k < m; k += blockDim.x) {
        long long idx = (k / l) * c * l + ch * l + (k % l);
        double xv = (double)(A)x[idx];
        if (mode) { double d = (double)(A)dy[idx]; a += d; b += d * (xv - mu); }
        else { a += xv; b += xv * xv; }
    }
    s1[threadIdx.x] = a; s2[threadIdx.x] = b;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) { s1[threadIdx.x] += s1[threadIdx.x + s]; s2[threadIdx.x] += s2[threadIdx.x + s]; }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        if (mode) { out1[ch] = (T)(A)s1[0]; out2[ch] = (T)(A)s2[0]; }
        else { double mn = s1[0] / m; double var = s2[0] / m - mn * mn;
               out1[ch] = (T)(A)mn; out2[ch] = (T)(A)(var > 0 ? var : 0); }
    }
}

// Convolution gather / scatter, one thread per output element (backends/im2col.py is the reference).
// im2col: cols (N, C*kh*kw, OH*OW) from x (N, C, H, W), implicit padding (top, left) reading `fill`.
template <typename T>
__global__ void nnx_im2col(const T* x, long long total, long long h, long long w, long long oh, long long ow,
                           long long kh, long long kw, long long sh, long long sw, long long dh, long long dw,
                           long long top, long long left, double fill, T* cols) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    long long l = oh * ow;
    long long pos = i % l, row = i / l;   // row = (n*C + c)*kh*kw + a*kw + b
    long long bb = row % kw, t = row / kw;
    long long a = t % kh, nc = t / kh;
    long long y = (pos / ow) * sh + a * dh - top;
    long long xx = (pos % ow) * sw + bb * dw - left;
    cols[i] = (y >= 0 && y < h && xx >= 0 && xx < w) ? x[(nc * h + y) * w + xx] : (T)fill;
}

// col2im: dx (N, C, H, W) = sum of the cols entries read from each pixel (a gather: no atomics).
template <typename T>
__global__ void nnx_col2im(const T* cols, long long total, long long h, long long w, long long oh, long long ow,
                           long long kh, long long kw, long long sh, long long sw, long long dh, long long dw,
                           long long top, long long left, T* dx) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    typedef typename nnx_acc<T>::type A;
    long long xx = i % w + left, t = i / w;
    long long y = t % h + top, nc = t / h;
    long long l = oh * ow;
    A acc = 0;
    for (long long a = 0; a < kh; ++a) {
        long long ry = y - a * dh;
        if (ry < 0) break;
        if (ry % sh) continue;
        long long oy = ry / sh;
        if (oy >= oh) continue;
        for (long long bb = 0; bb < kw; ++bb) {
            long long rx = xx - bb * dw;
            if (rx < 0) break;
            if (rx % sw) continue;
            long long ox = rx / sw;
            if (ox >= ow) continue;
            acc += (A)cols[((nc * kh + a) * kw + bb) * l + oy * ow + ox];
        }
    }
    dx[i] = (T)acc;
}

// Layer normalisation over the last axis of a contiguous (rows, n) array, one block per row
// (blockDim a power of two <= 256; backends/norm.py is the reference). Sums in double.
template <typename T>
__global__ void nnx_ln_fwd(const T* x, const T* weight, const T* bias, int has_weight, int has_bias,
                           long long n, double eps, T* y, T* xhat, T* invstd) {
    typedef typename nnx_acc<T>::type A;
    __shared__ double s1[256];
    long long row = blockIdx.x;
    const T* xr = x + row * n;
    double a = 0;
    for (long long k = threadIdx.x; k < n; k += blockDim.x) a += (double)(A)xr[k];
    s1[threadIdx.x] = a;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) s1[threadIdx.x] += s1[threadIdx.x + s];
        __syncthreads();
    }
    double mean = s1[0] / (double)n;
    __syncthreads();  // every thread has read the mean before s1 is reused
    double b = 0;
    for (long long k = threadIdx.x; k < n; k += blockDim.x) { double d = (double)(A)xr[k] - mean; b += d * d; }
    s1[threadIdx.x] = b;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) s1[threadIdx.x] += s1[threadIdx.x + s];
        __syncthreads();
    }
    double inv = 1.0 / sqrt(s1[0] / (double)n + eps);
    for (long long k = threadIdx.x; k < n; k += blockDim.x) {
        double h = ((double)(A)xr[k] - mean) * inv;
        double v = has_weight ? h * (double)(A)weight[k] : h;
        if (has_bias) v += (double)(A)bias[k];
        xhat[row * n + k] = (T)(A)h;
        y[row * n + k] = (T)(A)v;
    }
    if (threadIdx.x == 0) invstd[row] = (T)(A)inv;
}

// dx = (g - mean(g) - xhat * mean(g * xhat)) * invstd with g = dy * weight, one block per row.
template <typename T>
__global__ void nnx_ln_bwd(const T* dy, const T* xhat, const T* invstd, const T* weight, int has_weight,
                           long long n, T* dx) {
    typedef typename nnx_acc<T>::type A;
    __shared__ double s1[256];
    __shared__ double s2[256];
    long long row = blockIdx.x;
    const T* d = dy + row * n;
    const T* h = xhat + row * n;
    double a = 0, b = 0;
    for (long long k = threadIdx.x; k < n; k += blockDim.x) {
        double g = has_weight ? (double)(A)d[k] * (double)(A)weight[k] : (double)(A)d[k];
        a += g;
        b += g * (double)(A)h[k];
    }
    s1[threadIdx.x] = a; s2[threadIdx.x] = b;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) { s1[threadIdx.x] += s1[threadIdx.x + s]; s2[threadIdx.x] += s2[threadIdx.x + s]; }
        __syncthreads();
    }
    double m1 = s1[0] / (double)n, m2 = s2[0] / (double)n, inv = (double)(A)invstd[row];
    for (long long k = threadIdx.x; k < n; k += blockDim.x) {
        double g = has_weight ? (double)(A)d[k] * (double)(A)weight[k] : (double)(A)d[k];
        dx[row * n + k] = (T)(A)((g - m1 - (double)(A)h[k] * m2) * inv);
    }
}

// Softmax down the columns of contiguous (batches, S, L) scores, one thread per (batch, column):
// neighbouring threads read neighbouring columns, so every pass is coalesced (backends/softmax.py
// is the reference). A column of -inf (every key masked) gives p = 0 and lse = +inf.
template <typename T>
__global__ void nnx_softmax_cols_fwd(const T* s, long long batches, long long rows, long long cols, T* p, T* lse) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= batches * cols) return;
    typedef typename nnx_acc<T>::type A;
    long long b = i / cols, c = i % cols;
    const T* sc = s + b * rows * cols + c;
    T* pc = p + b * rows * cols + c;
    A zero = 0;
    if (rows == 0) { lse[b * cols + c] = (T)(-log(zero)); return; }  // -log(0) = +inf
    A mx = (A)sc[0];
    for (long long r = 1; r < rows; ++r) mx = fmax(mx, (A)sc[r * cols]);
    A m = isfinite(mx) ? mx : (A)0;
    A z = 0;
    for (long long r = 0; r < rows; ++r) z += exp((A)sc[r * cols] - m);
    A inv = z == 0 ? (A)0 : (A)1 / z;  // a NaN score: z NaN, the column NaN (as the reference)
    for (long long r = 0; r < rows; ++r) pc[r * cols] = (T)(exp((A)sc[r * cols] - m) * inv);
    lse[b * cols + c] = (T)(z > 0 ? log(z) + m : -log(z));  // z = 0: every key masked, lse = +inf
}

// ds = p * (dp - sum_col(dp * p)), one thread per (batch, column).
template <typename T>
__global__ void nnx_softmax_cols_bwd(const T* dp, const T* p, long long batches, long long rows, long long cols,
                                     T* ds) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= batches * cols) return;
    typedef typename nnx_acc<T>::type A;
    long long base = (i / cols) * rows * cols + i % cols;
    A acc = 0;
    for (long long r = 0; r < rows; ++r) acc += (A)dp[base + r * cols] * (A)p[base + r * cols];
    for (long long r = 0; r < rows; ++r) {
        long long k = base + r * cols;
        ds[k] = (T)((A)p[k] * ((A)dp[k] - acc));
    }
}
"""

ROW_KERNEL_NAMES = ("nnx_ce_fwd", "nnx_ce_bwd", "nnx_bn_reduce", "nnx_im2col", "nnx_col2im", "nnx_ln_fwd",
                    "nnx_ln_bwd", "nnx_softmax_cols_fwd", "nnx_softmax_cols_bwd")

#: the sum of squares of a flat buffer, accumulated in double (``ReductionKernel`` arguments)
SQNORM = ("T x", "T y", "(double)x * (double)x", "a + b", "y = (T)sqrt(a)", "0")


def cuda_type(dtype_name: str) -> str:
    """The C++ type CuPy uses for a dtype name."""
    return {"float16": "float16", "float32": "float", "float64": "double"}[dtype_name]


_CTYPE = {"float64": "double", "float32": "float", "int32": "int", "int64": "long long"}


def _params(spec: str) -> list[tuple[str, str]]:
    return [tuple(p.split()) for p in spec.split(",")]  # type: ignore[misc]


def _signature(name: str) -> tuple[list[str], list[str]]:
    ins, outs, _ = ELEMENTWISE[name]
    args, binds = ["long long nnx_n"], []
    for kind, pname in _params(ins) + _params(outs):
        if kind == "T":
            args.append(f"T* {pname}_p")
            binds.append(f"T& {pname} = {pname}_p[i];")
        else:
            args.append(f"{_CTYPE[kind]} {pname}")
    return args, binds


def standalone_source(name: str, dtype_name: str) -> str:
    """One elementwise kernel as a self-contained CUDA source for ``T = dtype_name`` (one thread per
    element; every array argument has ``nnx_n`` contiguous elements), for NVRTC."""
    args, binds = _signature(name)
    body = ELEMENTWISE[name][2].replace("\n", "\n    ")
    return ("#include <cupy/float16.cuh>\n" + PREAMBLE + f"typedef {cuda_type(dtype_name)} T;\n"
            f'extern "C" __global__ void nnx_{name}({", ".join(args)}) {{\n'
            "  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n  if (i < nnx_n) {\n"
            f"    {' '.join(binds)}\n    {body}\n  }}\n}}\n")


#: optimizer kernels that also exist in a multi-tensor form: one launch updates a whole parameter group
MULTI_TENSOR = ("sgd", "sgd_momentum", "adam", "adam_amsgrad")


def _multi_signature(name: str) -> tuple[list[str], list[str]]:
    """Arguments and element bindings of the multi-tensor form of elementwise kernel ``name``.

    The first argument is a table of 64-bit words: ``k + 1`` offsets (the prefix sums of the
    tensors' sizes) and then, for each array argument in order, ``k`` device pointers. The thread of
    flat element ``i`` finds its tensor ``t`` by binary search over the offsets.
    """
    ins, outs, _ = ELEMENTWISE[name]
    args, binds = ["const long long* nnx_table", "int nnx_k", "long long nnx_total"], []
    arrays = 0
    for kind, pname in _params(ins) + _params(outs):
        if kind == "T":
            binds.append(f"T& {pname} = ((T*)nnx_table[nnx_k + 1 + {arrays} * nnx_k + nnx_t])[nnx_j];")
            arrays += 1
        else:
            args.append(f"{_CTYPE[kind]} {pname}")
    return args, binds


_MULTI_FIND = ("int nnx_lo = 0, nnx_hi = nnx_k - 1;\n"
               "    while (nnx_lo < nnx_hi) { int nnx_mid = (nnx_lo + nnx_hi + 1) / 2;"
               " if (nnx_table[nnx_mid] <= i) nnx_lo = nnx_mid; else nnx_hi = nnx_mid - 1; }\n"
               "    int nnx_t = nnx_lo; long long nnx_j = i - nnx_table[nnx_t];")


def multi_tensor_source(name: str, dtype_name: str) -> str:
    """The multi-tensor form of optimizer kernel ``name`` as a CUDA source for ``T = dtype_name``
    (``extern "C" nnx_multi_<name>``; a grid-stride loop over all elements of all tensors)."""
    args, binds = _multi_signature(name)
    body = ELEMENTWISE[name][2].replace("\n", "\n    ")
    return ("#include <cupy/float16.cuh>\n" + PREAMBLE + f"typedef {cuda_type(dtype_name)} T;\n"
            f'extern "C" __global__ void nnx_multi_{name}({", ".join(args)}) {{\n'
            "  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < nnx_total;"
            " i += (long long)gridDim.x * blockDim.x) {\n"
            f"    {_MULTI_FIND}\n    {' '.join(binds)}\n    {body}\n  }}\n}}\n")


def host_source(dtype_name: str) -> str:
    """Every elementwise kernel as a host C++ function ``nnx_<name>(n, ...)`` running the same body in
    a loop over ``n`` elements, for ``T = dtype_name`` (float32 or float64): compiled by the host
    compiler, it checks the arithmetic without a GPU."""
    out = ["#include <cmath>\nusing namespace std;\nstruct float16 {};\n" + PREAMBLE
           + f"typedef {cuda_type(dtype_name)} T;\n"]
    for name, (_, _, body) in ELEMENTWISE.items():
        args, binds = _signature(name)
        out.append(f'extern "C" void nnx_{name}({", ".join(args)}) {{\n  for (long long i = 0; i < nnx_n; ++i) {{\n'
                   f"    {' '.join(binds)}\n    {body.replace(chr(10), chr(10) + '    ')}\n  }}\n}}\n")
    for name in MULTI_TENSOR:  # the multi-tensor forms: the same table lookup, host pointers in the table
        args, binds = _multi_signature(name)
        body = ELEMENTWISE[name][2]
        out.append(f'extern "C" void nnx_multi_{name}({", ".join(args)}) {{\n'
                   "  for (long long i = 0; i < nnx_total; ++i) {\n"
                   f"    {_MULTI_FIND}\n    {' '.join(binds)}\n"
                   f"    {body.replace(chr(10), chr(10) + '    ')}\n  }}\n}}\n")
    return "\n".join(out)


def row_kernels_source() -> str:
    """The row kernels as one CUDA source (instantiate with name expressions ``nnx_ce_fwd<float>``...)."""
    return "#include <cupy/float16.cuh>\n" + PREAMBLE + ROW_KERNELS
