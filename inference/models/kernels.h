/* Shared declarations of the C kernels (gemm.c, llama_forward.c), built by native.py. */
#ifndef SLUICEGATE_KERNELS_H
#define SLUICEGATE_KERNELS_H

#include <stdint.h>

/* Eight floats in one AVX register (GCC/Clang vector extensions: any target compiles them). */
typedef float v8 __attribute__((vector_size(32)));

/* A weight matrix [n, k] (torch's Linear layout) packed for the GEMM, see gemm.c:
 * panels of PANEL output features, each stored k-major, [panels, k, PANEL], zero-padded.
 * `bias` is NULL or [panels * PANEL] in the same panel order.
 * With `swiglu`, panel p holds gate features 8p..8p+7 then up features 8p..8p+7 and the
 * GEMM writes silu(gate) * up: `n` is then the number of those outputs (the MLP's width). */
typedef struct {
    const void *data;
    const float *bias;
    int64_t n, k;
    int32_t bf16; /* data is bfloat16 (widened to float32 in the kernel), else float32 */
    int32_t swiglu;
} Packed;

#define PANEL 16

static inline v8 sg_load8(const float *p) {
    v8 v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

/* c[rows, n] (=, or += with `add`) a[rows, k] . w^T (+ bias): this thread's share of the
 * panels (thread `tid` of `nt`). Called by every thread of a parallel region. */
void sg_gemm(const float *a, int64_t lda, int64_t rows, const Packed *w, float *c, int64_t ldc,
             int add, int tid, int nt);

/* The same for panels [first, last) only. */
void sg_gemm_panels(const float *a, int64_t lda, int64_t rows, const Packed *w, float *c,
                    int64_t ldc, int add, int64_t first, int64_t last);

/* Number of panels of a packed matrix. */
int64_t sg_panels(const Packed *w);

/* A layer's paged KV pool as attention reads it (see paged_attention.c). */
typedef struct {
    const void *k_pool, *v_pool; /* [slots, kv_heads, head_dim] */
    int32_t kv_bf16;
    int64_t heads, kv_heads, head_dim, block_size;
    float scale;
} KVView;

/* out[group, head_dim] = attention of the `group` query heads q[group, head_dim] of kv head g
 * over positions [0, context) of the sequence whose block table is `table`; `scratch` holds
 * sg_attend_scratch(kv, context) floats. */
void sg_attend(const KVView *kv, const float *q, const int64_t *table, int64_t context,
               int64_t g, float *out, float *scratch);
int64_t sg_attend_scratch(const KVView *kv, int64_t context);

/* The same for all `heads` query heads of a row, q and out [heads, head_dim], reading each
 * slot's keys and values of every kv head in one contiguous run (the better memory pattern
 * once contexts are out of cache); `scratch` holds sg_attend_row_scratch(kv, context). */
void sg_attend_row(const KVView *kv, const float *q, const int64_t *table, int64_t context,
                   float *out, float *scratch);
int64_t sg_attend_row_scratch(const KVView *kv, int64_t context);

typedef int32_t v8i __attribute__((vector_size(32)));

/* exp(x) for eight lanes: Cephes' expf polynomial (within 2 ulp of expf), vectorised.
 * x is clamped to [-87.3, 88.3] (the float range), which is all SiLU and softmax need. */
static inline v8 sg_exp8(v8 x) {
    const v8 hi = (v8){0} + 88.3f, lo = (v8){0} - 87.3f;
    v8i above = x > hi, below = x < lo; /* lanes of all ones where true */
    x = (v8)(((v8i)hi & above) | ((v8i)x & ~above));
    x = (v8)(((v8i)lo & below) | ((v8i)x & ~below));
    const float round = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    v8 n = (x * 1.44269504088896341f + round) - round;
    v8 r = x - n * 0.693359375f - n * -2.12194440e-4f;
    v8 p = (v8){0} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    v8 y = p * r * r + r + 1.0f;
    v8i bits = (__builtin_convertvector(n, v8i) + 127) << 23; /* 2^n as a float */
    return y * (v8)bits;
}

#endif
