// CPU paged attention: q/k norm and RoPE per token, k/v written through the block table, then
// causal GQA attention over each request's cached keys.
//
// Every key, new or old, is read back from the cache after it is written, so a token's result
// does not depend on whether its keys arrived in this iteration or an earlier one (chunked
// prefill on or off). Queries stay float32.
//
// Two ways to attend, chosen per request from its own new_len (never from the rest of the batch,
// so mixing requests does not change a request's numbers):
//   - few query rows (decode): vectorized loops over contiguous head_dim rows, each key row
//     converted once and dotted with every query head of the group;
//   - many rows (prefill): flash-attention style tiles with online softmax, Q·Kᵀ and P·V as sgemm.
#include "attention/attention.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_common.h"
#include "quantization/quantize.h"

namespace trtllm::kernels {

std::vector<float> rope_inv_freq(int head_dim, const RopeParams& rope) {
    if (head_dim <= 0 || head_dim % 2 != 0) {
        throw std::invalid_argument("rope_inv_freq: head_dim must be positive and even, got " +
                                    std::to_string(head_dim));
    }
    if (!(rope.theta > 0.0f)) throw std::invalid_argument("rope_inv_freq: theta must be > 0");
    if (rope.scaling != RopeScaling::kNone && !(rope.factor > 0.0f)) {
        throw std::invalid_argument("rope_inv_freq: scaling factor must be > 0");
    }
    // Every step below is one float32 operation in the order transformers' torch code performs
    // it (modeling_rope_utils: _compute_*_parameters), so fp32 logits can match bit for bit.
    const int half = head_dim / 2;
    std::vector<float> inv(static_cast<size_t>(half));
    for (int i = 0; i < half; ++i) {
        const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
        inv[static_cast<size_t>(i)] = 1.0f / std::pow(rope.theta, exponent);
    }
    if (rope.scaling == RopeScaling::kLinear) {
        for (float& f : inv) f /= rope.factor;
    } else if (rope.scaling == RopeScaling::kLlama3) {
        if (!(rope.high_freq_factor > rope.low_freq_factor) || !(rope.low_freq_factor > 0.0f) ||
            rope.original_max_position_embeddings <= 0) {
            throw std::invalid_argument(
                "rope_inv_freq: llama3 needs high_freq_factor > low_freq_factor > 0 and "
                "original_max_position_embeddings > 0");
        }
        const double old_context_len = rope.original_max_position_embeddings;
        // Python floats (float64) in transformers, compared with float32 tensors as float32.
        const auto low_freq_wavelen = static_cast<float>(old_context_len / rope.low_freq_factor);
        const auto high_freq_wavelen = static_cast<float>(old_context_len / rope.high_freq_factor);
        const auto two_pi = static_cast<float>(2.0 * 3.14159265358979323846);
        const auto smooth_den = static_cast<float>(double{rope.high_freq_factor} - double{rope.low_freq_factor});
        for (float& f : inv) {
            // `2 * math.pi / inv_freq` is Tensor.__rtruediv__: reciprocal, then multiply.
            const float wavelen = (1.0f / f) * two_pi;
            const float scaled = wavelen > low_freq_wavelen ? f / rope.factor : f;
            const float smooth =
                ((1.0f / wavelen) * static_cast<float>(old_context_len) - rope.low_freq_factor) / smooth_den;
            const float a = (1.0f - smooth) * scaled;
            const float smoothed = a / rope.factor + smooth * scaled;
            const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
            f = medium ? smoothed : scaled;
        }
    }
    return inv;
}

namespace {

// Decode-like requests (new_len * group query rows at most this) take the loop path.
constexpr int64_t kLoopPathMaxRows = 16;
// Query rows and keys per tile on the sgemm path: Q·Kᵀ is kTileRows x kKeyTile x head_dim.
constexpr int64_t kTileRows = 128;
constexpr int64_t kKeyTile = 256;

// Everything a task needs, resolved once per call.
struct Ctx {
    DType dtype;
    size_t esz;                  // bytes of a cache element
    const float* kv_scale;       // FP8 cache: its dequantization scale; nullptr: activation-dtype cache
    OutputQuant kv_quant;        // FP8 cache: how rows are written
    int64_t h, h_kv, d, group, stride, num_items;
    float scale;
    const PagedBatch* batch;
    const int64_t* item_start;   // [R] first item (flattened request token) of each request
    const float* qf;             // [h_kv][num_items][group][d]: normed, rotated queries
    char* kv;
    void* out;

