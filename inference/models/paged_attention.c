/* Attention straight from the paged KV pool: one query row over its context.
 *
 * The pure-torch path first gathers each sequence's keys and values into a workspace and
 * then runs scaled_dot_product_attention on it: the context crosses memory three times
 * (read from the pool, written, read back). Here every key and value is read once, from
 * its block, which is what decode attention is bound by.
 *
 * Layouts (contiguous; q and out float32, the pools float32 or bfloat16 by `kv_bf16`):
 *   q, out         [num_seqs, num_heads, head_dim]
 *   k_pool, v_pool [num_slots, num_kv_heads, head_dim], slot = block * block_size + offset
 *   block_tables   [num_seqs, max_blocks] int64, context_lens [num_seqs] int64
 * Query head h reads key/value head h / (num_heads / num_kv_heads) (grouped-query): the
 * `group` query heads of one kv head are scored together, each key read once for all.
 * Softmax is the usual two passes (max, then exp and sum); all arithmetic is float32
 * (a bfloat16 slot is widened into a small buffer first, as torch does for bfloat16).
 * `sg_attend` serves llama_forward.c (a row of any step) and `paged_decode_attention`
 * (the torch models' decodes, sequences spread over OpenMP threads).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

static inline float sum8(v8 v) {
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

/* a . b over n floats: eight lanes at a time where n allows (head_dim is 64 or 128 in
 * practice), plain C otherwise */
static inline float dot(const float *a, const float *b, int64_t n) {
    if (n % 16 == 0) {
        v8 lo = {0}, hi = {0};
        for (int64_t i = 0; i < n; i += 16) {
            lo += sg_load8(a + i) * sg_load8(b + i);
            hi += sg_load8(a + i + 8) * sg_load8(b + i + 8);
        }
        return sum8(lo + hi);
    }
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += a[i] * b[i];
    return sum;
}

/* y += a x over n floats */
static inline void axpy(float *y, float a, const float *x, int64_t n) {
    if (n % 8 == 0) {
        for (int64_t i = 0; i < n; i += 8) {
            const v8 r = sg_load8(y + i) + a * sg_load8(x + i);
            memcpy(y + i, &r, sizeof r);
        }
        return;
    }
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

/* row[0, n) = exp(row - max) / sum: the probabilities of one head's scores */
static void softmax(float *row, int64_t n) {
    float top = -INFINITY;
    for (int64_t j = 0; j < n; j++) top = row[j] > top ? row[j] : top;
    v8 sums = {0};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const v8 e = sg_exp8(sg_load8(row + j) - top);
        memcpy(row + j, &e, sizeof e);
        sums += e;
    }
    float sum = sum8(sums);
    for (; j < n; j++) {
        row[j] = expf(row[j] - top);
        sum += row[j];
    }
    const float inverse = 1.0f / sum;
    for (j = 0; j < n; j++) row[j] *= inverse;
}

/* One slot's head g as float32: in place, or widened from bfloat16 into `buffer`. */
static const float *slot_head(const KVView *kv, const void *pool, int64_t slot, int64_t g,
                              float *buffer) {
    const int64_t at = (slot * kv->kv_heads + g) * kv->head_dim;
    if (!kv->kv_bf16) return (const float *)pool + at;
    const uint16_t *halves = (const uint16_t *)pool + at;
    for (int64_t i = 0; i < kv->head_dim; i++) {
        const uint32_t bits = (uint32_t)halves[i] << 16; /* bfloat16 is float32's upper half */
        memcpy(buffer + i, &bits, sizeof bits);
    }
    return buffer;
}

/* One slot's heads (all of them) as float32: in place, or widened into `buffer`. */
static const float *slot_row(const KVView *kv, const void *pool, int64_t slot, float *buffer) {
    const int64_t width = kv->kv_heads * kv->head_dim, at = slot * width;
    if (!kv->kv_bf16) return (const float *)pool + at;
    const uint16_t *halves = (const uint16_t *)pool + at;
    for (int64_t i = 0; i < width; i++) {
        const uint32_t bits = (uint32_t)halves[i] << 16;
        memcpy(buffer + i, &bits, sizeof bits);
    }
    return buffer;
}

