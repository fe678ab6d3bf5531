/* nnx's own single-precision GEMM for CPUs with AVX-512 (included by host_kernels.c).
 *
 * Why: the host kernels' products go to NumPy's OpenBLAS, whose kernel is chosen when it loads,
 * by its CPU detection or by OPENBLAS_CORETYPE. Where that choice is an AVX2 kernel on a CPU with
 * AVX-512 (an OPENBLAS_CORETYPE=Haswell setting, or a CPU newer than the OpenBLAS build knows),
 * its sgemm runs at half the machine's speed: on the 2-vCPU AMD EPYC (Zen 5) VM, 111-120 GFLOP/s
 * with the Haswell kernel against 190-225 with SkylakeX's. These kernels are compiled on the
 * user's machine with -march=native, so they use what the CPU has, whatever OpenBLAS picked.
 * host_kernels.py decides when they run (the BLAS's kernel lacks AVX-512, or NNX_GEMM=nnx).
 *
 * Layout, as BLIS and OpenBLAS do it: C (M, N) = op(A) op(B) + beta C, row-major. op(B) is
 * packed in blocks of KC rows, each block as slivers of NR = 32 columns (kc x 32, zero-padded);
 * op(A) in blocks of MC rows as slivers of MR = 8 rows (kc x 8, k-major, zero-padded: the padding
 * is never stored, it only keeps garbage, NaN and subnormals out of the FMAs). The micro kernel
 * keeps an 8 x 32 tile of C in 16 AVX-512 registers and adds one rank-1 update per k (two loads of
 * B, eight broadcasts of A, sixteen FMAs); a last sliver of at most 16 columns takes an 8 x 16
 * kernel. Loops: columns by NC, depth by KC (B's block packed), rows by MC (A's block packed),
 * then slivers of B, then slivers of A. KC = 512 and MC = 64 were the best of (256, 384, 512) x
 * (64, 96, 128) on the Zen 5 VM, within 5% of each other. Each element of C is one sum in a fixed
 * order (depth blocks in turn, k ascending inside): the same result at every call, whichever
 * thread runs it and however a caller cuts C's rows or columns.
 *
 * Packing reads across rows where op(B) is a transposed matrix or op(A) a row-major one; those
 * cases transpose 16 x 16 blocks in registers (measured: 64x1024 @ (64x1024)^T 75 -> 49 us,
 * 128x512 @ (512x512)^T 398 -> 275 us, 64x1024 @ 1024x64 49 -> 44 us).
 *
 * nnx_sgemm_pack / nnx_sgemm_packed: op(B) packed once and used for many products (the recurrent
 * scans multiply by the same W_hh at every time step). Scratch is per thread (pthread key, freed
 * with the thread), grown on demand; where an allocation fails the caller falls back to BLAS. */
#include <pthread.h>
#include <stdlib.h>

static int nnx_own_gemm_on = 0;

#if defined(__AVX512F__)
#include <immintrin.h>

#ifndef NNX_GEMM_KC
#define NNX_GEMM_KC 512
#endif
#ifndef NNX_GEMM_MC
#define NNX_GEMM_MC 64
#endif
enum { NNX_MR = 8, NNX_NR = 32, NNX_KC = NNX_GEMM_KC, NNX_MC = NNX_GEMM_MC, NNX_NC = 2048 };

typedef struct { float* p[3]; i64 n[3]; } nnx_gemm_ws;
static pthread_key_t nnx_gemm_key;
static pthread_once_t nnx_gemm_once = PTHREAD_ONCE_INIT;
static int nnx_gemm_key_ok = 0;

static void nnx_gemm_ws_free(void* v) {
    nnx_gemm_ws* w = (nnx_gemm_ws*)v;
    for (int i = 0; i < 3; ++i) free(w->p[i]);
    free(w);
}
static void nnx_gemm_key_make(void) { nnx_gemm_key_ok = pthread_key_create(&nnx_gemm_key, nnx_gemm_ws_free) == 0; }

