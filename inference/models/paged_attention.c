/* Decode attention straight from the paged KV pool: one query token per sequence.
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
 * Query head h reads key/value head h / (num_heads / num_kv_heads) (grouped-query).
 * Softmax is the usual two passes (max, then exp and sum); all arithmetic is float32
 * (a bfloat16 slot is widened into a small buffer first, as torch does for bfloat16).
 * Built by inference/models/native.py; sequences are spread over OpenMP threads.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const void *k_pool, *v_pool;
    int kv_bf16;
    int64_t num_heads, group, head_dim, slot_stride, block_size;
    float scale;
} Pool;

/* Per-thread scratch for one sequence: scores [num_heads, context], its slots, one slot. */
typedef struct {
    float *scores, *inverse_sums, *widened;
    int64_t *slots;
} Scratch;

/* One slot's keys or values as float32: in place, or widened from bfloat16 into `buffer`. */
static const float *slot_row(const Pool *p, const void *pool, int64_t slot, float *buffer) {
    if (!p->kv_bf16) return (const float *)pool + slot * p->slot_stride;
    const uint16_t *halves = (const uint16_t *)pool + slot * p->slot_stride;
    for (int64_t i = 0; i < p->slot_stride; i++) {
        uint32_t bits = (uint32_t)halves[i] << 16; /* bfloat16 is float32's upper half */
        memcpy(buffer + i, &bits, sizeof bits);
    }
    return buffer;
}

/* scores[h, t] = q_h . k_t * scale, reading each key slot once for all heads */
static void score(const Pool *p, const float *q, int64_t context, Scratch *s) {
    for (int64_t t = 0; t < context; t++) {
        const float *k = slot_row(p, p->k_pool, s->slots[t], s->widened);
        for (int64_t h = 0; h < p->num_heads; h++) {
            const float *kh = k + (h / p->group) * p->head_dim;
            const float *qh = q + h * p->head_dim;
            float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
            for (int64_t d = 0; d < p->head_dim; d++) dot += qh[d] * kh[d];
            s->scores[h * context + t] = dot * p->scale;
        }
    }
}

/* scores become unnormalised probabilities; inverse_sums[h] normalises row h */
static void softmax(const Pool *p, int64_t context, Scratch *s) {
    for (int64_t h = 0; h < p->num_heads; h++) {
        float *row = s->scores + h * context;
        float top = -INFINITY;
        for (int64_t t = 0; t < context; t++) top = row[t] > top ? row[t] : top;
        float sum = 0.0f;
        for (int64_t t = 0; t < context; t++) {
            row[t] = expf(row[t] - top);
            sum += row[t];
        }
        s->inverse_sums[h] = 1.0f / sum;
    }
}

/* out_h = sum_t p[h, t] v_t / sum_t p[h, t], one pass over the value slots */
static void weigh_values(const Pool *p, int64_t context, Scratch *s, float *out) {
    memset(out, 0, sizeof(float) * (size_t)(p->num_heads * p->head_dim));
    for (int64_t t = 0; t < context; t++) {
        const float *v = slot_row(p, p->v_pool, s->slots[t], s->widened);
        for (int64_t h = 0; h < p->num_heads; h++) {
            const float *vh = v + (h / p->group) * p->head_dim;
            const float weight = s->scores[h * context + t];
            float *oh = out + h * p->head_dim;
#pragma omp simd
            for (int64_t d = 0; d < p->head_dim; d++) oh[d] += weight * vh[d];
        }
    }
    for (int64_t h = 0; h < p->num_heads; h++) {
        float *oh = out + h * p->head_dim;
        for (int64_t d = 0; d < p->head_dim; d++) oh[d] *= s->inverse_sums[h];
    }
}

/* One sequence; returns -1 if its scratch cannot be allocated. */
static int attend(const Pool *p, const float *q, const int64_t *table, int64_t context,
                  float *out) {
    Scratch s = {
        .scores = malloc(sizeof(float) * (size_t)(p->num_heads * (context + 1))),
        .widened = malloc(sizeof(float) * (size_t)p->slot_stride),
        .slots = malloc(sizeof(int64_t) * (size_t)context),
    };
    int status = -1;
    if (s.scores != NULL && s.widened != NULL && s.slots != NULL) {
        s.inverse_sums = s.scores + p->num_heads * context;
        for (int64_t t = 0, block = 0; t < context; block++)
            for (int64_t offset = 0; offset < p->block_size && t < context; offset++, t++)
                s.slots[t] = table[block] * p->block_size + offset;
        score(p, q, context, &s);
        softmax(p, context, &s);
        weigh_values(p, context, &s, out);
        status = 0;
    }
    free(s.scores);
    free(s.widened);
    free(s.slots);
    return status;
}

int paged_decode_attention(const float *q, const void *k_pool, const void *v_pool,
                           const int64_t *block_tables, const int64_t *context_lens,
                           float *out, int64_t num_seqs, int64_t max_blocks, int64_t num_heads,
                           int64_t num_kv_heads, int64_t head_dim, int64_t block_size,
                           float scale, int num_threads, int kv_bf16) {
    const Pool pool = {
        .k_pool = k_pool,
        .v_pool = v_pool,
        .kv_bf16 = kv_bf16,
        .num_heads = num_heads,
        .group = num_heads / num_kv_heads,
        .head_dim = head_dim,
        .slot_stride = num_kv_heads * head_dim,
        .block_size = block_size,
        .scale = scale,
    };
    int failed = 0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads) reduction(| : failed)
    for (int64_t s = 0; s < num_seqs; s++) {
        const int64_t offset = s * num_heads * head_dim;
        if (attend(&pool, q + offset, block_tables + s * max_blocks, context_lens[s],
                   out + offset) != 0)
            failed = 1;
    }
    return failed ? -1 : 0;
}
