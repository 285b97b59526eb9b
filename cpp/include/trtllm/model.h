// An engine file turned into a program the backends run: the op list with its arena slots,
// weight views into the mapping and per-op parameters. Parses the metadata JSON (op set v2; v1
// engines, a subset, load too).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "trtllm/dtype.h"
#include "trtllm/engine_file.h"
#include "trtllm/json.h"
#include "attention/attention.h"

namespace trtllm {

inline constexpr int kOpsetVersion = 3;
inline constexpr int kOldestOpsetVersion = 1;  // v2 and v3 only added ops and optional quantization roles

enum class OpKind {
    kEmbedding, kLinear, kRmsNorm, kLayerNorm, kAddRmsNorm, kAddLayerNorm, kAdd, kSiluMul, kGeluTanh,
    kAttention, kAllReduce, kAllGather, kGatherRows,
    kQuantize, kFp8Linear, kInt8Linear, kWeightOnlyLinear,   // op set v2
    kAllReduceAddRmsNorm,                                    // op set v3
};

// The op's name in the engine's op list ("linear", ...).
const char* op_kind_name(OpKind kind);

// Leading dim of an activation: bound per iteration.
enum class RowDim { kNumTokens, kNumOutputRows };

// An activation in the arena: [rows, cols], rows given by `row_dim` at run time.
struct Slot {
    std::string name;
    int64_t offset = 0;
    DType dtype = DType::kFloat32;
    RowDim row_dim = RowDim::kNumTokens;
    int64_t cols = 1;
};

struct WeightView {
    const void* data = nullptr;
    DType dtype = DType::kFloat32;
    std::vector<int64_t> shape;
    int64_t numel() const;
};

struct Op {
    OpKind kind = OpKind::kAdd;
    std::vector<Slot> inputs, outputs;
    std::map<std::string, WeightView> weights;   // by role: weight, bias, q_norm, k_norm
    float eps = 0.0f;
    // attention
    int layer_idx = -1, num_heads = 0, num_kv_heads = 0, head_dim = 0;
    bool has_rope = false;
    kernels::RopeParams rope;
    float qk_norm_eps = 0.0f;
    int tp_size = 1;                             // all_gather
    // weight_only_linear
    int weight_bits = 0;
    int64_t group_size = 0;
    std::string weight_layout;                   // "row_major" (CPU) or kernels::kCudaWeightLayout

    const WeightView* weight(const std::string& role) const;
};

struct ModelInfo {
    std::string architecture;
    DType dtype = DType::kFloat32;
    int vocab_size = 0, vocab_size_padded = 0, hidden_size = 0, num_layers = 0;
    int num_kv_heads = 0;          // on this rank
    int head_dim = 0;
    DType kv_cache_dtype = DType::kFloat32;   // the activation dtype, or float8_e4m3fn (FP8 KV cache)
    int max_position_embeddings = 0;
    int tp_size = 1, tp_rank = 0;
    // build limits
    int max_batch_size = 0, max_num_tokens = 0, max_seq_len = 0, max_output_rows = 0;
    bool gather_context_logits = false;
    std::string target;
    int sm_arch = 0;
};

class Model {
public:
    // Opens, validates and parses the engine. `expected_target` "cpu" or "cuda"; "" takes the engine's.
    static std::shared_ptr<const Model> load(const std::string& path, const std::string& expected_target);

    const ModelInfo& info() const { return info_; }
    const std::vector<Op>& ops() const { return ops_; }
    int64_t arena_bytes() const { return arena_bytes_; }
    const Slot& input_ids() const { return input_ids_; }
    const Slot& position_ids() const { return position_ids_; }
    const Slot& logits() const { return logits_; }
    const EngineFile& file() const { return *file_; }

private:
    std::unique_ptr<EngineFile> file_;
    ModelInfo info_;
    std::vector<Op> ops_;
    int64_t arena_bytes_ = 0;
    Slot input_ids_, position_ids_, logits_;
};

}  // namespace trtllm
