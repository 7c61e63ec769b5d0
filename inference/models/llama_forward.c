/* One engine step of a Llama-family model in C: the whole forward in one parallel region.
 *
 * The torch path issues ~35 operators per layer (each a dispatch and an OpenMP fork/join);
 * on a thin model (SmolLM2: 30 layers of width 576) that overhead, not arithmetic, was most
 * of a decode step. Here the threads enter once per step and go through the phases below
 * together. A phase is a count of work units (panels of a matmul, rows, attention heads)
 * handed out one at a time; a thread moves on when all units of the phase are done, not
 * when every thread has arrived: on a shared CPU a descheduled thread then costs at most the
 * unit it holds, and the others finish its share (a barrier would wait out its time slice
 * at each of the ~240 phases of a step). Per layer:
 *   h = rmsnorm(x); qkv = h Wqkv (+b); rope(q, k); k, v -> pool slots
 *   attn = attention of each row over its context in the paged pool
 *   x += attn Wo (+b); h = rmsnorm(x); act = silu(h Wg) * (h Wu); x += act Wd
 * A row is one token of the flat batch (decodes and prefill chunks alike): it attends to
 * positions [0, position] of its sequence, read through the block table, which holds the
 * prefix cached by earlier steps and this step's keys alike. Matmuls are gemm.c's; the
 * arithmetic is float32 (bfloat16 weights or pools are widened on load).
 */
#include <math.h>
#include <omp.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels.h"

typedef struct {
    const float *attn_norm, *mlp_norm;
    Packed qkv, o, gate_up, down;
} Layer;

typedef struct {
    int64_t hidden, heads, kv_heads, head_dim, layers, vocab, max_positions;
    float eps;
    const float *embed;        /* [vocab, hidden], or NULL: rows come from the packed head */
    const float *rope_cos;     /* [max_positions, head_dim / 2] */
    const float *rope_sin;
    const Layer *layer;        /* [layers] */
    const float *final_norm;   /* [hidden] */
    Packed head;               /* [vocab, hidden] */
} Model;

typedef struct {
    int64_t rows;
    const int64_t *ids, *positions, *slots; /* [rows] */
    const int64_t *row_table;                /* [rows]: which block table a row reads */
    const int64_t *block_tables;             /* [tables, max_blocks] */
    int64_t max_blocks, block_size, max_context;
    void *const *k_pools, *const *v_pools;   /* [layers] pools [slots, kv_heads, head_dim] */
    int32_t kv_bf16;
    int32_t decodes_only; /* every row is its sequence's only row this step */
    int64_t *profile;     /* NULL, or [PHASES_PER_LAYER] += nanoseconds thread 0 spent per phase */
    float *x;        /* out: [rows, hidden] hidden states before the final norm */
    float *scratch;  /* llama_scratch_floats(...) floats */
    int32_t num_threads;
} Step;

/* ---- per-row pieces ----------------------------------------------------------------------- */

/* out = x / rms(x) * weight, as the reference: normalise in float32, then scale */
static void rmsnorm(const float *x, const float *weight, int64_t n, float eps, float *out) {
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; i++) sum += x[i] * x[i];
    const float scale = 1.0f / sqrtf(sum / (float)n + eps);
#pragma omp simd
    for (int64_t i = 0; i < n; i++) out[i] = weight[i] * (x[i] * scale);
}

/* Rotate-half RoPE of `heads` heads of one row, in place. */
static void rope(float *x, int64_t heads, int64_t head_dim, const float *cos_row,
                 const float *sin_row) {
    const int64_t half = head_dim / 2;
    for (int64_t h = 0; h < heads; h++) {
        float *lo = x + h * head_dim, *hi = lo + half;
#pragma omp simd
        for (int64_t i = 0; i < half; i++) {
            const float a = lo[i], b = hi[i];
            lo[i] = a * cos_row[i] - b * sin_row[i];
            hi[i] = b * cos_row[i] + a * sin_row[i];
        }
    }
}

