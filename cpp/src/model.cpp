#include "trtllm/model.h"

#include <cmath>
#include <stdexcept>
#include <utility>

namespace trtllm {

int64_t WeightView::numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

const WeightView* Op::weight(const std::string& role) const {
    auto it = weights.find(role);
    return it == weights.end() ? nullptr : &it->second;
}

namespace {

// The op set's names, the one table both directions read.
constexpr std::pair<const char*, OpKind> kOpNames[] = {
    {"embedding", OpKind::kEmbedding}, {"linear", OpKind::kLinear}, {"rms_norm", OpKind::kRmsNorm},
    {"layer_norm", OpKind::kLayerNorm}, {"add_rms_norm", OpKind::kAddRmsNorm},
    {"add_layer_norm", OpKind::kAddLayerNorm}, {"add", OpKind::kAdd}, {"silu_mul", OpKind::kSiluMul},
    {"gelu_tanh", OpKind::kGeluTanh}, {"attention", OpKind::kAttention}, {"all_reduce", OpKind::kAllReduce},
    {"all_gather", OpKind::kAllGather}, {"gather_rows", OpKind::kGatherRows},
    {"quantize", OpKind::kQuantize}, {"fp8_linear", OpKind::kFp8Linear}, {"int8_linear", OpKind::kInt8Linear},
    {"weight_only_linear", OpKind::kWeightOnlyLinear}, {"all_reduce_add_rms_norm", OpKind::kAllReduceAddRmsNorm},
};

OpKind op_kind(const std::string& name) {
    for (const auto& [op_name, kind] : kOpNames) {
        if (name == op_name) return kind;
    }
    throw EngineFormatError("op '" + name + "' is not in op set v" + std::to_string(kOpsetVersion));
}

kernels::RopeScaling rope_scaling(const Json& j) {
    if (j.is_null()) return kernels::RopeScaling::kNone;
    const std::string& s = j.as_string();
    if (s == "linear") return kernels::RopeScaling::kLinear;
    if (s == "llama3") return kernels::RopeScaling::kLlama3;
    throw EngineFormatError("unsupported rope scaling_type '" + s + "'");
}

}  // namespace

const char* op_kind_name(OpKind kind) {
    for (const auto& [name, k] : kOpNames) {
        if (k == kind) return name;
    }
    return "?";
}

std::shared_ptr<const Model> Model::load(const std::string& path, const std::string& expected_target) {
    auto model = std::shared_ptr<Model>(new Model());
    model->file_ = std::make_unique<EngineFile>(path);
    const EngineFile& file = *model->file_;
    Json meta;
    try {
        meta = Json::parse(file.metadata_json());
    } catch (const JsonError& e) {
        throw EngineFormatError(path + ": " + e.what());
    }
    try {
        const int64_t opset = meta.at("opset_version").as_int();
        if (opset < kOldestOpsetVersion || opset > kOpsetVersion) {
            throw EngineFormatError(path + ": engine uses op set v" + std::to_string(opset) + ", this runtime runs v" +
                                    std::to_string(kOldestOpsetVersion) + " to v" + std::to_string(kOpsetVersion) +
                                    "; rebuild the engine");
        }
        ModelInfo& info = model->info_;
        info.target = meta.at("target").as_string();
        if (!expected_target.empty() && info.target != expected_target) {
            throw EngineFormatError(path + ": engine was built for target '" + info.target + "', this runtime runs '" +
                                    expected_target + "'; rebuild the engine for '" + expected_target + "'");
        }
        info.sm_arch = meta.at("sm_arch").is_null() ? 0 : static_cast<int>(meta.at("sm_arch").as_int());
        const Json& mc = meta.at("model_config");
        const Json& build = meta.at("build_options");
        info.architecture = mc.at("architecture").as_string();
        info.dtype = dtype_from_name(mc.at("dtype").as_string());
        info.vocab_size = static_cast<int>(mc.at("vocab_size").as_int());
        info.vocab_size_padded = static_cast<int>(mc.at("vocab_size_padded").as_int());
        info.hidden_size = static_cast<int>(mc.at("hidden_size").as_int());
        info.num_layers = static_cast<int>(mc.at("num_hidden_layers").as_int());
        info.head_dim = static_cast<int>(mc.at("head_dim").as_int());
        info.kv_cache_dtype = info.dtype;
        if (mc.contains("quantization")) {
            const Json& kv = mc.at("quantization").get("kv_cache_quant_algo");
            if (!kv.is_null()) {
                if (kv.as_string() != "FP8") {
                    throw EngineFormatError(path + ": kv_cache_quant_algo '" + kv.as_string() + "' is not supported (FP8)");
                }
                info.kv_cache_dtype = DType::kFloat8E4M3;
            }
        }
        info.max_position_embeddings = static_cast<int>(mc.at("max_position_embeddings").as_int());
        info.tp_size = static_cast<int>(mc.at("mapping").at("tp_size").as_int());
        info.num_kv_heads = static_cast<int>(mc.at("num_key_value_heads").as_int()) / info.tp_size;
        info.tp_rank = static_cast<int>(build.at("tp_rank").as_int());
        info.max_batch_size = static_cast<int>(build.at("max_batch_size").as_int());
        info.max_num_tokens = static_cast<int>(build.at("max_num_tokens").as_int());
        info.max_seq_len = static_cast<int>(build.at("max_seq_len").as_int());
        info.gather_context_logits = build.get("gather_context_logits").kind() == Json::Kind::kBool &&
                                     build.get("gather_context_logits").as_bool();
        const Json& plan = meta.at("memory_plan");
        info.max_output_rows = static_cast<int>(plan.at("max_output_rows").as_int());
        model->arena_bytes_ = plan.at("arena_bytes").as_int();

        std::map<std::string, Slot> slots;
        for (const auto& [name, t] : plan.at("tensors").as_object()) {
            Slot s;
            s.name = name;
            s.offset = t.at("offset").as_int();
            s.dtype = dtype_from_name(t.at("dtype").as_string());
            const auto& shape = t.at("shape").as_array();
            if (shape.empty() || shape[0].kind() != Json::Kind::kString) {
                throw EngineFormatError(path + ": activation '" + name + "' has no symbolic leading dim");
            }
            const std::string& lead = shape[0].as_string();
            if (lead == "num_tokens") s.row_dim = RowDim::kNumTokens;
            else if (lead == "num_output_rows") s.row_dim = RowDim::kNumOutputRows;
            else throw EngineFormatError(path + ": unknown symbolic dim '" + lead + "'");
            for (size_t i = 1; i < shape.size(); ++i) s.cols *= shape[i].as_int();
            const int64_t max_rows = s.row_dim == RowDim::kNumTokens ? info.max_num_tokens : info.max_output_rows;
            if (s.offset < 0 || s.offset + max_rows * s.cols * static_cast<int64_t>(dtype_size(s.dtype)) >
                                    model->arena_bytes_) {
                throw EngineFormatError(path + ": activation '" + name + "' lies outside the arena");
            }
            slots[name] = s;
        }
        auto slot = [&](const std::string& name) -> const Slot& {
            auto it = slots.find(name);
            if (it == slots.end()) throw EngineFormatError(path + ": value '" + name + "' has no memory plan entry");
            return it->second;
        };
        model->input_ids_ = slot("input_ids");
        model->position_ids_ = slot("position_ids");
        model->logits_ = slot("logits");

        std::map<std::string, WeightView> weights;
        const auto* blob = file.data();
        for (const auto& [name, w] : meta.at("weights").as_object()) {
            WeightView v;
            v.dtype = dtype_from_name(w.at("dtype").as_string());
            for (const Json& d : w.at("shape").as_array()) v.shape.push_back(d.as_int());
            const int64_t offset = w.at("offset").as_int(), nbytes = w.at("nbytes").as_int();
            if (offset < 0 || nbytes != v.numel() * static_cast<int64_t>(dtype_size(v.dtype)) ||
                static_cast<uint64_t>(offset + nbytes) > file.data_size()) {
                throw EngineFormatError(path + ": weight '" + name + "' has an inconsistent size or lies outside the blob");
            }
            v.data = blob + offset;
            weights[name] = v;
        }

        for (const Json& j : meta.at("ops").as_array()) {
            Op op;
            op.kind = op_kind(j.at("op").as_string());
            for (const Json& n : j.at("inputs").as_array()) op.inputs.push_back(slot(n.as_string()));
            for (const Json& n : j.at("outputs").as_array()) op.outputs.push_back(slot(n.as_string()));
            for (const auto& [role, name] : j.at("weights").as_object()) {
                auto it = weights.find(name.as_string());
                if (it == weights.end()) throw EngineFormatError(path + ": op weight '" + name.as_string() + "' is missing");
                op.weights[role] = it->second;
            }
            const Json& attrs = j.at("attrs");
            if (attrs.contains("eps")) op.eps = static_cast<float>(attrs.at("eps").as_number());
            if (op.kind == OpKind::kAttention) {
                op.layer_idx = static_cast<int>(attrs.at("layer_idx").as_int());
                op.num_heads = static_cast<int>(attrs.at("num_heads").as_int());
                op.num_kv_heads = static_cast<int>(attrs.at("num_kv_heads").as_int());
                op.head_dim = static_cast<int>(attrs.at("head_dim").as_int());
                const Json& rope = attrs.get("rope");
                if (!rope.is_null()) {
                    op.has_rope = true;
                    op.rope.theta = static_cast<float>(rope.at("theta").as_number());
                    op.rope.scaling = rope_scaling(rope.get("scaling_type"));
                    op.rope.factor = static_cast<float>(rope.at("factor").as_number());
                    op.rope.low_freq_factor = static_cast<float>(rope.at("low_freq_factor").as_number());
                    op.rope.high_freq_factor = static_cast<float>(rope.at("high_freq_factor").as_number());
                    op.rope.original_max_position_embeddings =
                        static_cast<int>(rope.at("original_max_position_embeddings").as_int());
                }
                if (attrs.contains("qk_norm_eps")) op.qk_norm_eps = static_cast<float>(attrs.at("qk_norm_eps").as_number());
                if (op.layer_idx < 0 || op.layer_idx >= info.num_layers || op.num_kv_heads != info.num_kv_heads ||
                    op.head_dim != info.head_dim) {
                    throw EngineFormatError(path + ": attention op attributes disagree with the model config");
                }
            }
            if (op.kind == OpKind::kAllGather) op.tp_size = static_cast<int>(attrs.at("tp_size").as_int());
            if (op.kind == OpKind::kWeightOnlyLinear) {
                op.weight_bits = static_cast<int>(attrs.at("weight_bits").as_int());
                op.group_size = attrs.at("group_size").as_int();
                op.weight_layout = attrs.at("weight_layout").as_string();
                const std::string& layout = op.weight_layout;
                if (layout != "row_major" && expected_target == "cpu") {
                    throw EngineFormatError(path + ": weight_only_linear weight_layout '" + layout +
                                            "' is not runnable on the CPU backend (needs row_major)");
                }
            }
            if (op.kind == OpKind::kAttention && (op.weight("kv_scale") != nullptr) !=
                                                     (info.kv_cache_dtype == DType::kFloat8E4M3)) {
                throw EngineFormatError(path + ": attention op kv_scale disagrees with kv_cache_quant_algo");
            }
            model->ops_.push_back(std::move(op));
        }
    } catch (const JsonError& e) {
        throw EngineFormatError(path + ": malformed engine metadata: " + e.what());
    } catch (const std::invalid_argument& e) {
        throw EngineFormatError(path + ": " + e.what());
    }
    return model;
}

}  // namespace trtllm