    // Row of k (which = 0) or v (which = 1) of kv head `kh` at position `pos` of request r.
    char* kv_row(int64_t r, int64_t pos, int which, int64_t kh) const {
        const PagedBatch& b = *batch;
        const int64_t block = b.block_table[r * b.max_blocks_per_seq + pos / b.tokens_per_block];
        const int64_t index = ((block * 2 + which) * h_kv + kh) * b.tokens_per_block + pos % b.tokens_per_block;
        return kv + index * d * static_cast<int64_t>(esz);
    }

    // The cached row as float32: in place for a float32 cache, else converted into `buf`.
    const float* kv_row_float(int64_t r, int64_t pos, int which, int64_t kh, float* buf) const {
        const char* row = kv_row(r, pos, which, kh);
        if (dtype == DType::kFloat32 && kv_scale == nullptr) return reinterpret_cast<const float*>(row);
        load_kv(row, buf);
        return buf;
    }

    void load_kv(const char* row, float* dst) const {
        if (kv_scale == nullptr) {
            cpu::load_row(row, dtype, d, dst);
            return;
        }
        load_quantized_row(row, DType::kFloat8E4M3, d, dst);
        for (int64_t x = 0; x < d; ++x) dst[x] *= *kv_scale;
    }

    void store_kv(const float* src, char* row) const {
        if (kv_scale == nullptr) {
            cpu::store_row(src, dtype, d, row);
        } else {
            quantize_row(src, d, 0, kv_quant, row);
        }
    }

    // Start loading the k or v rows of kv head kh in the block after the one holding `pos`:
    // blocks are scattered in the pool, so the hardware prefetcher cannot see the next one coming.
    void prefetch_next_block(int64_t r, int64_t pos, int which, int64_t kh, int64_t end) const {
        const int64_t next = (pos / batch->tokens_per_block + 1) * batch->tokens_per_block;
        if (next >= end) return;
        const char* p = kv_row(r, next, which, kh);
        const int64_t bytes = std::min(end - next, int64_t{batch->tokens_per_block}) * d * static_cast<int64_t>(esz);
        for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off);
    }

    const float* queries(int64_t r, int64_t kh, int64_t i0) const {
        return qf + ((kh * num_items + item_start[r] + i0) * group) * d;
    }

