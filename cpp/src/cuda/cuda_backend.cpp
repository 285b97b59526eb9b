// The CUDA backend: the op list of the CPU backend, run on one GPU over device memory.
//
// Weights are uploaded once (the engine's weight blob, as one copy); the activation arena, the
// paged KV pool and the kernels' scratch live in device memory; everything runs on one stream.
// Each iteration the StepInput goes to the device in three copies from pinned memory and the ops
// are enqueued; then either the logits rows come back to pinned memory (the executor samples on
// the host) or the rows are sampled on the device and only tokens come back (forward_sample).
//
// Quantized ops (op set v2): `quantize` and the fused quantized outputs of norms and activations
// store Q(x, out_scale) with 1 / out_scale computed on the host as the CPU backend does;
// fp8_linear / int8_linear run through CublasLtGemm with GemmScales (see gemm_cuda.h), tuned per
// shape and m bucket like `linear`. Activations of dtype fp8 / int8 are 1-byte arena slots.
//
// Pure-decode iterations are replayed from CUDA graphs, one per batch-size bucket (1, 2, 4, ...):
// the batch is padded to the bucket with dummy one-token requests whose KV writes land in a
// trash block past the pool's last block, so a graph's launch shapes never change. A bucket is
// run eagerly the first time (kernels loaded, cuBLASLt plans made, NCCL connected) and captured
// the second.
//
// Tensor parallelism: one rank per process and GPU, the NCCL communicator's. all_reduce and
// all_gather are NCCL collectives on the backend's stream (decode-sized all-reduces between the
// GPUs of one machine: one kernel through peer memory, see nccl_comm.h; TRTLLM_CUSTOM_ALL_REDUCE=0
// keeps them on NCCL), so decode graphs capture them too
// (every rank captures and replays the same buckets at the same steps: the leader's batch plan
// decides, see step_broadcast.h); waits go through NcclCommunicator::synchronize, which has the
// job's deadline.
// TRTLLM_CUDA_GRAPHS=0 turns graphs off; TRTLLM_PROFILE=1 turns them off and prints device time per
// op kind (prefill and decode steps apart) when the backend goes away.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "attention/attention_cuda.h"
#include "collective/collective_cuda.h"
#include "elementwise/elementwise_cuda.h"
#include "embedding/embedding_cuda.h"
#include "gemm/gemm_cuda.h"
#include "gemm/weight_only_cuda.h"
#include "norm/norm_cuda.h"
#include "quantization/quantize.h"
#include "quantization/quantize_cuda.h"
#include "sampling/sampling_cuda.h"
#include "trtllm/backend.h"
#include "trtllm/cuda_utils.h"
#include "trtllm/device_info.h"
#include "trtllm/json.h"
#include "trtllm/nccl_comm.h"

namespace trtllm {
namespace {

constexpr int64_t kReserveBytes = int64_t{512} << 20;  // left free for cuBLASLt, graphs and the CUDA context

// What the build chose per GEMM shape key and m bucket (`tactics.gemm` algorithms,
// `tactics.weight_only` paths).
template <class Choice>
struct TunedShapes {
    std::map<std::string, std::map<int64_t, Choice>> by_key;

