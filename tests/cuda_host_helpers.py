"""Host C++ harness of the CUDA row kernels (one thread per row/channel), shared by the
host tests in tests/backends/."""

ROW_HARNESS = r"""
#include <cmath>
using namespace std;
struct float16 {};
struct nnx_dim3 { long long x; };
static nnx_dim3 blockIdx, blockDim, threadIdx;
#define __global__
#define __shared__ static
#define __syncthreads()
"""

ROW_WRAPPERS = r"""
typedef TYPE T;
extern "C" void host_ce_fwd(const T* logits, const long long* target, const T* weight, int has_weight,
                            long long rows, long long cols, long long ignore_index, double smoothing,
                            T* loss, T* wy, T* lse) {
    blockIdx.x = 0; blockDim.x = rows;
    for (long long r = 0; r < rows; ++r) { threadIdx.x = r;
        nnx_ce_fwd<T>(logits, target, weight, has_weight, rows, cols, ignore_index, smoothing, loss, wy, lse); }
}
extern "C" void host_ce_bwd(const T* logits, const T* lse, const long long* target, const T* weight, int has_weight,
                            const T* wsum, long long rows, long long cols, long long ignore_index, double smoothing,
                            const T* grad, int grad_per_row, const T* denom, int use_denom, T* d) {
    blockIdx.x = 0; blockDim.x = rows;
    for (long long r = 0; r < rows; ++r) { threadIdx.x = r;
        nnx_ce_bwd<T>(logits, lse, target, weight, has_weight, wsum, rows, cols, ignore_index, smoothing, grad,
                      grad_per_row, denom, use_denom, d); }
}
extern "C" void host_ln_fwd(const T* x, const T* weight, const T* bias, int has_weight, int has_bias, long long rows,
                            long long n, double eps, T* y, T* xhat, T* invstd) {
    blockDim.x = 1; threadIdx.x = 0;  // one thread per block (row)
    for (long long r = 0; r < rows; ++r) { blockIdx.x = r;
        nnx_ln_fwd<T>(x, weight, bias, has_weight, has_bias, n, eps, y, xhat, invstd); }
}
extern "C" void host_ln_bwd(const T* dy, const T* xhat, const T* invstd, const T* weight, int has_weight,
                            long long rows, long long n, T* dx) {
    blockDim.x = 1; threadIdx.x = 0;
    for (long long r = 0; r < rows; ++r) { blockIdx.x = r; nnx_ln_bwd<T>(dy, xhat, invstd, weight, has_weight, n, dx); }
}
extern "C" void host_softmax_cols_fwd(const T* s, long long batches, long long rows, long long cols, T* p, T* lse) {
    blockIdx.x = 0; blockDim.x = batches * cols;
    for (long long i = 0; i < batches * cols; ++i) { threadIdx.x = i;
        nnx_softmax_cols_fwd<T>(s, batches, rows, cols, p, lse); }
}
extern "C" void host_softmax_cols_bwd(const T* dp, const T* p, long long batches, long long rows, long long cols,
                                      T* ds) {
    blockIdx.x = 0; blockDim.x = batches * cols;
    for (long long i = 0; i < batches * cols; ++i) { threadIdx.x = i;
        nnx_softmax_cols_bwd<T>(dp, p, batches, rows, cols, ds); }
}
extern "C" void host_bn_reduce(const T* x, const T* dy, const T* mean, long long n, long long c, long long l,
                               int mode, T* out1, T* out2) {
    blockDim.x = 1; threadIdx.x = 0;  // one thread per block: the shared-memory tree is a no-op
    for (long long ch = 0; ch < c; ++ch) { blockIdx.x = ch; nnx_bn_reduce<T>(x, dy, mean, n, c, l, mode, out1, out2); }
}
"""