    // out row of query head `kh * group + jj` for token i of request r = acc / denom, rounded once.
    void write_out(int64_t r, int64_t i, int64_t kh, int64_t jj, float* acc, float denom) const {
        const float inv = 1.0f / denom;
        for (int64_t x = 0; x < d; ++x) acc[x] *= inv;
        const int64_t t = batch->token_start[r] + i;
        cpu::store_row(acc, dtype, d, cpu::elem_ptr(out, dtype, t * h * d + (kh * group + jj) * d));
    }
};

struct Task {
    int64_t r, kh, i0, i1;  // request, kv head, its new tokens [i0, i1)
    bool tiled;
};

inline void rotate_half(float* x, const float* cos, const float* sin, int64_t half) {
    for (int64_t j = 0; j < half; ++j) {
        const float x1 = x[j], x2 = x[j + half];
        x[j] = x1 * cos[j] - x2 * sin[j];
        x[j + half] = x2 * cos[j] + x1 * sin[j];
    }
}

// acc[0..d) += sum over j < n of w[j] * rows[j][0..d). Blocks of kLanes outputs stay in
// registers across all n rows, so the accumulator is loaded and stored once per key tile, not
// once per key.
inline void accumulate_rows(float* acc, const float* w, const float* const* rows, int64_t n, int64_t d) {
    int64_t x0 = 0;
    for (; x0 + cpu::kLanes <= d; x0 += cpu::kLanes) {
        float t[cpu::kLanes];
        for (int j = 0; j < cpu::kLanes; ++j) t[j] = acc[x0 + j];
        for (int64_t p = 0; p < n; ++p) {
            const float wp = w[p];
            const float* v = rows[p] + x0;
            for (int j = 0; j < cpu::kLanes; ++j) t[j] += wp * v[j];
        }
        for (int j = 0; j < cpu::kLanes; ++j) acc[x0 + j] = t[j];
    }
    for (int64_t p = 0; p < n; ++p) {
        for (int64_t x = x0; x < d; ++x) acc[x] += w[p] * rows[p][x];
    }
}

// Loop path (few query rows): all scores of the task's rows, softmax, then the weighted sum of
// v over tiles of keys. Each k / v row is read (and converted) once for all the rows.
TRTLLM_CPU_MULTIVERSION void attend_rows(const Ctx& c, const Task& task) {
    constexpr int64_t kKeys = 32;  // v rows per tile: kKeys * head_dim floats stay in L1
    const int64_t past = c.batch->past_len[task.r];
    const int64_t n_tok = task.i1 - task.i0, nq = n_tok * c.group, nk = past + task.i1, d = c.d;
    const float* q = c.queries(task.r, task.kh, task.i0);
    thread_local std::vector<float> s_buf, acc_buf, row_buf, denom_buf;
    float* s = cpu::grow(s_buf, nq * nk);
    float* acc = cpu::grow(acc_buf, nq * d);
    float* rows = cpu::grow(row_buf, kKeys * d);
    float* denom = cpu::grow(denom_buf, nq);

    for (int64_t p = 0; p < nk; ++p) {
        if (p % c.batch->tokens_per_block == 0) c.prefetch_next_block(task.r, p, 0, task.kh, nk);
        const float* k = c.kv_row_float(task.r, p, 0, task.kh, rows);
        // Key p is visible to the task's tokens from this one on (causal).
        const int64_t first_row = std::max<int64_t>(0, p - past - task.i0) * c.group;
        for (int64_t qr = first_row; qr < nq; ++qr) s[qr * nk + p] = cpu::dot(q + qr * d, k, d) * c.scale;
    }
    for (int64_t qr = 0; qr < nq; ++qr) {
        float* sr = s + qr * nk;
        const int64_t valid = past + task.i0 + qr / c.group + 1;
        const float mx = *std::max_element(sr, sr + valid);
        float sum = 0.0f;
        for (int64_t p = 0; p < valid; ++p) {
            sr[p] = std::exp(sr[p] - mx);
            sum += sr[p];
        }
        std::fill(sr + valid, sr + nk, 0.0f);  // masked keys weigh nothing in the v sums
        denom[qr] = sum;
    }
    std::fill(acc, acc + nq * d, 0.0f);
    const float* v_rows[kKeys];
    for (int64_t p0 = 0; p0 < nk; p0 += kKeys) {
        const int64_t n = std::min(kKeys, nk - p0);
        for (int64_t j = 0; j < n; ++j) {
            if ((p0 + j) % c.batch->tokens_per_block == 0) c.prefetch_next_block(task.r, p0 + j, 1, task.kh, nk);
            v_rows[j] = c.kv_row_float(task.r, p0 + j, 1, task.kh, rows + j * d);
        }
        for (int64_t qr = 0; qr < nq; ++qr) accumulate_rows(acc + qr * d, s + qr * nk + p0, v_rows, n, d);
    }
    for (int64_t qr = 0; qr < nq; ++qr) {
        c.write_out(task.r, task.i0 + qr / c.group, task.kh, qr % c.group, acc + qr * d, denom[qr]);
    }
}

// sgemm path: one tile of query rows against key tiles of kKeyTile positions, online softmax
// (FlashAttention-2's running max and denominator), so scratch stays bounded for long contexts.
TRTLLM_CPU_MULTIVERSION void attend_tiled(const Ctx& c, const Task& task) {
    const int64_t past = c.batch->past_len[task.r];
    const int64_t n_tok = task.i1 - task.i0, nq = n_tok * c.group, kmax = past + task.i1, d = c.d;
    const float* q = c.queries(task.r, task.kh, task.i0);
    thread_local std::vector<float> s_buf, o_buf, m_buf, l_buf, k_buf, v_buf;
    float* s = cpu::grow(s_buf, nq * kKeyTile);
    float* o = cpu::grow(o_buf, nq * d);
    float* m = cpu::grow(m_buf, nq);
    float* l = cpu::grow(l_buf, nq);
    float* kt = cpu::grow(k_buf, kKeyTile * d);
    float* vt = cpu::grow(v_buf, kKeyTile * d);
    std::fill(o, o + nq * d, 0.0f);
    std::fill(m, m + nq, -std::numeric_limits<float>::infinity());
    std::fill(l, l + nq, 0.0f);

    for (int64_t p0 = 0; p0 < kmax; p0 += kKeyTile) {
        const int64_t nk = std::min(kKeyTile, kmax - p0);
        for (int64_t j = 0; j < nk; ++j) {
            c.load_kv(c.kv_row(task.r, p0 + j, 0, task.kh), kt + j * d);
            c.load_kv(c.kv_row(task.r, p0 + j, 1, task.kh), vt + j * d);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(nq), static_cast<int>(nk),
                    static_cast<int>(d), c.scale, q, static_cast<int>(d), kt, static_cast<int>(d), 0.0f, s,
                    static_cast<int>(nk));
        for (int64_t qr = 0; qr < nq; ++qr) {
            float* sr = s + qr * nk;
            const int64_t pos = past + task.i0 + qr / c.group;
            const int64_t valid = std::clamp<int64_t>(pos - p0 + 1, 0, nk);
            if (valid == 0) {
                std::fill(sr, sr + nk, 0.0f);
                continue;
            }
            const float m_new = std::max(m[qr], *std::max_element(sr, sr + valid));
            const float correction = std::exp(m[qr] - m_new);
            float sum = 0.0f;
            for (int64_t j = 0; j < valid; ++j) {
                sr[j] = std::exp(sr[j] - m_new);
                sum += sr[j];
            }
            std::fill(sr + valid, sr + nk, 0.0f);
            l[qr] = l[qr] * correction + sum;
            m[qr] = m_new;
            if (correction != 1.0f) {
                float* orow = o + qr * d;
                for (int64_t x = 0; x < d; ++x) orow[x] *= correction;
            }
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(nq), static_cast<int>(d),
                    static_cast<int>(nk), 1.0f, s, static_cast<int>(nk), vt, static_cast<int>(d), 1.0f, o,
                    static_cast<int>(d));
    }
    for (int64_t qr = 0; qr < nq; ++qr) {
        c.write_out(task.r, task.i0 + qr / c.group, task.kh, qr % c.group, o + qr * d, l[qr]);
    }
}

// OpenBLAS's OpenMP build runs a call made inside our parallel region on the calling thread
// alone; its pthread build would run every such call on its own pool of all cores, from each of
// our threads at once. Pin that build to one thread while our threads own the cores.
class SingleThreadedBlas {
public:
    SingleThreadedBlas() : saved_(openblas_get_parallel() == 1 ? openblas_get_num_threads() : 1) {
        if (saved_ > 1) openblas_set_num_threads(1);
    }
    ~SingleThreadedBlas() {
        if (saved_ > 1) openblas_set_num_threads(saved_);
    }
    SingleThreadedBlas(const SingleThreadedBlas&) = delete;
    SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

private:
    int saved_;
};

}  // namespace

