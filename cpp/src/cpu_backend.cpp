// The CPU backend: walks the op list over one aligned arena, calling the plugins' CPU kernels.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <optional>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "attention/attention.h"
#include "collective/collective.h"
#include "elementwise/elementwise.h"
#include "embedding/embedding.h"
#include "gemm/gemm.h"
#include "gemm/quant_gemm.h"
#include "norm/norm.h"
#include "quantization/quantize.h"
#include "trtllm/backend.h"

namespace trtllm {
namespace {

struct FreeDeleter {
    void operator()(void* p) const noexcept { std::free(p); }
};

// Not zeroed: every kernel writes before it reads, and untouched pages of a large KV pool then
// cost no memory until a block is first used.
std::unique_ptr<std::byte, FreeDeleter> aligned_bytes(int64_t bytes) {
    const size_t size = static_cast<size_t>((std::max<int64_t>(bytes, 1) + 255) / 256 * 256);
    void* p = std::aligned_alloc(256, size);
    if (p == nullptr) throw std::bad_alloc();
    return std::unique_ptr<std::byte, FreeDeleter>(static_cast<std::byte*>(p));
}

class CpuBackend final : public Backend {
public:
    CpuBackend(std::shared_ptr<const Model> model, int64_t num_kv_blocks, int tokens_per_block,
               std::shared_ptr<Communicator> comm)
        : model_(std::move(model)), comm_(std::move(comm)), tokens_per_block_(tokens_per_block) {
        const ModelInfo& info = model_->info();
        if (info.tp_size > 1 && (!comm_ || comm_->size() != info.tp_size)) {
            throw std::invalid_argument("engine is sharded for tp_size " + std::to_string(info.tp_size) +
                                        ": run one process per rank under mpirun");
        }
        arena_ = aligned_bytes(model_->arena_bytes());
        kv_layer_bytes_ = num_kv_blocks * kernels::kv_block_bytes(info.num_kv_heads, tokens_per_block, info.head_dim,
                                                                  info.kv_cache_dtype);
        kv_pool_ = aligned_bytes(kv_layer_bytes_ * info.num_layers);
        for (const Op& op : model_->ops()) {
            prepared_.emplace_back();
            Prepared& p = prepared_.back();
            if (op.kind == OpKind::kLinear) {
                const WeightView& w = *op.weight("weight");
                const WeightView* b = op.weight("bias");
                p.gemm = kernels::prepare_gemm_weight_cpu(w.data, w.dtype, w.shape[0], w.shape[1], b ? b->data : nullptr);
            }
            if (op.kind == OpKind::kAttention && op.has_rope) {
                p.inv_freq = kernels::rope_inv_freq(op.head_dim, op.rope);
            }
            prepare_quantized(op, p);
        }
    }

    ~CpuBackend() override {
        if (!profile_) return;
        for (const auto& [kind, seconds] : op_seconds_) std::fprintf(stderr, "[trtllm profile] %-18s %.3f s\n", op_kind_name(static_cast<OpKind>(kind)), seconds);
    }

    int64_t kv_cache_bytes() const override { return kv_layer_bytes_ * model_->info().num_layers; }

    const float* forward(const StepInput& step) override {
        const ModelInfo& info = model_->info();
        const int64_t num_tokens = step.num_tokens();
        const int64_t num_rows = static_cast<int64_t>(step.output_rows.size());
        if (num_tokens < 1 || num_tokens > info.max_num_tokens || num_rows > info.max_output_rows) {
            throw std::invalid_argument("batch of " + std::to_string(num_tokens) + " tokens / " +
                                        std::to_string(num_rows) + " output rows exceeds the engine's limits");
        }
        std::memcpy(ptr(model_->input_ids()), step.input_ids.data(), num_tokens * sizeof(int32_t));
        std::memcpy(ptr(model_->position_ids()), step.position_ids.data(), num_tokens * sizeof(int32_t));
        kernels::PagedBatch batch;
        batch.num_requests = step.num_requests();
        batch.past_len = step.past_len.data();
        batch.new_len = step.new_len.data();
        batch.token_start = step.token_start.data();
        batch.block_table = step.block_table.data();
        batch.max_blocks_per_seq = step.max_blocks_per_seq;
        batch.tokens_per_block = tokens_per_block_;

        for (size_t i = 0; i < model_->ops().size(); ++i) {
            const auto start = profile_ ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
            run(model_->ops()[i], prepared_[i], step, batch, num_tokens, num_rows);
            if (profile_) {
                op_seconds_[static_cast<int>(model_->ops()[i].kind)] +=
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            }
        }
        return static_cast<const float*>(ptr(model_->logits()));
    }

private:
    struct Prepared {
        kernels::GemmWeightCpu gemm;
        std::vector<float> inv_freq;
        kernels::QuantGemmWeightCpu quant_gemm;
        std::optional<kernels::OutputQuant> out_quant;   // the op's first output is quantized
        const kernels::OutputQuant* quant() const { return out_quant ? &*out_quant : nullptr; }
    };