    // The choice tuned for the smallest bucket >= m (the largest bucket past the end).
    const Choice* find(const std::string& key, int64_t m) const {
        auto it = by_key.find(key);
        if (it == by_key.end() || it->second.empty()) return nullptr;
        auto b = it->second.lower_bound(m);
        if (b == it->second.end()) --b;
        return &b->second;
    }
    // A table that has entries but none for `key`: the build and this runtime spell keys differently.
    bool lacks(const std::string& key) const { return !by_key.empty() && by_key.count(key) == 0; }
};

// `section`'s shapes ({key: {m: entry}}), each entry turned into a Choice by `choice`.
template <class Choice, class Parse>
TunedShapes<Choice> read_tuned_shapes(const Json& section, const char* field, const Parse& choice) {
    TunedShapes<Choice> t;
    for (const auto& [key, by_m] : section.at("shapes").as_object()) {
        for (const auto& [m, entry] : by_m.as_object()) {
            t.by_key[key][std::stoll(m)] = choice(entry.at(field).as_string());
        }
    }
    return t;
}

// Keyed as trtllm_build/tactics.py keys weight-only shapes.
std::string weight_only_key(const kernels::WeightOnlyGemmCuda& w) {
    return std::to_string(w.n) + "x" + std::to_string(w.k) + ":int" + std::to_string(w.weight_bits) + ":g" +
           std::to_string(w.group_size) + ":" + dtype_name(w.dtype) + ":" + (w.pre_quant_scale ? "pre" : "nopre") +
           ":" + (w.bias ? "bias" : "nobias") + (w.out_dtype != w.dtype ? std::string(":out_") + dtype_name(w.out_dtype) : "");
}

TunedShapes<kernels::GemmTactic> read_gemm_tactics(const Json& tactics) {
    const Json& gemm = tactics.get("gemm");
    if (gemm.is_null()) return {};
    const auto version = static_cast<size_t>(gemm.at("cublaslt_version").as_int());
    if (version != kernels::CublasLtGemm::version()) {
        // Algorithms are opaque to other cuBLASLt versions: keep the engine usable, say why it may be slower.
        std::fprintf(stderr,
                     "[trtllm] engine GEMM tactics were tuned with cuBLASLt %zu, this runtime has %zu; using "
                     "cuBLASLt's heuristics instead (rebuild the engine to retune)\n",
                     version, kernels::CublasLtGemm::version());
        return {};
    }
    return read_tuned_shapes<kernels::GemmTactic>(gemm, "algo", kernels::gemm_tactic_from_string);
}

TunedShapes<kernels::WeightOnlyPath> read_weight_only_tactics(const Json& tactics) {
    const Json& wo = tactics.get("weight_only");
    if (wo.is_null()) return {};
    return read_tuned_shapes<kernels::WeightOnlyPath>(wo, "path", kernels::weight_only_path_from_name);
}

// Device copy of a small host array of floats converted from `dtype` (biases for float32 logits).
DeviceBuffer upload_as_float(const void* host, DType dtype, int64_t n) {
    std::vector<float> f(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) f[static_cast<size_t>(i)] = load_float(host, dtype, i);
    DeviceBuffer d(f.size() * sizeof(float));
    CHECK_CUDA(cudaMemcpy(d.get(), f.data(), f.size() * sizeof(float), cudaMemcpyHostToDevice));
    return d;
}

template <class T>
DeviceBuffer upload_vector(const std::vector<T>& v) {
    DeviceBuffer d(v.size() * sizeof(T));
    CHECK_CUDA(cudaMemcpy(d.get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}

// A quantized op's float32 scale weight of 1 or `count` elements (the CPU backend's checks).
const WeightView& quant_scale(const Op& op, const char* role, int64_t count) {
    const WeightView* w = op.weight(role);
    if (w == nullptr || w->dtype != DType::kFloat32 || (w->numel() != 1 && w->numel() != count)) {
        throw std::invalid_argument(std::string(op_kind_name(op.kind)) + " needs a float32 '" + role + "' of 1 or " +
                                    std::to_string(count) + " elements");
    }
    return *w;
}

class CudaBackend final : public Backend {
public:
    CudaBackend(std::shared_ptr<const Model> model, int64_t num_kv_blocks, int tokens_per_block,
                std::shared_ptr<NcclCommunicator> nccl, double free_gpu_memory_fraction, int64_t max_kv_blocks)
        : model_(std::move(model)), nccl_(std::move(nccl)), tokens_per_block_(tokens_per_block) {
        const ModelInfo& info = model_->info();
        if (info.tp_size > 1 && (!nccl_ || nccl_->size() != info.tp_size)) {
            throw std::invalid_argument("engine is sharded for tp_size " + std::to_string(info.tp_size) +
                                        ": run one process per rank under mpirun");
        }
        int count = 0;
        CHECK_CUDA(cudaGetDeviceCount(&count));
        if (count < 1) throw std::runtime_error("no CUDA device is visible");
        device_ = nccl_ ? nccl_->device() : 0;
        CHECK_CUDA(cudaSetDevice(device_));
        // The loader checked GPU 0; a TP rank runs on its own GPU, which may be another kind.
        const int arch = cuda_device_sm_arch(device_);
        if (arch != info.sm_arch) {
            throw std::invalid_argument("engine was built for sm_" + std::to_string(info.sm_arch) + ", but this rank's GPU " +
                                        std::to_string(device_) + " is sm_" + std::to_string(arch) +
                                        "; rebuild the engine on (or for) this GPU");
        }
        stream_ = std::make_unique<CudaStream>();
        gemm_ = std::make_unique<kernels::CublasLtGemm>();
        const Json meta = Json::parse(model_->file().metadata_json());
        tactics_ = read_gemm_tactics(meta.at("tactics"));
        weight_only_tactics_ = read_weight_only_tactics(meta.at("tactics"));

        const EngineFile& file = model_->file();
        weights_ = DeviceBuffer(file.data_size());
        CHECK_CUDA(cudaMemcpy(weights_.get(), file.data(), file.data_size(), cudaMemcpyHostToDevice));
        arena_ = DeviceBuffer(static_cast<size_t>(model_->arena_bytes()));

        int max_heads = 1;
        int64_t wo_scratch_elems = 0;
        for (const Op& op : model_->ops()) {
            prepared_.emplace_back();
            Prepared& p = prepared_.back();
            if (op.kind == OpKind::kLinear) {
                const WeightView& w = *op.weight("weight");
                const WeightView* b = op.weight("bias");
                const Slot& in = op.inputs.at(0);
                const Slot& out = op.outputs.at(0);
                if (w.dtype != in.dtype) {
                    throw std::invalid_argument(std::string("CUDA backend: linear weight of dtype ") + dtype_name(w.dtype) +
                                                " with " + dtype_name(in.dtype) + " activations is not supported");
                }
                p.shape = {w.shape[0], w.shape[1], in.dtype, out.dtype, b != nullptr};
                prepare_bias(op, out, p);
                p.tactic_key = p.shape.key();
            }
            if (op.kind == OpKind::kWeightOnlyLinear) {
                p.weight_only = prepare_weight_only(op);
                p.tactic_key = weight_only_key(p.weight_only);
                wo_scratch_elems = std::max(wo_scratch_elems,
                                            kernels::weight_only_scratch_elems(p.weight_only, info.max_num_tokens));
            }
            if (op.kind == OpKind::kAttention) {
                max_heads = std::max(max_heads, op.num_heads);
                if (op.has_rope) {
                    const std::vector<float> inv = kernels::rope_inv_freq(op.head_dim, op.rope);
                    p.owned = DeviceBuffer(inv.size() * sizeof(float));
                    CHECK_CUDA(cudaMemcpy(p.owned.get(), inv.data(), inv.size() * sizeof(float), cudaMemcpyHostToDevice));
                }
                if (tile_tokens_ == 0) tile_tokens_ = kernels::attention_tile_tokens(op.num_heads, op.num_kv_heads);
            }
            if (op.kind == OpKind::kFp8Linear || op.kind == OpKind::kInt8Linear) prepare_quant_linear(op, p);
            prepare_output_quant(op, p);
            check_tuned(op, p);
        }

        if (tile_tokens_ == 0) tile_tokens_ = 1;
        wo_scratch_ = DeviceBuffer(static_cast<size_t>(wo_scratch_elems) * dtype_size(info.dtype));
        max_requests_ = info.max_batch_size;
        allocate_collective_scratch();
        max_blocks_per_seq_ = (info.max_seq_len + tokens_per_block - 1) / tokens_per_block;
        CHECK_CUDA(cudaDeviceGetAttribute(&num_sms_, cudaDevAttrMultiProcessorCount, device_));
        q_scratch_ = DeviceBuffer(sizeof(float) * static_cast<size_t>(info.max_num_tokens) * max_heads * info.head_dim);
        // num_decode * num_splits <= num_decode + 2 * num_sms (attention_num_splits' target).
        partial_ = DeviceBuffer(sizeof(float) * static_cast<size_t>(kernels::attention_partial_floats(
                                                    max_requests_ + 2 * int64_t{num_sms_}, max_heads, info.head_dim)));
        // One counter per (decode request, kv head) <= max_requests * num_heads; zero, and the kernel keeps them so.
        decode_done_ = DeviceBuffer(sizeof(int) * static_cast<size_t>(max_requests_) * max_heads);
        CHECK_CUDA(cudaMemset(decode_done_.get(), 0, decode_done_.bytes()));
        layout_step_buffers();
        logits_host_ = PinnedBuffer(sizeof(float) * static_cast<size_t>(info.max_output_rows) * info.vocab_size_padded);
        const auto max_rows = static_cast<size_t>(info.max_output_rows);
        sample_params_host_ = PinnedBuffer(sizeof(kernels::RowSampling) * max_rows);
        sample_params_dev_ = DeviceBuffer(sizeof(kernels::RowSampling) * max_rows);
        samples_dev_ = DeviceBuffer(sizeof(kernels::RowSample) * max_rows);
        samples_host_ = PinnedBuffer(sizeof(kernels::RowSample) * max_rows);

        // An FP8 cache takes 1 byte per element: twice the blocks of a 16-bit one in the same memory.
        block_bytes_ = kernels::kv_block_bytes(info.num_kv_heads, tokens_per_block, info.head_dim, info.kv_cache_dtype);
        if (num_kv_blocks <= 0) {
            size_t free_bytes = 0, total_bytes = 0;
            CHECK_CUDA(cudaMemGetInfo(&free_bytes, &total_bytes));
            const double usable = free_gpu_memory_fraction * (static_cast<double>(free_bytes) - kReserveBytes);
            num_kv_blocks = static_cast<int64_t>(usable / static_cast<double>(block_bytes_ * info.num_layers)) - 1;
            if (max_kv_blocks > 0) num_kv_blocks = std::min(num_kv_blocks, max_kv_blocks);
            if (num_kv_blocks < 1) {
                throw std::runtime_error("GPU memory left after weights and activations (" +
                                         std::to_string(free_bytes >> 20) + " MiB free) holds no KV block");
            }
        }
        num_kv_blocks_ = num_kv_blocks;
        // One block more per layer: the trash block that padded graph rows write into.
        kv_layer_bytes_ = (num_kv_blocks_ + 1) * block_bytes_;
        kv_pool_ = DeviceBuffer(static_cast<size_t>(kv_layer_bytes_ * info.num_layers));
        profile_ = std::getenv("TRTLLM_PROFILE") != nullptr;
        graphs_enabled_ = !profile_ && !(std::getenv("TRTLLM_CUDA_GRAPHS") &&
                                         std::string(std::getenv("TRTLLM_CUDA_GRAPHS")) == "0");
        for (int b = 1; b < max_requests_; b *= 2) graph_buckets_.push_back(b);
        graph_buckets_.push_back(max_requests_);
    }

    ~CudaBackend() override {
        for (const auto& [name, ms] : profile_ms_) {
            const std::string phase = name.substr(0, name.find(' '));
            std::fprintf(stderr, "[trtllm profile] %-24s %9.3f ms total, %8.1f us per step\n", name.c_str(), ms,
                         1000.0 * ms / std::max(1, profile_steps_[phase]));
        }
        for (auto& [bucket, g] : graphs_) {
            if (g.exec != nullptr) cudaGraphExecDestroy(g.exec);
        }
    }

    int64_t kv_cache_bytes() const override { return num_kv_blocks_ * block_bytes_ * model_->info().num_layers; }

    const float* forward(const StepInput& step) override {
        const int64_t rows = run_step(step);
        cudaStream_t s = stream_->get();
        const size_t row_bytes = sizeof(float) * static_cast<size_t>(model_->info().vocab_size_padded);
        CHECK_CUDA(cudaMemcpyAsync(logits_host_.get(), ptr(model_->logits()), row_bytes * static_cast<size_t>(rows),
                                   cudaMemcpyDeviceToHost, s));
        synchronize();
        return logits_host_.as<float>();
    }

    void forward_without_output(const StepInput& step) override {
        run_step(step);
        synchronize();
    }

    bool samples_on_device() const override { return true; }

    const kernels::RowSample* forward_sample(const StepInput& step,
                                             const std::vector<kernels::RowSampling>& rows) override {
        if (rows.size() != step.output_rows.size()) {
            throw std::invalid_argument("forward_sample: " + std::to_string(rows.size()) + " sampling rows for " +
                                        std::to_string(step.output_rows.size()) + " output rows");
        }
        const int64_t num_rows = run_step(step);
        cudaStream_t s = stream_->get();
        const ModelInfo& info = model_->info();
        const size_t params_bytes = sizeof(kernels::RowSampling) * rows.size();
        std::memcpy(sample_params_host_.get(), rows.data(), params_bytes);  // the last step's copy is done: it synced
        CHECK_CUDA(cudaMemcpyAsync(sample_params_dev_.get(), sample_params_host_.get(), params_bytes,
                                   cudaMemcpyHostToDevice, s));
        kernels::sample_rows_cuda(static_cast<const float*>(ptr(model_->logits())), num_rows, info.vocab_size_padded,
                                  info.vocab_size, sample_params_dev_.as<kernels::RowSampling>(),
                                  samples_dev_.as<kernels::RowSample>(), s);
        CHECK_CUDA(cudaMemcpyAsync(samples_host_.get(), samples_dev_.get(),
                                   sizeof(kernels::RowSample) * static_cast<size_t>(num_rows), cudaMemcpyDeviceToHost, s));
        synchronize();
        return samples_host_.as<kernels::RowSample>();
    }

private:
    // The end of an iteration. Under tensor parallelism a peer that died would leave this rank's
    // collectives waiting forever: the communicator's wait has the job's deadline.
    void synchronize() {
        if (nccl_) {
            nccl_->synchronize(stream_->get());
        } else {
            CHECK_CUDA(cudaStreamSynchronize(stream_->get()));
        }
    }

    // Enqueues one iteration; returns the number of logits rows the step asked for (the first
    // rows of the logits slot). The caller copies back what it needs and synchronizes.
    int64_t run_step(const StepInput& step) {
        const ModelInfo& info = model_->info();
        CHECK_CUDA(cudaSetDevice(device_));  // the executor's worker thread is not the constructing one
        const int num_requests = step.num_requests();
        int64_t num_tokens = step.num_tokens();
        int64_t num_rows = static_cast<int64_t>(step.output_rows.size());
        if (num_tokens < 1 || num_tokens > info.max_num_tokens || num_rows < 1 || num_rows > info.max_output_rows ||
            num_requests < 1 || num_requests > max_requests_ || step.max_blocks_per_seq > max_blocks_per_seq_) {
            throw std::invalid_argument("batch of " + std::to_string(num_tokens) + " tokens / " +
                                        std::to_string(num_rows) + " output rows / " + std::to_string(num_requests) +
                                        " requests exceeds the engine's limits");
        }
        bool pure_decode = graphs_enabled_ && num_rows == num_requests;
        for (int r = 0; pure_decode && r < num_requests; ++r) {
            pure_decode = step.new_len[static_cast<size_t>(r)] == 1 && step.output_rows[static_cast<size_t>(r)] == r;
        }
        const int padded = pure_decode ? *std::lower_bound(graph_buckets_.begin(), graph_buckets_.end(), num_requests)
                                       : num_requests;
        fill_step(step, padded);
        if (pure_decode) num_tokens = num_rows = padded;

        kernels::AttentionWork work;
        work.num_tokens = static_cast<int>(num_tokens);
        work.num_decode = static_cast<int>(decode_.size());
        work.decode_requests = dev_i32(off_decode_);
        work.decode_identity = kernels::is_identity(decode_);
        work.num_prefill_tiles = static_cast<int>(tiles_.size() / 2);
        work.prefill_tiles = dev_i32(off_tiles_);
        work.tile_tokens = tile_tokens_;
        // A graph replays with any lengths up to max_seq_len; an eager step knows its longest sequence.
        int longest = info.max_seq_len;
        if (!pure_decode) {
            longest = 1;
            for (int r = 0; r < num_requests; ++r) {
                longest = std::max(longest, step.past_len[static_cast<size_t>(r)] + step.new_len[static_cast<size_t>(r)]);
            }
        }
        work.num_splits = kernels::attention_num_splits(work.num_decode, info.num_kv_heads, longest, num_sms_);
        kernels::PagedBatchCuda batch;
        batch.num_requests = padded;
        batch.past_len = dev_i32(off_past_);
        batch.new_len = dev_i32(off_new_);
        batch.token_start = dev_i32(off_start_);
        batch.block_table = dev_i32(off_table_);
        batch.max_blocks_per_seq = max_blocks_per_seq_;
        batch.tokens_per_block = tokens_per_block_;

        cudaStream_t s = stream_->get();
        if (pure_decode) {
            Graph& g = graphs_[padded];
            if (g.exec == nullptr && g.eager_runs > 0) capture(g, batch, work, num_tokens, num_rows);
            if (g.exec != nullptr) {
                CHECK_CUDA(cudaGraphLaunch(g.exec, s));
            } else {
                ++g.eager_runs;
                run_ops(batch, work, num_tokens, num_rows);
            }
        } else {
            run_ops(batch, work, num_tokens, num_rows);
        }
        return static_cast<int64_t>(step.output_rows.size());
    }

    // A weight_only_linear's device tensors; the engine must hold a CUDA layout.
    kernels::WeightOnlyGemmCuda prepare_weight_only(const Op& op) const {
        const bool mma_tiles = kernels::weight_only_mma_tiles_from_name(op.weight_layout);
        const WeightView& w = *op.weight("weight");
        const WeightView& s = *op.weight("weight_scale");
        const WeightView* pre = op.weight("pre_quant_scale");
        const WeightView* b = op.weight("bias");
        const Slot& in = op.inputs.at(0);
        kernels::WeightOnlyGemmCuda g;
        g.n = w.shape.at(0);
        g.k = w.shape.at(1) * (op.weight_bits == 4 ? 2 : 1);
        g.weight_bits = op.weight_bits;
        g.group_size = op.group_size;
        g.dtype = in.dtype;
        g.out_dtype = op.outputs.at(0).dtype;  // the activation dtype, or float32 (logits)
        const bool shapes_ok = w.dtype == DType::kUInt8 && s.dtype == in.dtype && op.group_size > 0 &&
                               s.numel() == g.n * (g.k / op.group_size) && (!pre || (pre->dtype == in.dtype && pre->numel() == g.k)) &&
                               (!b || (b->dtype == in.dtype && b->numel() == g.n));
        if (!shapes_ok) {
            throw std::invalid_argument("weight_only_linear: weight (uint8), weight_scale, pre_quant_scale and bias "
                                        "must match the layout and the activation dtype " + std::string(dtype_name(in.dtype)));
        }
        g.weight = dev(w.data);
        g.scale = dev(s.data);
        g.pre_quant_scale = pre ? dev(pre->data) : nullptr;
        g.bias = b ? dev(b->data) : nullptr;
        g.mma_tiles = mma_tiles;
        kernels::check_weight_only_gemm(g);
        return g;
    }

    struct Prepared {
        kernels::GemmShape shape;
        kernels::WeightOnlyGemmCuda weight_only;
        const void* bias = nullptr;
        std::string tactic_key;
        DeviceBuffer owned;  // a converted bias, or rope inv_freq
        // Quantized ops (op set v2).
        kernels::GemmScales scales;                         // fp8_linear / int8_linear
        DeviceBuffer alpha_per_n;                           // int8_linear's alpha [n]
        std::optional<kernels::OutputQuantCuda> out_quant;  // the op's first output is quantized
        DeviceBuffer inv_scale;                             // out_quant's 1 / out_scale
        const kernels::OutputQuantCuda* quant() const { return out_quant ? &*out_quant : nullptr; }
    };

    // fp8_linear / int8_linear: shape (checked against cuBLASLt's alignment), alpha, device bias.
    void prepare_quant_linear(const Op& op, Prepared& p) {
        const WeightView& w = *op.weight("weight");
        const WeightView* b = op.weight("bias");
        const Slot& in = op.inputs.at(0);
        const Slot& out = op.outputs.at(0);
        const bool fp8 = op.kind == OpKind::kFp8Linear;
        const DType qdt = fp8 ? DType::kFloat8E4M3 : DType::kInt8;
        if (w.dtype != qdt || in.dtype != qdt) {
            throw std::invalid_argument(std::string("CUDA backend: ") + op_kind_name(op.kind) + " needs " +
                                        dtype_name(qdt) + " weights and input, got " + dtype_name(w.dtype) + " / " +
                                        dtype_name(in.dtype));
        }
        const int64_t n = w.shape.at(0), k = w.shape.at(1);
        p.shape = {n, k, qdt, out.dtype, b != nullptr};
        kernels::check_quantized_gemm_shape(p.shape);
        p.tactic_key = p.shape.key();
        const float input_scale = *static_cast<const float*>(quant_scale(op, "input_scale", 1).data);
        const WeightView& ws = quant_scale(op, "weight_scale", fp8 ? 1 : n);
        const auto* wsp = static_cast<const float*>(ws.data);
        if (fp8) {
            p.scales.alpha = input_scale * wsp[0];
        } else {
            if (ws.numel() != n) throw std::invalid_argument("int8_linear needs a per-channel weight_scale");
            std::vector<float> alpha(static_cast<size_t>(n));
            for (int64_t i = 0; i < n; ++i) alpha[static_cast<size_t>(i)] = input_scale * wsp[i];
            p.alpha_per_n = upload_vector(alpha);
            p.scales.alpha_per_n = p.alpha_per_n.as<float>();
        }
        prepare_bias(op, out, p);
    }

    // The build (trtllm_build/tactics.py) timed every GEMM of the engine under the key this backend
    // looks it up by; a key it lacks means the two disagree on a key's spelling, which would
    // otherwise fall back to cuBLASLt's heuristics without a word.
    void check_tuned(const Op& op, const Prepared& p) const {
        if (p.tactic_key.empty()) return;
        const bool weight_only = op.kind == OpKind::kWeightOnlyLinear;
        if (weight_only ? weight_only_tactics_.lacks(p.tactic_key) : tactics_.lacks(p.tactic_key)) {
            throw std::runtime_error(std::string("engine tactics have no ") + (weight_only ? "weight-only" : "GEMM") +
                                     " entry for " + op_kind_name(op.kind) + " " + p.tactic_key +
                                     ": the engine and this runtime key GEMM shapes differently; rebuild the engine "
                                     "with this version");
        }
    }

    // A GEMM's bias in its output's dtype, which the epilogues read: the engine's own bytes, or a
    // float32 copy for float32 outputs (logits) of a bf16/fp16 bias.
    void prepare_bias(const Op& op, const Slot& out, Prepared& p) {
        const WeightView* b = op.weight("bias");
        if (b == nullptr) return;
        if (b->dtype == out.dtype) {
            p.bias = dev(b->data);
        } else if (out.dtype == DType::kFloat32) {
            p.owned = upload_as_float(b->data, b->dtype, b->numel());
            p.bias = p.owned.get();
        } else {
            throw std::invalid_argument(std::string("CUDA backend: ") + op_kind_name(op.kind) + " bias of dtype " +
                                        dtype_name(b->dtype) + " with a " + dtype_name(out.dtype) + " output");
        }
    }

    // An op whose first output is fp8 / int8 stores Q(result, out_scale): 1 / out_scale as the CPU computes it.
    static void prepare_output_quant(const Op& op, Prepared& p) {
        if (op.outputs.empty()) return;
        const Slot& out = op.outputs.at(0);
        if (out.dtype != DType::kFloat8E4M3 && out.dtype != DType::kInt8) {
            if (op.kind == OpKind::kQuantize) {
                throw std::invalid_argument(std::string("quantize writes float8_e4m3fn or int8, not ") + dtype_name(out.dtype));
            }
            return;
        }
        const bool can_quantize = op.kind == OpKind::kQuantize || op.kind == OpKind::kRmsNorm ||
                                  op.kind == OpKind::kLayerNorm || op.kind == OpKind::kAddRmsNorm ||
                                  op.kind == OpKind::kAllReduceAddRmsNorm ||
                                  op.kind == OpKind::kAddLayerNorm || op.kind == OpKind::kSiluMul ||
                                  op.kind == OpKind::kGeluTanh;
        if (!can_quantize) {
            throw std::invalid_argument(std::string("CUDA backend: ") + op_kind_name(op.kind) + " cannot write a " +
                                        dtype_name(out.dtype) + " output (op set v2 quantizes norms, activations "
                                        "and `quantize` only)");
        }
        const WeightView& s = quant_scale(op, "out_scale", out.cols);
        const kernels::OutputQuant host =
            kernels::make_output_quant(out.dtype, static_cast<const float*>(s.data), s.numel());
        p.inv_scale = upload_vector(host.inv_scale);
        p.out_quant = kernels::OutputQuantCuda{out.dtype, p.inv_scale.as<float>(), s.numel()};
    }

    void run_quant_linear(const Op& op, const Prepared& p, int64_t rows, cudaStream_t s) {
        gemm_->run(p.shape, rows, ptr(op.inputs.at(0)), dev(op.weight("weight")->data), p.bias, ptr(op.outputs.at(0)),
                   tactics_.find(p.tactic_key, rows), s, &p.scales);
    }

    struct Graph {
        cudaGraphExec_t exec = nullptr;
        int eager_runs = 0;
    };

    const void* dev(const void* host) const {
        return static_cast<const std::byte*>(weights_.get()) +
               (static_cast<const std::byte*>(host) - model_->file().data());
    }
    void* ptr(const Slot& s) const { return static_cast<std::byte*>(arena_.get()) + s.offset; }
    const int32_t* dev_i32(size_t offset) const {
        return reinterpret_cast<const int32_t*>(static_cast<const std::byte*>(step_dev_.get()) + offset);
    }

    // One pinned host block mirrored by one device block: past_len, new_len, token_start,
    // block_table, output_rows, decode list, prefill tiles, each at a fixed offset.
    void layout_step_buffers() {
        const ModelInfo& info = model_->info();
        size_t off = 0;
        auto take = [&](size_t ints) {
            const size_t at = off;
            off += (ints * sizeof(int32_t) + 255) / 256 * 256;
            return at;
        };
        off_past_ = take(static_cast<size_t>(max_requests_));
        off_new_ = take(static_cast<size_t>(max_requests_));
        off_start_ = take(static_cast<size_t>(max_requests_));
        off_table_ = take(static_cast<size_t>(max_requests_) * static_cast<size_t>(max_blocks_per_seq_));
        off_rows_ = take(static_cast<size_t>(std::max(info.max_output_rows, max_requests_)));
        off_decode_ = take(static_cast<size_t>(max_requests_));
        off_tiles_ = take(2 * static_cast<size_t>(info.max_num_tokens));
        step_bytes_ = off;
        step_host_ = PinnedBuffer(step_bytes_);
        step_dev_ = DeviceBuffer(step_bytes_);
        ids_host_ = PinnedBuffer(2 * sizeof(int32_t) * static_cast<size_t>(info.max_num_tokens));
    }

    // Device scratch of the collectives, sized for the largest op at the engine's limits now (a
    // graph capture must not allocate), and the peer all-reduce's buffers for the decode-sized
    // all-reduces.
    void allocate_collective_scratch() {
        if (!nccl_) return;
        const ModelInfo& info = model_->info();
        size_t gather_bytes = 0, reduce_floats = 0, reduce_bytes = 0;
        std::optional<DType> reduce_dtype;  // the activation dtype: every all_reduce's
        for (const Op& op : model_->ops()) {
            const Slot& in = op.inputs.at(0);
            const int64_t max_rows = in.row_dim == RowDim::kNumTokens ? std::max(info.max_num_tokens, max_requests_)
                                                                      : std::max(info.max_output_rows, max_requests_);
            const auto count = static_cast<size_t>(max_rows * in.cols);
            if (op.kind == OpKind::kAllGather) {
                gather_bytes = std::max(gather_bytes, count * static_cast<size_t>(op.tp_size) * dtype_size(in.dtype));
            } else if (op.kind == OpKind::kAllReduce || op.kind == OpKind::kAllReduceAddRmsNorm) {
                if (!reduce_dtype) reduce_dtype = in.dtype;
                if (in.dtype == *reduce_dtype) reduce_bytes = std::max(reduce_bytes, count * dtype_size(in.dtype));
                if (widens_for_nccl(in.dtype)) reduce_floats = std::max(reduce_floats, count);
            }
        }
        gather_scratch_ = DeviceBuffer(gather_bytes);
        reduce_scratch_ = DeviceBuffer(reduce_floats * sizeof(float));
        // On 2 H100s, in CUDA graphs, the peer kernel took 4.2 us for one 8B token (8 KiB) where
        // NCCL took 6.6, and won up to 4 MiB (scripts/bench_all_reduce.py).
        const char* peer = std::getenv("TRTLLM_CUSTOM_ALL_REDUCE");
        const bool peer_wanted = peer == nullptr || std::string(peer) != "0";
        if (reduce_dtype && peer_wanted) nccl_->enable_peer_all_reduce(*reduce_dtype, reduce_bytes);
    }

    // docs/opset.md: 16-bit activations are summed in float32 and rounded once. The peer path does
    // that. NCCL adds in the buffer's dtype, rounding after each addition: with two ranks there is
    // one addition (of two 16-bit values, exact in float32), so NCCL's own result is that. With
    // more, it would round tp_size - 1 times: those all-reduces go through float32 (twice the
    // bytes on the wire).
    bool widens_for_nccl(DType dtype) const {
        return (dtype == DType::kBFloat16 || dtype == DType::kFloat16) && nccl_->size() > 2;
    }

    void all_reduce(const void* in, void* out, DType dtype, int64_t count, cudaStream_t s) {
        if (nccl_->uses_peer_all_reduce(dtype, count) || !widens_for_nccl(dtype)) {
            nccl_->all_reduce_sum(in, out, dtype, count, s);
            return;
        }
        float* sum = reduce_scratch_.as<float>();
        kernels::widen_to_float_cuda(in, dtype, sum, count, s);
        nccl_->all_reduce_sum(sum, sum, DType::kFloat32, count, s);
        kernels::narrow_from_float_cuda(sum, out, dtype, count, s);
    }

    int32_t* host_i32(size_t offset) const {
        return reinterpret_cast<int32_t*>(static_cast<std::byte*>(step_host_.get()) + offset);
    }

    // Packs the step (padded to `padded` one-token requests for a graph) into pinned memory and
    // copies it to the device: ids and positions straight into their arena slots.
    void fill_step(const StepInput& step, int padded) {
        const ModelInfo& info = model_->info();
        const int num_requests = step.num_requests();
        const int num_tokens = step.num_tokens();
        const int total_tokens = num_tokens + (padded - num_requests);  // padding adds one token per dummy request
        int32_t* ids = ids_host_.as<int32_t>();
        int32_t* pos = ids + info.max_num_tokens;
        std::copy(step.input_ids.begin(), step.input_ids.end(), ids);
        std::copy(step.position_ids.begin(), step.position_ids.end(), pos);
        std::fill(ids + num_tokens, ids + total_tokens, 0);
        std::fill(pos + num_tokens, pos + total_tokens, 0);

        int32_t* past = host_i32(off_past_);
        int32_t* fresh = host_i32(off_new_);
        int32_t* start = host_i32(off_start_);
        int32_t* table = host_i32(off_table_);
        int32_t* rows = host_i32(off_rows_);
        const int width = step.max_blocks_per_seq;
        for (int r = 0; r < num_requests; ++r) {
            const auto ur = static_cast<size_t>(r);
            past[r] = step.past_len[ur];
            fresh[r] = step.new_len[ur];
            start[r] = step.token_start[ur];
            const int needed = (past[r] + fresh[r] + tokens_per_block_ - 1) / tokens_per_block_;
            if (fresh[r] < 1 || past[r] < 0 || needed > width) {
                throw std::invalid_argument("request " + std::to_string(r) + " has past_len " + std::to_string(past[r]) +
                                            ", new_len " + std::to_string(fresh[r]) + " beyond its block table");
            }
            for (int b = 0; b < needed; ++b) {
                const int32_t id = step.block_table[ur * static_cast<size_t>(width) + static_cast<size_t>(b)];
                if (id < 0 || id >= num_kv_blocks_) {
                    throw std::invalid_argument("block id " + std::to_string(id) + " is outside the KV pool [0, " +
                                                std::to_string(num_kv_blocks_) + ")");
                }
                table[static_cast<int64_t>(r) * max_blocks_per_seq_ + b] = id;
            }
        }
        for (int r = num_requests; r < padded; ++r) {  // dummy requests: one token at position 0 in the trash block
            past[r] = 0;
            fresh[r] = 1;
            start[r] = num_tokens + (r - num_requests);
            table[static_cast<int64_t>(r) * max_blocks_per_seq_] = static_cast<int32_t>(num_kv_blocks_);
        }
        std::copy(step.output_rows.begin(), step.output_rows.end(), rows);
        for (int r = num_requests; r < padded; ++r) rows[r] = start[r];
        for (size_t i = 0; i < step.output_rows.size(); ++i) {
            if (step.output_rows[i] < 0 || step.output_rows[i] >= num_tokens) {
                throw std::invalid_argument("output row " + std::to_string(step.output_rows[i]) + " is outside the batch");
            }
        }
        kernels::plan_attention_work(fresh, padded, tile_tokens_, decode_, tiles_);
        std::copy(decode_.begin(), decode_.end(), host_i32(off_decode_));
        std::copy(tiles_.begin(), tiles_.end(), host_i32(off_tiles_));

        cudaStream_t s = stream_->get();
        // The previous iteration's copies must be done before the pinned buffers are rewritten:
        // forward() ends with a stream sync, so they are.
        CHECK_CUDA(cudaMemcpyAsync(ptr(model_->input_ids()), ids, sizeof(int32_t) * static_cast<size_t>(total_tokens),
                                   cudaMemcpyHostToDevice, s));
        CHECK_CUDA(cudaMemcpyAsync(ptr(model_->position_ids()), pos, sizeof(int32_t) * static_cast<size_t>(total_tokens),
                                   cudaMemcpyHostToDevice, s));
        // Up to the end of the tiles actually used; the table rows past `padded` are never read.
        const size_t used = off_tiles_ + sizeof(int32_t) * tiles_.size();
        CHECK_CUDA(cudaMemcpyAsync(step_dev_.get(), step_host_.get(), used, cudaMemcpyHostToDevice, s));
    }

    void capture(Graph& g, const kernels::PagedBatchCuda& batch, const kernels::AttentionWork& work, int64_t num_tokens,
                 int64_t num_rows) {
        cudaStream_t s = stream_->get();
        CHECK_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
        cudaGraph_t graph = nullptr;
        try {
            run_ops(batch, work, num_tokens, num_rows);
        } catch (...) {
            cudaStreamEndCapture(s, &graph);
            if (graph != nullptr) cudaGraphDestroy(graph);
            throw;
        }
        CHECK_CUDA(cudaStreamEndCapture(s, &graph));
        const cudaError_t err = cudaGraphInstantiate(&g.exec, graph, 0);
        cudaGraphDestroy(graph);
        CHECK_CUDA(err);
    }

    void run_ops(const kernels::PagedBatchCuda& batch, const kernels::AttentionWork& work, int64_t num_tokens,
                 int64_t num_rows) {
        const auto& ops = model_->ops();
        if (!profile_) {
            for (size_t i = 0; i < ops.size(); ++i) run(ops[i], prepared_[i], batch, work, num_tokens, num_rows);
            return;
        }
        // TRTLLM_PROFILE=1 (a developer aid; graphs off): device time per op kind from events around each op.
        if (profile_events_.size() < ops.size() + 1) profile_events_ = std::vector<CudaEvent>(ops.size() + 1);
        cudaStream_t s = stream_->get();
        CHECK_CUDA(cudaEventRecord(profile_events_[0].get(), s));
        for (size_t i = 0; i < ops.size(); ++i) {
            run(ops[i], prepared_[i], batch, work, num_tokens, num_rows);
            CHECK_CUDA(cudaEventRecord(profile_events_[i + 1].get(), s));
        }
        CHECK_CUDA(cudaEventSynchronize(profile_events_[ops.size()].get()));
        const char* phase = work.num_prefill_tiles > 0 ? "prefill" : "decode";
        for (size_t i = 0; i < ops.size(); ++i) {
            float ms = 0.0f;
            CHECK_CUDA(cudaEventElapsedTime(&ms, profile_events_[i].get(), profile_events_[i + 1].get()));
            profile_ms_[std::string(phase) + " " + op_kind_name(ops[i].kind)] += ms;
        }
        profile_steps_[phase] += 1;
    }

    void run(const Op& op, const Prepared& p, const kernels::PagedBatchCuda& batch, const kernels::AttentionWork& work,
             int64_t num_tokens, int64_t num_rows) {
        cudaStream_t s = stream_->get();
        const Slot& in = op.inputs.at(0);
        const Slot& out = op.outputs.at(0);
        const int64_t rows = in.row_dim == RowDim::kNumTokens ? num_tokens : num_rows;
        switch (op.kind) {
            case OpKind::kEmbedding: {
                const WeightView& w = *op.weight("weight");
                if (out.dtype != w.dtype) throw std::invalid_argument("embedding output dtype differs from its table");
                kernels::embedding_cuda(static_cast<const int32_t*>(ptr(in)), dev(w.data), ptr(out), w.dtype, rows,
                                        w.shape[1], s);
                break;
            }
            case OpKind::kLinear:
                gemm_->run(p.shape, rows, ptr(in), dev(op.weight("weight")->data), p.bias, ptr(out),
                           tactics_.find(p.tactic_key, rows), s);
                break;
            case OpKind::kWeightOnlyLinear:
                kernels::weight_only_gemm_cuda(p.weight_only, ptr(in), ptr(out), rows, wo_scratch_.get(), *gemm_, s,
                                               weight_only_tactics_.find(p.tactic_key, rows));
                break;
            case OpKind::kRmsNorm: {
                const WeightView& w = *op.weight("weight");
                kernels::rms_norm_cuda(ptr(in), dev(w.data), ptr(out), in.dtype, rows, in.cols, w.shape[0], op.eps, s,
                                       p.quant());
                break;
            }
            case OpKind::kLayerNorm:
                kernels::layer_norm_cuda(ptr(in), dev(op.weight("weight")->data), dev(op.weight("bias")->data), ptr(out),
                                         in.dtype, rows, in.cols, op.eps, s, p.quant());
                break;
            case OpKind::kAddRmsNorm:
                kernels::add_rms_norm_cuda(ptr(in), ptr(op.inputs[1]), dev(op.weight("weight")->data), ptr(out),
                                           ptr(op.outputs[1]), in.dtype, rows, in.cols, op.eps, s, p.quant());
                break;
            case OpKind::kAddLayerNorm:
                kernels::add_layer_norm_cuda(ptr(in), ptr(op.inputs[1]), dev(op.weight("weight")->data),
                                             dev(op.weight("bias")->data), ptr(out), ptr(op.outputs[1]), in.dtype, rows,
                                             in.cols, op.eps, s, p.quant());
                break;
            case OpKind::kAdd:
                kernels::add_cuda(ptr(in), ptr(op.inputs[1]), ptr(out), in.dtype, rows * in.cols, s);
                break;
            case OpKind::kSiluMul:
                kernels::silu_mul_cuda(ptr(in), ptr(out), in.dtype, rows, out.cols, s, p.quant());
                break;
            case OpKind::kGeluTanh:
                kernels::gelu_tanh_cuda(ptr(in), ptr(out), in.dtype, rows * in.cols, s, p.quant(), in.cols);
                break;
            case OpKind::kAttention: {
                kernels::AttentionParams params;
                params.num_heads = op.num_heads;
                params.num_kv_heads = op.num_kv_heads;
                params.head_dim = op.head_dim;
                params.rope_inv_freq = op.has_rope ? p.owned.as<float>() : nullptr;
                if (const WeightView* qn = op.weight("q_norm")) {
                    params.q_norm = dev(qn->data);
                    params.k_norm = dev(op.weight("k_norm")->data);
                    params.qk_norm_eps = op.qk_norm_eps;
                }
                // The FP8 cache's scale is a constant of the engine: the host copy, read at launch.
                if (const WeightView* kv = op.weight("kv_scale")) params.kv_scale = static_cast<const float*>(kv->data);
                void* kv_layer = static_cast<std::byte*>(kv_pool_.get()) + kv_layer_bytes_ * op.layer_idx;
                kernels::AttentionScratch scratch{q_scratch_.as<float>(), partial_.as<float>(), decode_done_.as<int>()};
                kernels::attention_cuda(ptr(in), ptr(out), in.dtype, kv_layer, batch, params, work, scratch, s);
                break;
            }
            case OpKind::kAllReduce: {
                const int64_t count = rows * in.cols;
                if (nccl_) {
                    all_reduce(ptr(in), ptr(out), out.dtype, count, s);
                } else if (ptr(in) != ptr(out)) {
                    CHECK_CUDA(cudaMemcpyAsync(ptr(out), ptr(in), static_cast<size_t>(count) * dtype_size(in.dtype),
                                               cudaMemcpyDeviceToDevice, s));
                }
                if (const WeightView* b = op.weight("bias")) {
                    kernels::add_bias_cuda(ptr(out), dev(b->data), out.dtype, rows, out.cols, s);
                }
                break;
            }
            case OpKind::kAllReduceAddRmsNorm: {
                void* sum = ptr(op.outputs[1]);
                const int64_t count = rows * in.cols;
                const void* weight = dev(op.weight("weight")->data);
                // Through peer memory: one kernel. Otherwise the all-reduce into the `sum` output, then
                // the residual norm in place on it.
                const kernels::PeerBuffers* peers = nccl_ ? nccl_->peer_buffers(in.dtype, count) : nullptr;
                if (peers != nullptr &&
                    kernels::peer_add_rms_norm_fits(in.dtype, in.cols, {ptr(in), ptr(op.inputs[1]), weight, sum})) {
                    kernels::peer_all_reduce_add_rms_norm_cuda(ptr(in), ptr(op.inputs[1]), weight, ptr(out), sum, in.dtype,
                                                               rows, in.cols, op.eps, *peers, s, p.quant());
                    break;
                }
                if (nccl_) {
                    all_reduce(ptr(in), sum, in.dtype, count, s);
                } else {
                    CHECK_CUDA(cudaMemcpyAsync(sum, ptr(in), static_cast<size_t>(count) * dtype_size(in.dtype),
                                               cudaMemcpyDeviceToDevice, s));
                }
                kernels::add_rms_norm_cuda(sum, ptr(op.inputs[1]), weight, ptr(out), sum, in.dtype, rows, in.cols, op.eps,
                                           s, p.quant());
                break;
            }
            case OpKind::kAllGather: {
                // NCCL gathers the ranks' shards one after another; the op concatenates them per row.
                const int64_t count = rows * in.cols;
                const size_t elem = dtype_size(in.dtype);
                if (!nccl_) {  // tp_size 1: the whole row is this rank's
                    CHECK_CUDA(cudaMemcpyAsync(ptr(out), ptr(in), static_cast<size_t>(count) * elem,
                                               cudaMemcpyDeviceToDevice, s));
                    break;
                }
                nccl_->all_gather(ptr(in), gather_scratch_.get(), in.dtype, count, s);
                kernels::concat_shards_cuda(gather_scratch_.get(), ptr(out), elem, rows, in.cols, op.tp_size, s);
                break;
            }
            case OpKind::kQuantize:
                kernels::quantize_cuda(ptr(in), in.dtype, ptr(out), *p.quant(), rows, in.cols, s);
                break;
            case OpKind::kFp8Linear:
            case OpKind::kInt8Linear:
                run_quant_linear(op, p, rows, s);
                break;
            case OpKind::kGatherRows:
                kernels::gather_rows_cuda(ptr(in), dev_i32(off_rows_), ptr(out), num_rows,
                                          in.cols * static_cast<int64_t>(dtype_size(in.dtype)), s);
                break;
        }
    }

    std::shared_ptr<const Model> model_;
    std::shared_ptr<NcclCommunicator> nccl_;  // null without tensor parallelism; outlives the graphs below
    int tokens_per_block_;
    int device_ = 0;
    std::unique_ptr<CudaStream> stream_;
    std::unique_ptr<kernels::CublasLtGemm> gemm_;
    TunedShapes<kernels::GemmTactic> tactics_;
    TunedShapes<kernels::WeightOnlyPath> weight_only_tactics_;
    DeviceBuffer weights_, arena_, kv_pool_, q_scratch_, partial_, decode_done_, gather_scratch_, reduce_scratch_;
    DeviceBuffer wo_scratch_;  // weight-only GEMMs past the GEMV's m: dequantized weight and x * pre_quant_scale
    std::vector<Prepared> prepared_;
    int64_t num_kv_blocks_ = 0, block_bytes_ = 0, kv_layer_bytes_ = 0;
    int max_requests_ = 0, max_blocks_per_seq_ = 0, num_sms_ = 1, tile_tokens_ = 0;
    size_t off_past_ = 0, off_new_ = 0, off_start_ = 0, off_table_ = 0, off_rows_ = 0, off_decode_ = 0, off_tiles_ = 0;
    size_t step_bytes_ = 0;
    PinnedBuffer step_host_, ids_host_, logits_host_, sample_params_host_, samples_host_;
    DeviceBuffer step_dev_, sample_params_dev_, samples_dev_;
    std::vector<int32_t> decode_, tiles_;
    bool graphs_enabled_ = true;
    std::vector<int> graph_buckets_;
    std::map<int, Graph> graphs_;
    bool profile_ = false;
    std::vector<CudaEvent> profile_events_;
    std::map<std::string, double> profile_ms_;
    std::map<std::string, int> profile_steps_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(std::shared_ptr<const Model> model, int64_t num_kv_blocks,
                                           int tokens_per_block, std::shared_ptr<NcclCommunicator> nccl,
                                           double free_gpu_memory_fraction, int64_t max_kv_blocks) {
    return std::make_unique<CudaBackend>(std::move(model), num_kv_blocks, tokens_per_block, std::move(nccl),
                                         free_gpu_memory_fraction, max_kv_blocks);
}

}  // namespace trtllm