void attention_cpu(const void* qkv, void* out, DType dtype, void* kv_layer, const PagedBatch& batch,
                   const AttentionParams& params) {
    cpu::check_float_dtype(dtype);
    const int64_t h = params.num_heads, h_kv = params.num_kv_heads, d = params.head_dim;
    if (h <= 0 || h_kv <= 0 || d <= 0 || h % h_kv != 0) {
        throw std::invalid_argument("attention: need num_heads > 0 divisible by num_kv_heads > 0 and head_dim > 0, got " +
                                    std::to_string(h) + ", " + std::to_string(h_kv) + ", " + std::to_string(d));
    }
    if (params.rope_inv_freq != nullptr && d % 2 != 0) {
        throw std::invalid_argument("attention: rope needs an even head_dim, got " + std::to_string(d));
    }
    if ((params.q_norm == nullptr) != (params.k_norm == nullptr)) {
        throw std::invalid_argument("attention: q_norm and k_norm come together");
    }
    if (batch.num_requests < 0 || batch.tokens_per_block <= 0 || batch.max_blocks_per_seq <= 0) {
        throw std::invalid_argument("attention: need num_requests >= 0, tokens_per_block > 0, max_blocks_per_seq > 0");
    }
    const int64_t num_requests = batch.num_requests;
    std::vector<int64_t> item_start(static_cast<size_t>(num_requests) + 1, 0);
    for (int64_t r = 0; r < num_requests; ++r) {
        const int64_t past = batch.past_len[r], n = batch.new_len[r];
        if (past < 0 || n < 1 || batch.token_start[r] < 0 ||
            (past + n - 1) / batch.tokens_per_block >= batch.max_blocks_per_seq) {
            throw std::invalid_argument("attention: request " + std::to_string(r) + " has past_len " +
                                        std::to_string(past) + ", new_len " + std::to_string(n) + ", token_start " +
                                        std::to_string(batch.token_start[r]) + " (need past_len >= 0, new_len >= 1, " +
                                        "positions within max_blocks_per_seq * tokens_per_block)");
        }
        item_start[static_cast<size_t>(r) + 1] = item_start[static_cast<size_t>(r)] + n;
    }
    const int64_t num_items = item_start.back();
    if (num_items == 0) return;

    Ctx c{};
    c.dtype = dtype;
    c.kv_scale = params.kv_scale;
    c.esz = params.kv_scale != nullptr ? 1 : dtype_size(dtype);
    if (params.kv_scale != nullptr) c.kv_quant = make_output_quant(DType::kFloat8E4M3, params.kv_scale, 1);
    c.h = h;
    c.h_kv = h_kv;
    c.d = d;
    c.group = h / h_kv;
    c.stride = (h + 2 * h_kv) * d;
    c.num_items = num_items;
    c.scale = 1.0f / std::sqrt(static_cast<float>(d));
    c.batch = &batch;
    c.item_start = item_start.data();
    c.kv = static_cast<char*>(kv_layer);
    c.out = out;
    thread_local std::vector<float> q_buf;
    float* qf = cpu::grow(q_buf, num_items * h * d);
    c.qf = qf;

    std::vector<float> q_norm, k_norm;
    if (params.q_norm != nullptr) {
        q_norm.resize(static_cast<size_t>(d));
        k_norm.resize(static_cast<size_t>(d));
        cpu::load_row(params.q_norm, dtype, d, q_norm.data());
        cpu::load_row(params.k_norm, dtype, d, k_norm.data());
    }
    std::vector<int64_t> item_request(static_cast<size_t>(num_items));
    for (int64_t r = 0; r < num_requests; ++r) {
        std::fill(item_request.begin() + item_start[static_cast<size_t>(r)],
                  item_request.begin() + item_start[static_cast<size_t>(r) + 1], r);
    }

    // 1. Per token: q/k norm, rope; q to scratch, k and v into the cache.
    const int64_t half = d / 2;
#pragma omp parallel if (num_items * c.stride > cpu::kParallelMinElements)
    {
        thread_local std::vector<float> row_buf, trig_buf;
        float* row = cpu::grow(row_buf, c.stride);
        float* cos = cpu::grow(trig_buf, d);
        float* sin = cos + half;
#pragma omp for schedule(static)
        for (int64_t item = 0; item < num_items; ++item) {
            const int64_t r = item_request[static_cast<size_t>(item)];
            const int64_t i = item - item_start[static_cast<size_t>(r)];
            const int64_t pos = batch.past_len[r] + i;
            cpu::load_row(cpu::elem_ptr(qkv, dtype, (batch.token_start[r] + i) * c.stride), dtype, c.stride, row);
            if (!q_norm.empty()) {
                for (int64_t hd = 0; hd < h + h_kv; ++hd) {
                    cpu::rms_norm_inplace(row + hd * d, hd < h ? q_norm.data() : k_norm.data(), d, params.qk_norm_eps);
                }
            }
            if (params.rope_inv_freq != nullptr) {
                // As Hugging Face: the angle is one float32 product, then cos/sin of it.
                for (int64_t j = 0; j < half; ++j) {
                    const float angle = static_cast<float>(pos) * params.rope_inv_freq[j];
                    cos[j] = std::cos(angle);
                    sin[j] = std::sin(angle);
                }
                for (int64_t hd = 0; hd < h + h_kv; ++hd) rotate_half(row + hd * d, cos, sin, half);
            }
            for (int64_t j = 0; j < h; ++j) {
                float* dst = qf + (((j / c.group) * num_items + item) * c.group + j % c.group) * d;
                std::memcpy(dst, row + j * d, static_cast<size_t>(d) * sizeof(float));
            }
            for (int64_t kh = 0; kh < h_kv; ++kh) {
                c.store_kv(row + (h + kh) * d, c.kv_row(r, pos, 0, kh));
                c.store_kv(row + (h + h_kv + kh) * d, c.kv_row(r, pos, 1, kh));
            }
        }
    }

    // 2. Attend. Tasks are (request, kv head, tile of its new tokens), handed out largest first
    // so a long prefill tile does not start last and leave the other threads idle.
    std::vector<Task> tasks;
    bool any_tiled = false;
    for (int64_t r = 0; r < num_requests; ++r) {
        const int64_t n = batch.new_len[r];
        const bool tiled = n * c.group > kLoopPathMaxRows;
        const int64_t tile_tokens = tiled ? std::max<int64_t>(1, kTileRows / c.group) : n;
        any_tiled = any_tiled || tiled;
        for (int64_t kh = 0; kh < h_kv; ++kh) {
            for (int64_t i0 = 0; i0 < n; i0 += tile_tokens) tasks.push_back({r, kh, i0, std::min(n, i0 + tile_tokens), tiled});
        }
    }
    auto cost = [&](const Task& t) { return (t.i1 - t.i0) * (batch.past_len[t.r] + t.i1); };
    std::stable_sort(tasks.begin(), tasks.end(), [&](const Task& a, const Task& b) { return cost(a) > cost(b); });
    std::optional<SingleThreadedBlas> blas_guard;
    if (any_tiled) blas_guard.emplace();
    const auto num_tasks = static_cast<int64_t>(tasks.size());
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t t = 0; t < num_tasks; ++t) {
        const Task& task = tasks[static_cast<size_t>(t)];
        if (task.tiled) {
            attend_tiled(c, task);
        } else {
            attend_rows(c, task);
        }
    }
}

}  // namespace trtllm::kernels