    static const WeightView& scale_weight(const Op& op, const char* role, int64_t count) {
        const WeightView* w = op.weight(role);
        if (w == nullptr || w->dtype != DType::kFloat32 || (w->numel() != 1 && w->numel() != count)) {
            throw std::invalid_argument(std::string("quantized op needs a float32 '") + role + "' of 1 or " +
                                        std::to_string(count) + " elements");
        }
        return *w;
    }

    // Quantized GEMM weights and quantized outputs (op set v2), resolved once at load.
    static void prepare_quantized(const Op& op, Prepared& p) {
        const Slot& out = op.outputs.at(0);
        if (out.dtype == DType::kFloat8E4M3 || out.dtype == DType::kInt8) {
            const WeightView& s = scale_weight(op, "out_scale", out.cols);
            p.out_quant = kernels::make_output_quant(out.dtype, static_cast<const float*>(s.data), s.numel());
        }
        const WeightView* b = op.weight("bias");
        switch (op.kind) {
            case OpKind::kFp8Linear:
            case OpKind::kInt8Linear: {
                const WeightView& w = *op.weight("weight");
                const int64_t n = w.shape.at(0), k = w.shape.at(1);
                const float input_scale = *static_cast<const float*>(scale_weight(op, "input_scale", 1).data);
                const WeightView& ws = scale_weight(op, "weight_scale", op.kind == OpKind::kFp8Linear ? 1 : n);
                if (op.kind == OpKind::kFp8Linear) {
                    p.quant_gemm = kernels::prepare_fp8_gemm_weight_cpu(w.data, n, k, *static_cast<const float*>(ws.data),
                                                                        input_scale, b ? b->data : nullptr,
                                                                        b ? b->dtype : DType::kFloat32);
                } else {
                    if (ws.numel() != n) throw std::invalid_argument("int8_linear needs a per-channel weight_scale");
                    p.quant_gemm = kernels::prepare_int8_gemm_weight_cpu(w.data, n, k, static_cast<const float*>(ws.data),
                                                                         input_scale, b ? b->data : nullptr,
                                                                         b ? b->dtype : DType::kFloat32);
                }
                break;
            }
            case OpKind::kWeightOnlyLinear: {
                if (op.weight_layout != "row_major") {
                    throw std::invalid_argument("weight_only_linear weight_layout '" + op.weight_layout +
                                                "' is not runnable on the CPU backend (needs row_major: build the engine "
                                                "with --target cpu)");
                }
                const WeightView& w = *op.weight("weight");
                const int64_t n = w.shape.at(0), k = w.shape.at(1) * (op.weight_bits == 4 ? 2 : 1);
                const WeightView& s = *op.weight("weight_scale");
                const WeightView* pre = op.weight("pre_quant_scale");
                if (s.numel() != n * (k / std::max<int64_t>(op.group_size, 1))) {
                    throw std::invalid_argument("weight_only_linear: weight_scale does not match the weight and group_size");
                }
                p.quant_gemm = kernels::prepare_weight_only_gemm_weight_cpu(
                    w.data, op.weight_bits, n, k, s.data, op.group_size, s.dtype, pre ? pre->data : nullptr,
                    b ? b->data : nullptr);
                break;
            }
            default:
                break;
        }
    }

    void* ptr(const Slot& s) { return arena_.get() + s.offset; }