/* One query head at a time for the common head size on a float32 pool: its query (for the
 * scores) or its output accumulators (for the values) stay in registers over a block of slots,
 * where the generic loops reload the query and load and store the output once a slot. The
 * same operations in the same order as `dot` and `axpy`, so the same results. */
#define HEAD_DIM 64

/* scores[o] = q . key of kv head g in slot first + o, times scale, for `count` slots */
static void score_slots(const KVView *kv, const float *q, int64_t first, int64_t count,
                        int64_t g, float *scores) {
    const int64_t width = kv->kv_heads * HEAD_DIM;
    v8 qv[HEAD_DIM / 8];
    for (int c = 0; c < HEAD_DIM / 8; c++) qv[c] = sg_load8(q + 8 * c);
    const float *k = (const float *)kv->k_pool + first * width + g * HEAD_DIM;
    for (int64_t o = 0; o < count; o++, k += width) {
        v8 lo = {0}, hi = {0};
        for (int c = 0; c < HEAD_DIM / 8; c += 2) {
            lo += qv[c] * sg_load8(k + 8 * c);
            hi += qv[c + 1] * sg_load8(k + 8 * c + 8);
        }
        scores[o] = sum8(lo + hi) * kv->scale;
    }
}

/* out += sum over `count` slots from `first` of p[o] * value of kv head g in that slot */
static void weigh_slots(const KVView *kv, const float *p, int64_t first, int64_t count,
                        int64_t g, float *out) {
    const int64_t width = kv->kv_heads * HEAD_DIM;
    v8 acc[HEAD_DIM / 8];
    for (int c = 0; c < HEAD_DIM / 8; c++) acc[c] = sg_load8(out + 8 * c);
    const float *v = (const float *)kv->v_pool + first * width + g * HEAD_DIM;
    for (int64_t o = 0; o < count; o++, v += width)
        for (int c = 0; c < HEAD_DIM / 8; c++) acc[c] += p[o] * sg_load8(v + 8 * c);
    memcpy(out, acc, sizeof acc);
}

/* The `heads` query heads q[heads, HEAD_DIM] starting at kv head g0 (head h reads kv head
 * g0 + h / group) into out[heads, HEAD_DIM], a block at a time. Only for one kv head's group
 * (`sg_attend`): tried for every head of a row (`sg_attend_row`), these passes made a 32-row
 * SmolLM2 step's attention 1.6x slower than the slot-at-a-time loop there. */
static void attend_heads(const KVView *kv, const float *q, const int64_t *table,
                         int64_t context, int64_t g0, int64_t heads, float *out,
                         float *scores) {
    const int64_t group = kv->heads / kv->kv_heads, bs = kv->block_size;
    for (int64_t j = 0; j < context; j += bs) {
        const int64_t first = table[j / bs] * bs, count = context - j < bs ? context - j : bs;
        for (int64_t h = 0; h < heads; h++)
            score_slots(kv, q + h * HEAD_DIM, first, count, g0 + h / group,
                        scores + h * context + j);
    }
    for (int64_t h = 0; h < heads; h++) softmax(scores + h * context, context);
    memset(out, 0, sizeof(float) * (size_t)(heads * HEAD_DIM));
    for (int64_t j = 0; j < context; j += bs) {
        const int64_t first = table[j / bs] * bs, count = context - j < bs ? context - j : bs;
        for (int64_t h = 0; h < heads; h++)
            weigh_slots(kv, scores + h * context + j, first, count, g0 + h / group,
                        out + h * HEAD_DIM);
    }
}

int64_t sg_attend_scratch(const KVView *kv, int64_t context) {
    return (kv->heads / kv->kv_heads) * context + kv->head_dim;
}

