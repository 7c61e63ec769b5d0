/* Decode attention straight from the paged KV pool: one query token per sequence.
 *
 * The pure-torch path first gathers each sequence's keys and values into a workspace and
 * then runs scaled_dot_product_attention on it: the context crosses memory three times
 * (read from the pool, written, read back). Here every key and value is read once, from
 * its block, which is what decode attention is bound by.
 *
 * Layouts (contiguous; q and out float32, the pools float32 or bfloat16 by `kv_bf16`):
 *   q, out        [num_seqs, num_heads, head_dim]
 *   k_pool, v_pool [num_slots, num_kv_heads, head_dim], slot = block * block_size + offset
 *   block_tables  [num_seqs, max_blocks] int64, context_lens [num_seqs] int64
 * Query head h reads key/value head h / (num_heads / num_kv_heads) (grouped-query).
 * Softmax is the usual two passes (max, then exp and sum); all arithmetic is float32
 * (a bfloat16 slot is widened into a small buffer first, as torch does for bfloat16).
 * Built by inference/models/native.py; sequences are spread over OpenMP threads.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* One slot's keys or values as float32: in place, or widened from bfloat16 into `buffer`. */
static const float *slot_of(const void *pool, int kv_bf16, int64_t slot, int64_t stride,
                            float *buffer) {
    if (!kv_bf16) return (const float *)pool + slot * stride;
    const uint16_t *halves = (const uint16_t *)pool + slot * stride;
    uint32_t *bits = (uint32_t *)buffer;
    for (int64_t i = 0; i < stride; i++) bits[i] = (uint32_t)halves[i] << 16;
    return buffer;
}

int paged_decode_attention(const float *q, const void *k_pool, const void *v_pool,
                           const int64_t *block_tables, const int64_t *context_lens,
                           float *out, int64_t num_seqs, int64_t max_blocks, int64_t num_heads,
                           int64_t num_kv_heads, int64_t head_dim, int64_t block_size,
                           float scale, int num_threads, int kv_bf16) {
    const int64_t group = num_heads / num_kv_heads;
    const int64_t slot_stride = num_kv_heads * head_dim;
    int failed = 0;

#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads)
    for (int64_t s = 0; s < num_seqs; s++) {
        const int64_t context = context_lens[s];
        const int64_t *table = block_tables + s * max_blocks;
        const float *qs = q + s * num_heads * head_dim;
        float *os = out + s * num_heads * head_dim;
        float *scores = malloc(sizeof(float) * (size_t)(num_heads * context + num_heads));
        int64_t *slots = malloc(sizeof(int64_t) * (size_t)context);
        float *widened = malloc(sizeof(float) * (size_t)slot_stride);
        if (scores == NULL || slots == NULL || widened == NULL) {
            free(scores);
            free(slots);
            free(widened);
#pragma omp atomic write
            failed = 1;
            continue;
        }
        float *inverse_sums = scores + num_heads * context;
        for (int64_t t = 0, block = 0; t < context; block++)
            for (int64_t offset = 0; offset < block_size && t < context; offset++, t++)
                slots[t] = table[block] * block_size + offset;

        /* scores[h, t] = q_h . k_t * scale, reading each key slot once for all heads */
        for (int64_t t = 0; t < context; t++) {
            const float *k = slot_of(k_pool, kv_bf16, slots[t], slot_stride, widened);
            for (int64_t h = 0; h < num_heads; h++) {
                const float *kh = k + (h / group) * head_dim;
                const float *qh = qs + h * head_dim;
                float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
                for (int64_t d = 0; d < head_dim; d++) dot += qh[d] * kh[d];
                scores[h * context + t] = dot * scale;
            }
        }

        /* softmax over t, per head; the normalisation is applied at the end */
        for (int64_t h = 0; h < num_heads; h++) {
            float *row = scores + h * context;
            float top = -INFINITY;
            for (int64_t t = 0; t < context; t++) top = row[t] > top ? row[t] : top;
            float sum = 0.0f;
            for (int64_t t = 0; t < context; t++) {
                row[t] = expf(row[t] - top);
                sum += row[t];
            }
            inverse_sums[h] = 1.0f / sum;
        }

        /* out_h = sum_t p[h, t] v_t, again one pass over the value slots */
        memset(os, 0, sizeof(float) * (size_t)(num_heads * head_dim));
        for (int64_t t = 0; t < context; t++) {
            const float *v = slot_of(v_pool, kv_bf16, slots[t], slot_stride, widened);
            for (int64_t h = 0; h < num_heads; h++) {
                const float *vh = v + (h / group) * head_dim;
                const float p = scores[h * context + t];
                float *oh = os + h * head_dim;
#pragma omp simd
                for (int64_t d = 0; d < head_dim; d++) oh[d] += p * vh[d];
            }
        }
        for (int64_t h = 0; h < num_heads; h++) {
            float *oh = os + h * head_dim;
            for (int64_t d = 0; d < head_dim; d++) oh[d] *= inverse_sums[h];
        }
        free(scores);
        free(slots);
        free(widened);
    }
    return failed ? -1 : 0;
}