/* this thread's scratch `slot` (0: A blocks, 1: B blocks, 2: a kept packed B) of >= n floats, or NULL */
static float* nnx_gemm_scratch(int slot, i64 n) {
    pthread_once(&nnx_gemm_once, nnx_gemm_key_make);
    if (!nnx_gemm_key_ok) return 0;
    nnx_gemm_ws* w = (nnx_gemm_ws*)pthread_getspecific(nnx_gemm_key);
    if (!w) {
        w = (nnx_gemm_ws*)calloc(1, sizeof(nnx_gemm_ws));
        if (!w || pthread_setspecific(nnx_gemm_key, w)) { free(w); return 0; }
    }
    if (w->n[slot] < n) {
        void* p = 0;
        if (posix_memalign(&p, 64, (size_t)n * sizeof(float))) return 0;
        free(w->p[slot]);
        w->p[slot] = (float*)p;
        w->n[slot] = n;
    }
    return w->p[slot];
}

static i64 nnx_min64(i64 a, i64 b) { return a < b ? a : b; }
static i64 nnx_round_nr(i64 n) { return (n + NNX_NR - 1) / NNX_NR * NNX_NR; }

/* A 16 x 16 block src[r * lds + c] transposed in registers (four rounds of AVX-512 shuffles):
 * col[q] says which column r[q] then holds */
static const int nnx_tcol[16] = {0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15};
static void nnx_transpose16_regs(const float* src, i64 lds, __m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * lds);
    for (int i = 0; i < 16; i += 2) {  /* pairs of rows: 32-bit interleave */
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {  /* 64-bit interleave */
        for (int j = 0; j < 2; ++j) {
            r[i + j] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + j]), _mm512_castps_pd(t[i + 2 + j])));
            r[i + 2 + j] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + j]), _mm512_castps_pd(t[i + 2 + j])));
        }
    }
    for (int i = 0; i < 16; i += 8) {  /* 128-bit lanes */
        for (int j = 0; j < 4; ++j) {
            t[i + j] = _mm512_shuffle_f32x4(r[i + j], r[i + 4 + j], 0x88);
            t[i + 4 + j] = _mm512_shuffle_f32x4(r[i + j], r[i + 4 + j], 0xdd);
        }
    }
    for (int j = 0; j < 8; ++j) {  /* 256-bit halves */
        r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
        r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd);
    }
}

/* dst[c * ldd + r] = src[r * lds + c] for a 16 x 16 block */
static void nnx_transpose16(const float* src, i64 lds, float* dst, i64 ldd) {
    __m512 r[16];
    nnx_transpose16_regs(src, lds, r);
    for (int q = 0; q < 16; ++q) _mm512_storeu_ps(dst + nnx_tcol[q] * ldd, r[q]);
}

/* 16 rows x 16 columns of src into two A slivers (rows 0-7 into d0, 8-15 into d1, k-major with 8
 * per k): d0[c * 8 + r] = src[r * lds + c], d1[c * 8 + r - 8] for r >= 8 */
static void nnx_transpose16_slivers(const float* src, i64 lds, float* d0, float* d1) {
    __m512 r[16];
    nnx_transpose16_regs(src, lds, r);
    for (int q = 0; q < 16; ++q) {
        _mm256_storeu_ps(d0 + nnx_tcol[q] * NNX_MR, _mm512_castps512_ps256(r[q]));
        _mm256_storeu_ps(d1 + nnx_tcol[q] * NNX_MR, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(r[q]), 1)));
    }
}