    void run(const Op& op, const Prepared& p, const StepInput& step, const kernels::PagedBatch& batch,
             int64_t num_tokens, int64_t num_rows) {
        const Slot& in = op.inputs.at(0);
        const Slot& out = op.outputs.at(0);
        const int64_t rows = in.row_dim == RowDim::kNumTokens ? num_tokens : num_rows;
        switch (op.kind) {
            case OpKind::kEmbedding: {
                const WeightView& w = *op.weight("weight");
                if (out.dtype != w.dtype) throw std::invalid_argument("embedding output dtype differs from its table");
                kernels::embedding_cpu(static_cast<const int32_t*>(ptr(in)), w.data, ptr(out), w.dtype, rows, w.shape[1]);
                break;
            }
            case OpKind::kLinear:
                kernels::gemm_cpu(ptr(in), in.dtype, p.gemm, ptr(out), out.dtype, rows);
                break;
            case OpKind::kRmsNorm: {
                const WeightView& w = *op.weight("weight");
                kernels::rms_norm_cpu(ptr(in), w.data, ptr(out), in.dtype, rows, in.cols, w.shape[0], op.eps, p.quant());
                break;
            }
            case OpKind::kLayerNorm:
                kernels::layer_norm_cpu(ptr(in), op.weight("weight")->data, op.weight("bias")->data, ptr(out), in.dtype,
                                        rows, in.cols, op.eps, p.quant());
                break;
            case OpKind::kAddRmsNorm:
                kernels::add_rms_norm_cpu(ptr(in), ptr(op.inputs[1]), op.weight("weight")->data, ptr(out),
                                          ptr(op.outputs[1]), in.dtype, rows, in.cols, op.eps, p.quant());
                break;
            case OpKind::kAddLayerNorm:
                kernels::add_layer_norm_cpu(ptr(in), ptr(op.inputs[1]), op.weight("weight")->data,
                                            op.weight("bias")->data, ptr(out), ptr(op.outputs[1]), in.dtype, rows,
                                            in.cols, op.eps, p.quant());
                break;
            case OpKind::kAdd:
                kernels::add_cpu(ptr(in), ptr(op.inputs[1]), ptr(out), in.dtype, rows * in.cols);
                break;
            case OpKind::kSiluMul:
                kernels::silu_mul_cpu(ptr(in), ptr(out), in.dtype, rows, out.cols, p.quant());
                break;
            case OpKind::kGeluTanh:
                kernels::gelu_tanh_cpu(ptr(in), ptr(out), in.dtype, rows * in.cols, p.quant(), in.cols);
                break;
            case OpKind::kAttention: {
                kernels::AttentionParams params;
                params.num_heads = op.num_heads;
                params.num_kv_heads = op.num_kv_heads;
                params.head_dim = op.head_dim;
                params.rope_inv_freq = op.has_rope ? p.inv_freq.data() : nullptr;
                if (const WeightView* qn = op.weight("q_norm")) {
                    params.q_norm = qn->data;
                    params.k_norm = op.weight("k_norm")->data;
                    params.qk_norm_eps = op.qk_norm_eps;
                }
                if (const WeightView* kv = op.weight("kv_scale")) params.kv_scale = static_cast<const float*>(kv->data);
                void* kv_layer = kv_pool_.get() + kv_layer_bytes_ * op.layer_idx;
                kernels::attention_cpu(ptr(in), ptr(out), in.dtype, kv_layer, batch, params);
                break;
            }
            case OpKind::kAllReduce: {
                const int64_t count = rows * in.cols;
                if (ptr(in) != ptr(out)) std::memcpy(ptr(out), ptr(in), count * dtype_size(in.dtype));
                if (comm_) comm_->all_reduce_sum(ptr(out), out.dtype, count);
                if (const WeightView* b = op.weight("bias")) {
                    kernels::add_bias_cpu(ptr(out), b->data, out.dtype, rows, out.cols);
                }
                break;
            }
            case OpKind::kAllReduceAddRmsNorm: {
                // The sum over the ranks goes into the `sum` output, which the residual norm then updates in place.
                void* sum = ptr(op.outputs[1]);
                std::memcpy(sum, ptr(in), rows * in.cols * dtype_size(in.dtype));
                if (comm_) comm_->all_reduce_sum(sum, in.dtype, rows * in.cols);
                kernels::add_rms_norm_cpu(sum, ptr(op.inputs[1]), op.weight("weight")->data, ptr(out), sum, in.dtype,
                                          rows, in.cols, op.eps, p.quant());
                break;
            }
            case OpKind::kAllGather: {
                // Ranks' shards arrive concatenated per rank; logits want them per row.
                const int64_t count = rows * in.cols;
                const size_t elem = dtype_size(in.dtype);
                gather_scratch_.resize(static_cast<size_t>(count * op.tp_size) * elem);
                if (comm_) {
                    comm_->all_gather(ptr(in), gather_scratch_.data(), in.dtype, count);
                } else {
                    std::memcpy(gather_scratch_.data(), ptr(in), count * elem);
                }
                kernels::concat_shards_cpu(gather_scratch_.data(), ptr(out), elem, rows, in.cols, op.tp_size);
                break;
            }
            case OpKind::kQuantize:
                kernels::quantize_cpu(ptr(in), in.dtype, ptr(out), *p.quant(), rows, in.cols);
                break;
            case OpKind::kFp8Linear:
            case OpKind::kInt8Linear:
            case OpKind::kWeightOnlyLinear:
                kernels::quant_gemm_cpu(ptr(in), in.dtype, p.quant_gemm, ptr(out), out.dtype, rows);
                break;
            case OpKind::kGatherRows:
                kernels::gather_rows_cpu(ptr(in), step.output_rows.data(), ptr(out), num_rows,
                                         in.cols * static_cast<int64_t>(dtype_size(in.dtype)));
                break;
        }
    }

    std::shared_ptr<const Model> model_;
    std::shared_ptr<Communicator> comm_;
    int tokens_per_block_;
    std::unique_ptr<std::byte, FreeDeleter> arena_, kv_pool_;
    int64_t kv_layer_bytes_ = 0;
    std::vector<Prepared> prepared_;
    std::vector<std::byte> gather_scratch_;
    // TRTLLM_PROFILE=1: seconds per op kind, printed when the backend goes away (a developer aid).
    bool profile_ = std::getenv("TRTLLM_PROFILE") != nullptr;
    std::map<int, double> op_seconds_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(std::shared_ptr<const Model> model, int64_t num_kv_blocks,
                                          int tokens_per_block, std::shared_ptr<Communicator> comm) {
    return std::make_unique<CpuBackend>(std::move(model), num_kv_blocks, tokens_per_block, std::move(comm));
}

}  // namespace trtllm