void sg_attend(const KVView *kv, const float *q, const int64_t *table, int64_t context,
               int64_t g, float *out, float *scratch) {
    const int64_t d = kv->head_dim, group = kv->heads / kv->kv_heads, bs = kv->block_size;
    float *scores = scratch, *widened = scratch + group * context;
    if (d == HEAD_DIM && !kv->kv_bf16) {
        attend_heads(kv, q, table, context, g, group, out, scores);
        return;
    }
    for (int64_t j = 0; j < context; j += bs) {
        const int64_t first = table[j / bs] * bs, count = context - j < bs ? context - j : bs;
        for (int64_t o = 0; o < count; o++) {
            const float *k = slot_head(kv, kv->k_pool, first + o, g, widened);
            for (int64_t h = 0; h < group; h++)
                scores[h * context + j + o] = dot(q + h * d, k, d) * kv->scale;
        }
    }
    for (int64_t h = 0; h < group; h++) softmax(scores + h * context, context);
    memset(out, 0, sizeof(float) * (size_t)(group * d));
    for (int64_t j = 0; j < context; j += bs) {
        const int64_t first = table[j / bs] * bs, count = context - j < bs ? context - j : bs;
        for (int64_t o = 0; o < count; o++) {
            const float *v = slot_head(kv, kv->v_pool, first + o, g, widened);
            for (int64_t h = 0; h < group; h++)
                axpy(out + h * d, scores[h * context + j + o], v, d);
        }
    }
}

/* Every query head of one row at once: per slot, the keys (then values) of all kv heads are
 * one contiguous run of kv_heads * head_dim, so a block is read front to back once per pass
 * (the per-kv-head `sg_attend` reads a third of each slot's lines, three times over, which
 * the hardware prefetchers follow badly once the context is out of cache). */
void sg_attend_row(const KVView *kv, const float *q, const int64_t *table, int64_t context,
                   float *out, float *scratch) {
    const int64_t d = kv->head_dim, heads = kv->heads, group = heads / kv->kv_heads;
    const int64_t bs = kv->block_size;
    float *scores = scratch, *widened = scratch + heads * context;
    for (int64_t j = 0; j < context; j += bs) {
        const int64_t first = table[j / bs] * bs, count = context - j < bs ? context - j : bs;
        for (int64_t o = 0; o < count; o++) {
            const float *k = slot_row(kv, kv->k_pool, first + o, widened);
            for (int64_t h = 0; h < heads; h++)
                scores[h * context + j + o] = dot(q + h * d, k + (h / group) * d, d) * kv->scale;
        }
    }
    for (int64_t h = 0; h < heads; h++) softmax(scores + h * context, context);
    memset(out, 0, sizeof(float) * (size_t)(heads * d));
    for (int64_t j = 0; j < context; j += bs) {
        const int64_t first = table[j / bs] * bs, count = context - j < bs ? context - j : bs;
        for (int64_t o = 0; o < count; o++) {
            const float *v = slot_row(kv, kv->v_pool, first + o, widened);
            for (int64_t h = 0; h < heads; h++)
                axpy(out + h * d, scores[h * context + j + o], v + (h / group) * d, d);
        }
    }
}

int64_t sg_attend_row_scratch(const KVView *kv, int64_t context) {
    return kv->heads * context + kv->kv_heads * kv->head_dim;
}

int paged_decode_attention(const float *q, const void *k_pool, const void *v_pool,
                           const int64_t *block_tables, const int64_t *context_lens,
                           float *out, int64_t num_seqs, int64_t max_blocks, int64_t num_heads,
                           int64_t num_kv_heads, int64_t head_dim, int64_t block_size,
                           float scale, int num_threads, int kv_bf16) {
    const KVView kv = {k_pool, v_pool, kv_bf16, num_heads, num_kv_heads, head_dim, block_size,
                       scale};
    int failed = 0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads) reduction(| : failed)
    for (int64_t s = 0; s < num_seqs; s++) {
        float *scratch =
            malloc(sizeof(float) * (size_t)sg_attend_row_scratch(&kv, context_lens[s]));
        if (scratch == NULL) {
            failed = 1;
            continue;
        }
        const int64_t offset = s * num_heads * head_dim;
        sg_attend_row(&kv, q + offset, block_tables + s * max_blocks, context_lens[s],
                      out + offset, scratch);
        free(scratch);
    }
    return failed ? -1 : 0;
}