/* op(B) rows [k0, k0 + kc), columns [j0, j0 + nc) as slivers: sliver s at dst + s * kc * NR */
static void nnx_pack_b(int tb, const float* B, i64 ldb, i64 k0, i64 kc, i64 j0, i64 nc, float* dst) {
    for (i64 js = 0; js < nc; js += NNX_NR) {
        const i64 nr = nnx_min64(NNX_NR, nc - js);
        float* d = dst + js * kc;
        if (!tb) {
            for (i64 k = 0; k < kc; ++k) {
                const float* s = B + (k0 + k) * ldb + j0 + js;
                float* dk = d + k * NNX_NR;
                for (i64 j = 0; j < nr; ++j) dk[j] = s[j];
                for (i64 j = nr; j < NNX_NR; ++j) dk[j] = 0.0f;
            }
        } else {  /* op(B)[k][j] = B[j][k]: 16 x 16 blocks transposed in registers */
            const float* s = B + (j0 + js) * ldb + k0;
            i64 k = 0;
            if (nr == NNX_NR)
                for (; k + 16 <= kc; k += 16) {
                    nnx_transpose16(s + k, ldb, d + k * NNX_NR, NNX_NR);
                    nnx_transpose16(s + 16 * ldb + k, ldb, d + k * NNX_NR + 16, NNX_NR);
                }
            for (; k < kc; ++k) {
                float* dk = d + k * NNX_NR;
                for (i64 j = 0; j < nr; ++j) dk[j] = s[j * ldb + k];
                for (i64 j = nr; j < NNX_NR; ++j) dk[j] = 0.0f;
            }
        }
    }
}

/* op(A) rows [i0, i0 + mc), columns [k0, k0 + kc) as slivers: sliver s at dst + s * kc * MR */
static void nnx_pack_a(int ta, const float* A, i64 lda, i64 i0, i64 mc, i64 k0, i64 kc, float* dst) {
    i64 is = 0;
    if (!ta)  /* pairs of full slivers: 16 x 16 blocks transposed in registers */
        for (; is + 2 * NNX_MR <= mc; is += 2 * NNX_MR) {
            const float* s0 = A + (i0 + is) * lda + k0;
            float* d0 = dst + is * kc;
            float* d1 = d0 + NNX_MR * kc;
            i64 k = 0;
            for (; k + 16 <= kc; k += 16) nnx_transpose16_slivers(s0 + k, lda, d0 + k * NNX_MR, d1 + k * NNX_MR);
            for (i64 i = 0; i < 2 * NNX_MR; ++i) {
                const float* s = s0 + i * lda;
                float* d = (i < NNX_MR ? d0 : d1) + (i % NNX_MR);
                for (i64 kk = k; kk < kc; ++kk) d[kk * NNX_MR] = s[kk];
            }
        }
    for (; is < mc; is += NNX_MR) {
        const i64 mr = nnx_min64(NNX_MR, mc - is);
        float* d = dst + is * kc;
        if (!ta) {
            for (i64 i = 0; i < mr; ++i) {
                const float* s = A + (i0 + is + i) * lda + k0;
                for (i64 k = 0; k < kc; ++k) d[k * NNX_MR + i] = s[k];
            }
            for (i64 i = mr; i < NNX_MR; ++i)
                for (i64 k = 0; k < kc; ++k) d[k * NNX_MR + i] = 0.0f;
        } else {  /* op(A)[i][k] = A[k][i] */
            for (i64 k = 0; k < kc; ++k) {
                const float* s = A + (k0 + k) * lda + i0 + is;
                float* dk = d + k * NNX_MR;
                for (i64 i = 0; i < mr; ++i) dk[i] = s[i];
                for (i64 i = mr; i < NNX_MR; ++i) dk[i] = 0.0f;
            }
        }
    }
}

