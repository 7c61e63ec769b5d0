/* The matrix multiply of every linear layer: c = a . w^T over weights packed at load.
 *
 * Why not torch's (MKL's) sgemm: on this engine's shapes (a few to a few hundred rows times
 * thin weights, e.g. 32 x 576 x 3072) it reached about half of what this simple kernel does,
 * and each call costs a dispatch; here the whole forward runs in one parallel region.
 *
 * Layout: w [n, k] is packed into panels of PANEL (16) output features, k-major
 * ([panels, k, 16]), so a tile streams one contiguous panel while it accumulates up to six
 * rows of `a` against it: 12 vector accumulators, two panel loads and six broadcasts per k.
 * Threads split the panels; each panel is read from memory once per call and stays in L2
 * while the row tiles pass over it. At one row the loop is a memory stream (batch-1 decode is
 * bound by reading the weights once); at many rows it is bound by the FMA units.
 * With more rows than one tile, a panel is computed from memory at most at the rate its first
 * tile consumes it, and the weights of a layer do not stay in cache from one step to the next:
 * each tile then asks for the next panel's line (the panels are contiguous) as it reads its
 * own, so the next panel arrives while this one is computed (+14% at 32 rows with the weights
 * coming from memory). At one row the loop is itself the stream and the hardware prefetcher
 * does better alone.
 * Weights are float32 or bfloat16 (widened in registers: bfloat16 is float32's upper half);
 * the arithmetic is float32 either way.
 */
#include <string.h>

#include "kernels.h"

#define MAX_ROWS 6

typedef uint16_t v8h __attribute__((vector_size(16)));
typedef uint32_t v8u __attribute__((vector_size(32)));

static inline v8 load_bf16(const uint16_t *p) {
    v8h h;
    memcpy(&h, p, sizeof h);
    return (v8)(__builtin_convertvector(h, v8u) << 16);
}

/* out[r][0..16) = a[r, 0..k) . panel, for MR rows: the accumulators stay in registers. */
#define TILE(NAME, MR, BTYPE, LOAD)                                                           \
    static void NAME(int64_t k, const float *a, int64_t lda, const BTYPE *b, int ahead,     \
                     float out[MAX_ROWS][PANEL]) {                                          \
        v8 lo[MR], hi[MR];                                                                  \
        for (int r = 0; r < MR; r++) lo[r] = hi[r] = (v8){0};                              \
        for (int64_t i = 0; i < k; i++) {                                                   \
            if (ahead) __builtin_prefetch(b + (k + i) * PANEL); /* next panel, see top */   \
            const v8 b0 = LOAD(b + i * PANEL), b1 = LOAD(b + i * PANEL + 8);               \
            for (int r = 0; r < MR; r++) {                                                  \
                const float x = a[r * lda + i];                                             \
                lo[r] += x * b0;                                                            \
                hi[r] += x * b1;                                                            \
            }                                                                               \
        }                                                                                   \
        for (int r = 0; r < MR; r++) {                                                      \
            memcpy(out[r], &lo[r], sizeof lo[r]);                                           \
            memcpy(out[r] + 8, &hi[r], sizeof hi[r]);                                       \
        }                                                                                   \
    }

#define TILES(PREFIX, BTYPE, LOAD)            \
    TILE(PREFIX##_1, 1, BTYPE, LOAD)          \
    TILE(PREFIX##_2, 2, BTYPE, LOAD)          \
    TILE(PREFIX##_3, 3, BTYPE, LOAD)          \
    TILE(PREFIX##_4, 4, BTYPE, LOAD)          \
    TILE(PREFIX##_5, 5, BTYPE, LOAD)          \
    TILE(PREFIX##_6, 6, BTYPE, LOAD)

TILES(tile_f32, float, sg_load8)
TILES(tile_bf16, uint16_t, load_bf16)

typedef void (*TileF32)(int64_t, const float *, int64_t, const float *, int,
                        float[MAX_ROWS][PANEL]);
typedef void (*TileBf16)(int64_t, const float *, int64_t, const uint16_t *, int,
                         float[MAX_ROWS][PANEL]);
static const TileF32 F32_TILES[MAX_ROWS + 1] = {
    NULL, tile_f32_1, tile_f32_2, tile_f32_3, tile_f32_4, tile_f32_5, tile_f32_6};
static const TileBf16 BF16_TILES[MAX_ROWS + 1] = {
    NULL, tile_bf16_1, tile_bf16_2, tile_bf16_3, tile_bf16_4, tile_bf16_5, tile_bf16_6};

int64_t sg_panels(const Packed *w) {
    const int64_t width = w->swiglu ? PANEL / 2 : PANEL;
    return (w->n + width - 1) / width;
}

/* silu(gate) * up for the 8 gate and 8 up features of a swiglu panel */
static void store_swiglu(const float acc[PANEL], const float *bias, float *c, int64_t count) {
    v8 gate = sg_load8(acc), up = sg_load8(acc + 8);
    if (bias != NULL) {
        gate += sg_load8(bias);
        up += sg_load8(bias + 8);
    }
    const v8 out = gate / (1.0f + sg_exp8(-gate)) * up;
    memcpy(c, &out, sizeof(float) * (size_t)count);
}

static void store(const float acc[PANEL], const float *bias, float *c, int64_t count, int add) {
    for (int64_t j = 0; j < count; j++) {
        const float value = bias != NULL ? acc[j] + bias[j] : acc[j];
        c[j] = add ? c[j] + value : value;
    }
}

/* Rows [0, rows) against panel p: tiles of up to MAX_ROWS rows, then the epilogue. */
static void panel_rows(const float *a, int64_t lda, int64_t rows, const Packed *w, int64_t p,
                       float *c, int64_t ldc, int add) {
    const int64_t width = w->swiglu ? PANEL / 2 : PANEL;
    const int64_t first = p * width;
    const int64_t count = w->n - first < width ? w->n - first : width;
    const float *bias = w->bias != NULL ? w->bias + p * PANEL : NULL;
    const size_t offset = (size_t)(p * w->k * PANEL);
    float acc[MAX_ROWS][PANEL];
    const int ahead = rows > MAX_ROWS;
    for (int64_t t = 0; t < rows; t += MAX_ROWS) {
        const int mr = rows - t < MAX_ROWS ? (int)(rows - t) : MAX_ROWS;
        if (w->bf16)
            BF16_TILES[mr](w->k, a + t * lda, lda, (const uint16_t *)w->data + offset, ahead,
                           acc);
        else
            F32_TILES[mr](w->k, a + t * lda, lda, (const float *)w->data + offset, ahead, acc);
        for (int r = 0; r < mr; r++) {
            float *row = c + (t + r) * ldc + first;
            if (w->swiglu)
                store_swiglu(acc[r], bias, row, count);
            else
                store(acc[r], bias, row, count, add);
        }
    }
}

void sg_gemm_panels(const float *a, int64_t lda, int64_t rows, const Packed *w, float *c,
                    int64_t ldc, int add, int64_t first, int64_t last) {
    for (int64_t p = first; p < last; p++) panel_rows(a, lda, rows, w, p, c, ldc, add);
}

void sg_gemm(const float *a, int64_t lda, int64_t rows, const Packed *w, float *c, int64_t ldc,
             int add, int tid, int nt) {
    const int64_t panels = sg_panels(w);
    sg_gemm_panels(a, lda, rows, w, c, ldc, add, panels * tid / nt, panels * (tid + 1) / nt);
}
