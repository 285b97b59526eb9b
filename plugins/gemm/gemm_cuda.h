// GEMM for `linear` on the GPU through cuBLASLt: y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n]),
// float32 accumulation (bf16/fp16 operands on the tensor cores; float32 operands without TF32,
// so fp32 engines stay exact to float32 rounding). The bias is added in cuBLASLt's epilogue.
//
// Build-time tactic selection: autotune() times cuBLASLt's candidate algorithms (and, for
// decode-sized m, our GEMV kernel) for a shape at a few m and returns the fastest; the builder
// records them in the engine (`tactics`): "gemv", or the opaque 64-byte cublasLtMatmulAlgo_t in
// hex, tied to the cuBLASLt version that chose it. run() uses a recorded algorithm when cuBLASLt
// accepts it for the actual m (AlgoCheck), else the heuristic's first choice; either way the
// decision is made once per (shape, m) and cached.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "trtllm/cuda_utils.h"
#include "trtllm/dtype.h"

namespace trtllm::kernels {

struct GemmShape {
    int64_t n = 0, k = 0;
    DType x_dtype = DType::kBFloat16;   // activations and weight
    DType y_dtype = DType::kBFloat16;   // output: the activation dtype, or float32 (logits)
    bool has_bias = false;              // bias [n] in y_dtype

    // The key tactics are recorded under, e.g. "2048x4096:bfloat16:float32:bias".
    std::string key() const;
};

// A GEMM tactic: a cuBLASLt algorithm, or our GEMV kernel for decode-sized m (<= kGemvMaxRows
// rows of bf16/fp16 activations: every weight element is read once, in 16-byte vectors, for
// all the rows, by one warp per output column).
constexpr int64_t kGemvMaxRows = 4;
struct GemmTactic {
    bool gemv = false;
    cublasLtMatmulAlgo_t algo{};
};
std::string gemm_algo_to_hex(const cublasLtMatmulAlgo_t& algo);
cublasLtMatmulAlgo_t gemm_algo_from_hex(const std::string& hex);  // std::invalid_argument if malformed
// "gemv", or the 64 bytes of the cuBLASLt algorithm in hex.
std::string gemm_tactic_to_string(const GemmTactic& tactic);
// Throws std::invalid_argument on a malformed string.
GemmTactic gemm_tactic_from_string(const std::string& text);
// Whether the GEMV kernel can run this shape at m.
bool gemv_supported(const GemmShape& shape, int64_t m);

class CublasLtGemm {
public:
    explicit CublasLtGemm(size_t workspace_bytes = size_t{32} << 20);
    ~CublasLtGemm();
    CublasLtGemm(const CublasLtGemm&) = delete;
    CublasLtGemm& operator=(const CublasLtGemm&) = delete;

    // `tactic` may be null (cuBLASLt's heuristic). A GEMV tactic applies where gemv_supported(),
    // cuBLASLt runs the rest. Device pointers; enqueued on `stream`.
    void run(const GemmShape& shape, int64_t m, const void* x, const void* w, const void* bias, void* y,
             const GemmTactic* tactic, cudaStream_t stream);

    struct Tuned {
        int64_t m = 0;
        GemmTactic tactic;
        float best_us = 0.0f;      // the chosen algorithm
        float default_us = 0.0f;   // the heuristic's first choice
        int candidates = 0;
    };
    // Times up to `max_algos` heuristic candidates at each m, and the GEMV kernel where it
    // applies (random inputs, never zeros).
    std::vector<Tuned> autotune(const GemmShape& shape, const std::vector<int64_t>& ms, int max_algos, int reps);

    static size_t version() { return cublasLtGetVersion(); }

private:
    struct Plan;
    Plan& plan(const GemmShape& shape, int64_t m, const cublasLtMatmulAlgo_t* preferred);

    cublasLtHandle_t handle_ = nullptr;
    DeviceBuffer workspace_;
    std::map<std::string, std::unique_ptr<Plan>> plans_;
};

}  // namespace trtllm::kernels