/* pool[at, at + n) = src, rounded to bfloat16 for a bfloat16 pool */
static void store_kv(void *pool, int64_t at, const float *src, int64_t n, int bf16) {
    if (!bf16) {
        memcpy((float *)pool + at, src, sizeof(float) * (size_t)n);
        return;
    }
    uint16_t *dst = (uint16_t *)pool + at;
    for (int64_t i = 0; i < n; i++) { /* round to nearest even, as torch's .bfloat16() */
        uint32_t bits;
        memcpy(&bits, src + i, sizeof bits);
        dst[i] = isnan(src[i]) ? 0x7fc0 : (uint16_t)((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
    }
}

/* ---- phases ------------------------------------------------------------------------------ */

typedef struct {
    atomic_long next, done;
} Phase;

typedef struct {
    float *h, *qkv, *attn, *act, *attend_scratch; /* attend_scratch: one slice per thread */
    int64_t attend_floats;                       /* floats of one thread's slice */
} Buffers;

typedef struct {
    const Model *m;
    const Step *s;
    Buffers b;
    Phase *phases;
} Run;

typedef void (*UnitFn)(const Run *run, int64_t layer, int64_t unit, int tid);

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Phase `kind` of `layer` (layer -1: the step's first phase), see PHASES_PER_LAYER below. */
enum { QKV, ROPE, ATTEND, O_PROJ, MLP_NORM, GATE_UP, DOWN, ATTN_NORM, PHASES_PER_LAYER };

/* This thread's part of a phase: units are taken one at a time until none are left, then
 * the thread waits (spinning briefly, then yielding the CPU) until all are done. */
static void run_phase(const Run *run, int64_t layer, int kind, int64_t units, UnitFn fn,
                      int tid) {
    Phase *phase = run->phases + 1 + layer * PHASES_PER_LAYER + kind;
    const int64_t start = run->s->profile != NULL && tid == 0 ? now_ns() : 0;
    for (int64_t u = atomic_fetch_add_explicit(&phase->next, 1, memory_order_relaxed); u < units;
         u = atomic_fetch_add_explicit(&phase->next, 1, memory_order_relaxed)) {
        fn(run, layer, u, tid);
        atomic_fetch_add_explicit(&phase->done, 1, memory_order_release);
    }
    for (int spins = 0; atomic_load_explicit(&phase->done, memory_order_acquire) < units;
         spins++) {
        if (spins < 4000)
            cpu_relax();
        else
            sched_yield();
    }
    if (start != 0) run->s->profile[kind] += now_ns() - start;
}

/* ---- units ------------------------------------------------------------------------------- */

#define ROWS_PER_UNIT 8

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
#define MATMUL_UNITS 16 /* a matmul's panels are handed out in about this many units */

static int64_t row_units(const Step *s) { return (s->rows + ROWS_PER_UNIT - 1) / ROWS_PER_UNIT; }

static int64_t panels_per_unit(const Packed *w) {
    return (sg_panels(w) + MATMUL_UNITS - 1) / MATMUL_UNITS;
}

static int64_t matmul_units(const Packed *w) {
    const int64_t per = panels_per_unit(w);
    return (sg_panels(w) + per - 1) / per;
}

static void matmul_unit(const Run *r, const float *a, int64_t lda, const Packed *w, float *c,
                        int64_t ldc, int add, int64_t unit) {
    const int64_t per = panels_per_unit(w);
    sg_gemm_panels(a, lda, r->s->rows, w, c, ldc, add, unit * per,
                   min64(sg_panels(w), (unit + 1) * per));
}

static int64_t q_width(const Model *m) { return m->heads * m->head_dim; }
static int64_t kv_width(const Model *m) { return m->kv_heads * m->head_dim; }
static int64_t qkv_width(const Model *m) { return q_width(m) + 2 * kv_width(m); }
static int64_t inter_size(const Model *m) { return m->layer[0].down.k; }

static void embed_row(const Model *m, int64_t id, float *x) {
    if (m->embed != NULL) {
        memcpy(x, m->embed + id * m->hidden, sizeof(float) * (size_t)m->hidden);
        return;
    }
    /* tied embeddings: row `id` of the packed head, one value every PANEL */
    const int64_t first = (id / PANEL) * m->hidden * PANEL + id % PANEL;
    for (int64_t i = 0; i < m->hidden; i++) {
        if (!m->head.bf16) {
            x[i] = ((const float *)m->head.data)[first + i * PANEL];
            continue;
        }
        const uint32_t bits = (uint32_t)((const uint16_t *)m->head.data)[first + i * PANEL] << 16;
        memcpy(x + i, &bits, sizeof bits);
    }
}

/* rows of a unit: h = rmsnorm(x) with the layer's attention norm (layer -1: embed first) */
static void attn_norm_unit(const Run *r, int64_t layer, int64_t unit, int tid) {
    (void)tid;
    const Model *m = r->m;
    const Step *s = r->s;
    const int64_t next = layer + 1, last = (unit + 1) * ROWS_PER_UNIT;
    for (int64_t t = unit * ROWS_PER_UNIT; t < s->rows && t < last; t++) {
        float *x = s->x + t * m->hidden;
        if (layer < 0) embed_row(m, s->ids[t], x);
        rmsnorm(x, m->layer[next].attn_norm, m->hidden, m->eps, r->b.h + t * m->hidden);
    }
}

static void mlp_norm_unit(const Run *r, int64_t layer, int64_t unit, int tid) {
    (void)tid;
    const Model *m = r->m;
    const int64_t last = (unit + 1) * ROWS_PER_UNIT;
    for (int64_t t = unit * ROWS_PER_UNIT; t < r->s->rows && t < last; t++)
        rmsnorm(r->s->x + t * m->hidden, m->layer[layer].mlp_norm, m->hidden, m->eps,
                r->b.h + t * m->hidden);
}

static void qkv_unit(const Run *r, int64_t layer, int64_t unit, int tid) {
    (void)tid;
    matmul_unit(r, r->b.h, r->m->hidden, &r->m->layer[layer].qkv, r->b.qkv, qkv_width(r->m), 0,
                unit);
}

static void o_unit(const Run *r, int64_t layer, int64_t unit, int tid) {
    (void)tid;
    matmul_unit(r, r->b.attn, q_width(r->m), &r->m->layer[layer].o, r->s->x, r->m->hidden, 1,
                unit);
}

static void gate_up_unit(const Run *r, int64_t layer, int64_t unit, int tid) {
    (void)tid;
    matmul_unit(r, r->b.h, r->m->hidden, &r->m->layer[layer].gate_up, r->b.act, inter_size(r->m),
                0, unit);
}

static void down_unit(const Run *r, int64_t layer, int64_t unit, int tid) {
    (void)tid;
    matmul_unit(r, r->b.act, inter_size(r->m), &r->m->layer[layer].down, r->s->x, r->m->hidden,
                1, unit);
}

/* RoPE on query heads [h0, h0 + nq) and kv head g of row t; its key and value to the pool */
static void rope_and_store(const Run *r, int64_t layer, int64_t t, int64_t h0, int64_t nq,
                           int64_t g, int64_t ng) {
    const Model *m = r->m;
    const Step *s = r->s;
    const int64_t d = m->head_dim, half = d / 2;
    float *row = r->b.qkv + t * qkv_width(m);
    const float *c = m->rope_cos + s->positions[t] * half;
    const float *sn = m->rope_sin + s->positions[t] * half;
    rope(row + h0 * d, nq, d, c, sn);
    float *k = row + q_width(m) + g * d, *v = row + q_width(m) + kv_width(m) + g * d;
    rope(k, ng, d, c, sn);
    const int64_t at = (s->slots[t] * m->kv_heads + g) * d;
    store_kv(s->k_pools[layer], at, k, ng * d, s->kv_bf16);
    store_kv(s->v_pools[layer], at, v, ng * d, s->kv_bf16);
}

static void rope_unit(const Run *r, int64_t layer, int64_t unit, int tid) {
    (void)tid;
    const int64_t last = (unit + 1) * ROWS_PER_UNIT;
    for (int64_t t = unit * ROWS_PER_UNIT; t < r->s->rows && t < last; t++)
        rope_and_store(r, layer, t, 0, r->m->heads, 0, r->m->kv_heads);
}

/* Attention is split by row, or by (row, kv head) when there are too few rows to keep the
 * threads busy: a row's unit reads each slot's keys and values of all kv heads as one
 * contiguous run, which the hardware prefetchers follow; a (row, kv head) unit reads a third
 * of every slot, which costs about 3x as much per key once the contexts are out of cache. */
static bool attend_by_row(const Step *s) { return s->rows >= 4 * (int64_t)s->num_threads; }

static int64_t attention_units(const Model *m, const Step *s) {
    return attend_by_row(s) ? s->rows : s->rows * m->kv_heads;
}

/* With decodes only, no other row needs this unit's keys, so their RoPE and store happen
 * here instead of in a phase of their own. */
static void attention_unit(const Run *r, int64_t layer, int64_t unit, int tid) {
    const Model *m = r->m;
    const Step *s = r->s;
    const int64_t group = m->heads / m->kv_heads, d = m->head_dim;
    const KVView kv = {s->k_pools[layer], s->v_pools[layer], s->kv_bf16, m->heads, m->kv_heads,
                       d, s->block_size, 1.0f / sqrtf((float)d)};
    float *scratch = r->b.attend_scratch + tid * r->b.attend_floats;
    if (attend_by_row(s)) {
        const int64_t t = unit;
        const int64_t *table = s->block_tables + s->row_table[t] * s->max_blocks;
        if (s->decodes_only) rope_and_store(r, layer, t, 0, m->heads, 0, m->kv_heads);
        sg_attend_row(&kv, r->b.qkv + t * qkv_width(m), table, s->positions[t] + 1,
                      r->b.attn + t * q_width(m), scratch);
        return;
    }
    const int64_t t = unit / m->kv_heads, g = unit % m->kv_heads;
    const int64_t *table = s->block_tables + s->row_table[t] * s->max_blocks;
    if (s->decodes_only) rope_and_store(r, layer, t, g * group, group, g, 1);
    const float *q = r->b.qkv + t * qkv_width(m) + g * group * d;
    sg_attend(&kv, q, table, s->positions[t] + 1, g, r->b.attn + t * q_width(m) + g * group * d,
              scratch);
}

/* ---- the step ----------------------------------------------------------------------------- */

static int64_t attend_floats(const Model *m, int64_t max_context) {
    const KVView kv = {NULL, NULL, 0, m->heads, m->kv_heads, m->head_dim, 1, 1.0f};
    const int64_t by_head = sg_attend_scratch(&kv, max_context);
    const int64_t by_row = sg_attend_row_scratch(&kv, max_context);
    return by_head > by_row ? by_head : by_row;
}

int64_t llama_scratch_floats(const Model *m, int64_t rows, int64_t max_context, int threads) {
    return rows * (m->hidden + qkv_width(m) + q_width(m) + inter_size(m)) +
           threads * attend_floats(m, max_context);
}

static Buffers buffers(const Model *m, const Step *s) {
    Buffers b;
    b.h = s->scratch;
    b.qkv = b.h + s->rows * m->hidden;
    b.attn = b.qkv + s->rows * qkv_width(m);
    b.act = b.attn + s->rows * q_width(m);
    b.attend_scratch = b.act + s->rows * inter_size(m);
    b.attend_floats = attend_floats(m, s->max_context);
    return b;
}

static void layer_forward(const Run *r, int64_t l, int tid) {
    const Layer *w = &r->m->layer[l];
    run_phase(r, l, QKV, matmul_units(&w->qkv), qkv_unit, tid);
    if (!r->s->decodes_only) run_phase(r, l, ROPE, row_units(r->s), rope_unit, tid);
    run_phase(r, l, ATTEND, attention_units(r->m, r->s), attention_unit, tid);
    run_phase(r, l, O_PROJ, matmul_units(&w->o), o_unit, tid);
    run_phase(r, l, MLP_NORM, row_units(r->s), mlp_norm_unit, tid);
    run_phase(r, l, GATE_UP, matmul_units(&w->gate_up), gate_up_unit, tid);
    run_phase(r, l, DOWN, matmul_units(&w->down), down_unit, tid);
    if (l + 1 < r->m->layers) run_phase(r, l, ATTN_NORM, row_units(r->s), attn_norm_unit, tid);
}

/* Fills s->x; returns 0, or -1 when the step's phase counters cannot be allocated. */
int llama_forward(const Model *m, const Step *s) {
    Run run = {m, s, buffers(m, s), NULL};
    run.phases = calloc((size_t)(1 + m->layers * PHASES_PER_LAYER), sizeof(Phase));
    if (run.phases == NULL) return -1;
#pragma omp parallel num_threads(s->num_threads)
    {
        const int tid = omp_get_thread_num();
        run_phase(&run, -1, ATTN_NORM, row_units(s), attn_norm_unit, tid);
        for (int64_t l = 0; l < m->layers; l++) layer_forward(&run, l, tid);
    }
    free(run.phases);
    return 0;
}

/* logits[rows, vocab] of hidden states x[rows, hidden]: the final norm, then the head. */
int llama_logits(const Model *m, const float *x, int64_t rows, float *logits, int num_threads) {
    float *normed = malloc(sizeof(float) * (size_t)(rows * m->hidden));
    if (normed == NULL) return -1;
    for (int64_t t = 0; t < rows; t++)
        rmsnorm(x + t * m->hidden, m->final_norm, m->hidden, m->eps, normed + t * m->hidden);
    atomic_long next = 0;
    const int64_t per = panels_per_unit(&m->head), panels = sg_panels(&m->head);
#pragma omp parallel num_threads(num_threads)
    for (int64_t u = atomic_fetch_add(&next, 1); u * per < panels; u = atomic_fetch_add(&next, 1))
        sg_gemm_panels(normed, m->hidden, rows, &m->head, logits, m->vocab, 0, u * per,
                       min64(panels, (u + 1) * per));
    free(normed);
    return 0;
}