#define NNX_UKR_ROW(i)                                                                              \
    { const __m512 ai = _mm512_set1_ps(a[i]);                                                      \
      c##i##0 = _mm512_fmadd_ps(ai, b0, c##i##0); c##i##1 = _mm512_fmadd_ps(ai, b1, c##i##1); }
#define NNX_UKR_STORE(i)                                                                            \
    if (i < mr) {                                                                                   \
        float* cr = c + i * ldc;                                                                    \
        if (beta == 0.0f) {                                                                         \
            _mm512_mask_storeu_ps(cr, m0, c##i##0);                                                 \
            _mm512_mask_storeu_ps(cr + 16, m1, c##i##1);                                            \
        } else {                                                                                    \
            const __m512 bv = _mm512_set1_ps(beta);                                                 \
            _mm512_mask_storeu_ps(cr, m0, _mm512_fmadd_ps(bv, _mm512_maskz_loadu_ps(m0, cr), c##i##0)); \
            _mm512_mask_storeu_ps(cr + 16, m1, _mm512_fmadd_ps(bv, _mm512_maskz_loadu_ps(m1, cr + 16), c##i##1)); \
        }                                                                                           \
    }

/* C[:mr, :nr] = beta C + (a sliver) (b sliver) over kc; beta 0: C is not read */
static void nnx_ukr(i64 kc, const float* restrict a, const float* restrict b, float* c, i64 ldc, float beta,
                    i64 mr, i64 nr) {
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
           c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    for (i64 k = 0; k < kc; ++k) {
        const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
        NNX_UKR_ROW(0) NNX_UKR_ROW(1) NNX_UKR_ROW(2) NNX_UKR_ROW(3)
        NNX_UKR_ROW(4) NNX_UKR_ROW(5) NNX_UKR_ROW(6) NNX_UKR_ROW(7)
        a += NNX_MR;
        b += NNX_NR;
    }
    const __mmask16 m0 = nr >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1u);
    const __mmask16 m1 = nr >= 32 ? (__mmask16)0xFFFF : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1u) : (__mmask16)0;
    NNX_UKR_STORE(0) NNX_UKR_STORE(1) NNX_UKR_STORE(2) NNX_UKR_STORE(3)
    NNX_UKR_STORE(4) NNX_UKR_STORE(5) NNX_UKR_STORE(6) NNX_UKR_STORE(7)
}

#define NNX_UKR16_ROW(i) { c##i##0 = _mm512_fmadd_ps(_mm512_set1_ps(a[i]), b0, c##i##0); }
#define NNX_UKR16_STORE(i)                                                                          \
    if (i < mr) {                                                                                   \
        float* cr = c + i * ldc;                                                                    \
        if (beta == 0.0f) _mm512_mask_storeu_ps(cr, m0, c##i##0);                                   \
        else _mm512_mask_storeu_ps(cr, m0, _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(m0, cr), c##i##0)); \
    }

/* nnx_ukr for a last sliver of at most 16 columns: half the work (N = 161: 176 columns computed,
 * not 192) */
static void nnx_ukr16(i64 kc, const float* restrict a, const float* restrict b, float* c, i64 ldc, float beta,
                      i64 mr, i64 nr) {
    __m512 c00 = _mm512_setzero_ps(), c10 = c00, c20 = c00, c30 = c00, c40 = c00, c50 = c00, c60 = c00, c70 = c00;
    for (i64 k = 0; k < kc; ++k) {
        const __m512 b0 = _mm512_load_ps(b);
        NNX_UKR16_ROW(0) NNX_UKR16_ROW(1) NNX_UKR16_ROW(2) NNX_UKR16_ROW(3)
        NNX_UKR16_ROW(4) NNX_UKR16_ROW(5) NNX_UKR16_ROW(6) NNX_UKR16_ROW(7)
        a += NNX_MR;
        b += NNX_NR;
    }
    const __mmask16 m0 = nr >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1u);
    NNX_UKR16_STORE(0) NNX_UKR16_STORE(1) NNX_UKR16_STORE(2) NNX_UKR16_STORE(3)
    NNX_UKR16_STORE(4) NNX_UKR16_STORE(5) NNX_UKR16_STORE(6) NNX_UKR16_STORE(7)
}

/* C[:M, :nc] = beta C + op(A)[:, k0:k0+kc] (bp: packed op(B) rows [k0, k0+kc), nc columns); ap:
 * scratch for one A block */
static void nnx_sgemm_block(i64 M, i64 nc, i64 kc, int ta, const float* A, i64 lda, i64 k0, const float* bp,
                            float beta, float* C, i64 ldc, float* ap) {
    for (i64 ic = 0; ic < M; ic += NNX_MC) {
        const i64 mc = nnx_min64(NNX_MC, M - ic);
        nnx_pack_a(ta, A, lda, ic, mc, k0, kc, ap);
        for (i64 jr = 0; jr < nc; jr += NNX_NR) {
            const i64 nr = nnx_min64(NNX_NR, nc - jr);
            for (i64 ir = 0; ir < mc; ir += NNX_MR)
                (nr > 16 ? nnx_ukr : nnx_ukr16)(kc, ap + ir * kc, bp + jr * kc, C + (ic + ir) * ldc + jr, ldc, beta,
                                                nnx_min64(NNX_MR, mc - ir), nr);
        }
    }
}

static void nnx_scale_rows(i64 M, i64 N, float beta, float* C, i64 ldc) {
    for (i64 i = 0; i < M; ++i)
        for (i64 j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
}

/* C = op(A) op(B) + beta C (ta, tb: 0 as is, 1 transposed); 0 where scratch could not be had */
static int nnx_sgemm(int ta, int tb, i64 M, i64 N, i64 K, const float* A, i64 lda, const float* B, i64 ldb,
                     float beta, float* C, i64 ldc) {
    if (M <= 0 || N <= 0) return 1;
    if (K <= 0) { nnx_scale_rows(M, N, beta, C, ldc); return 1; }
    float* ap = nnx_gemm_scratch(0, (i64)NNX_MC * NNX_KC);
    float* bp = nnx_gemm_scratch(1, (i64)NNX_KC * nnx_min64(NNX_NC, nnx_round_nr(N)));
    if (!ap || !bp) return 0;
    for (i64 jc = 0; jc < N; jc += NNX_NC) {
        const i64 nc = nnx_min64(NNX_NC, N - jc);
        for (i64 pc = 0; pc < K; pc += NNX_KC) {
            const i64 kc = nnx_min64(NNX_KC, K - pc);
            nnx_pack_b(tb, B, ldb, pc, kc, jc, nc, bp);
            nnx_sgemm_block(M, nc, kc, ta, A, lda, pc, bp, pc ? 1.0f : beta, C + jc, ldc, ap);
        }
    }
    return 1;
}

/* op(B) (K, N) packed whole into this thread's kept scratch (blocks of KC rows, each nnx_round_nr(N)
 * wide): the pointer, or NULL */
static const float* nnx_sgemm_pack(int tb, const float* B, i64 ldb, i64 K, i64 N) {
    const i64 np = nnx_round_nr(N);
    float* bp = nnx_gemm_scratch(2, K * np > 0 ? K * np : 1);
    if (!bp) return 0;
    for (i64 pc = 0; pc < K; pc += NNX_KC) nnx_pack_b(tb, B, ldb, pc, nnx_min64(NNX_KC, K - pc), 0, N, bp + pc * np);
    return bp;
}

/* C = A bp + beta C with bp from nnx_sgemm_pack (K, N); 0 where scratch could not be had */
static int nnx_sgemm_packed(i64 M, i64 N, i64 K, const float* A, i64 lda, const float* bp, float beta, float* C,
                            i64 ldc) {
    if (M <= 0 || N <= 0) return 1;
    if (K <= 0) { nnx_scale_rows(M, N, beta, C, ldc); return 1; }
    float* ap = nnx_gemm_scratch(0, (i64)NNX_MC * NNX_KC);
    if (!ap) return 0;
    const i64 np = nnx_round_nr(N);
    for (i64 pc = 0; pc < K; pc += NNX_KC)
        nnx_sgemm_block(M, N, nnx_min64(NNX_KC, K - pc), 0, A, lda, pc, bp + pc * np, pc ? 1.0f : beta, C, ldc, ap);
    return 1;
}

i64 nnx_own_gemm_available(void) { return 1; }
#else
static int nnx_sgemm(int ta, int tb, i64 M, i64 N, i64 K, const float* A, i64 lda, const float* B, i64 ldb,
                     float beta, float* C, i64 ldc) {
    (void)ta; (void)tb; (void)M; (void)N; (void)K; (void)A; (void)lda; (void)B; (void)ldb; (void)beta;
    (void)C; (void)ldc;
    return 0;
}
static const float* nnx_sgemm_pack(int tb, const float* B, i64 ldb, i64 K, i64 N) {
    (void)tb; (void)B; (void)ldb; (void)K; (void)N;
    return 0;
}
static int nnx_sgemm_packed(i64 M, i64 N, i64 K, const float* A, i64 lda, const float* bp, float beta, float* C,
                            i64 ldc) {
    (void)M; (void)N; (void)K; (void)A; (void)lda; (void)bp; (void)beta; (void)C; (void)ldc;
    return 0;
}
i64 nnx_own_gemm_available(void) { return 0; }
#endif

/* the switch host_kernels.py sets (0: BLAS for every product) */
void nnx_set_own_gemm(i64 on) { nnx_own_gemm_on = on != 0 && nnx_own_gemm_available(); }
i64 nnx_own_gemm(void) { return nnx_own_gemm_on; }

/* Standalone entry (tests and benchmarks): C = op(A) op(B) + beta C with nnx's kernel whatever the
 * switch; returns 0 where it cannot run (no AVX-512, no scratch) */
i64 nnx_sgemm_f32(i64 ta, i64 tb, i64 M, i64 N, i64 K, const float* A, i64 lda, const float* B, i64 ldb,
                  double beta, float* C, i64 ldc) {
    return nnx_sgemm((int)ta, (int)tb, M, N, K, A, lda, B, ldb, (float)beta, C, ldc);
}

/* The hooks of host_kernels.c's GEMM wrappers, per element type: 1 where nnx's kernel did the
 * product (float32, the switch on, M >= NNX_OWN_MIN_ROWS), 0 to call BLAS. A product of a few rows
 * costs mostly the packing of B, which BLAS's small-M paths skip. */
#define NNX_OWN_MIN_ROWS 8
static int nnx_own_gemm_f32(int ta, int tb, i64 m, i64 n, i64 k, const float* a, i64 lda, const float* b, i64 ldb,
                            float beta, float* c, i64 ldc) {
    if (!nnx_own_gemm_on || m < NNX_OWN_MIN_ROWS) return 0;
    return nnx_sgemm(ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);
}
static int nnx_own_gemm_f64(int ta, int tb, i64 m, i64 n, i64 k, const double* a, i64 lda, const double* b, i64 ldb,
                            double beta, double* c, i64 ldc) {
    (void)ta; (void)tb; (void)m; (void)n; (void)k; (void)a; (void)lda; (void)b; (void)ldb; (void)beta; (void)c;
    (void)ldc;
    return 0;
}
/* A packed op(B) for a loop of products with it (float32, switch on), else NULL: the scans */
static const float* nnx_own_pack_f32(const float* b, i64 ldb, i64 K, i64 N) {
    return nnx_own_gemm_on ? nnx_sgemm_pack(0, b, ldb, K, N) : 0;
}
static const double* nnx_own_pack_f64(const double* b, i64 ldb, i64 K, i64 N) {
    (void)b; (void)ldb; (void)K; (void)N;
    return 0;
}
static int nnx_own_packed_f32(const float* bp, i64 m, i64 n, i64 k, const float* a, i64 lda, float beta, float* c,
                              i64 ldc) {
    return nnx_sgemm_packed(m, n, k, a, lda, bp, beta, c, ldc);
}
static int nnx_own_packed_f64(const double* bp, i64 m, i64 n, i64 k, const double* a, i64 lda, double beta,
                              double* c, i64 ldc) {
    (void)bp; (void)m; (void)n; (void)k; (void)a; (void)lda; (void)beta; (void)c; (void)ldc;
    return 0;
}
