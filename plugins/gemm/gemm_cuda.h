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
//
// Quantized GEMMs (op set v2's fp8_linear and int8_linear) run through the same class: a shape
// whose x_dtype is float8_e4m3fn or int8 (the weight's dtype too) takes GemmScales. FP8: cuBLASLt
// E4M3 x E4M3 with float32 accumulation, alpha = input_scale * weight_scale as its scalar, the bias
// in its epilogue. INT8: cuBLASLt int8 x int8 -> exact int32 into a scratch (row chunks of at most
// kInt8ScratchBytes; fewer than 32 rows padded with zero rows), then our epilogue
// y = round(float(acc) * alpha[n] + bias), the op contract's roundings exactly. Both need
// k % 16 == 0 and n % 16 == 0 (cuBLASLt's 16-byte leading dimensions and our GEMV's 16-byte
// loads); the CUDA backend rejects other shapes at engine load.
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
    DType x_dtype = DType::kBFloat16;   // activations and weight (float8_e4m3fn / int8: a quantized GEMM)
    DType y_dtype = DType::kBFloat16;   // output: the activation dtype, or float32 (logits)
    bool has_bias = false;              // bias [n] in y_dtype

    // The key tactics are recorded under, e.g. "2048x4096:bfloat16:float32:bias".
    std::string key() const;
};

// The scales of a quantized GEMM: y = acc * alpha (+ bias), alpha = fl(input_scale * weight_scale).
struct GemmScales {
    float alpha = 1.0f;                  // fp8: the per-tensor alpha
    const float* alpha_per_n = nullptr;  // int8: device float32 [n]
};

bool is_quantized_gemm(const GemmShape& shape);
// Throws std::invalid_argument (naming the shape) unless a quantized shape meets the alignment
// above and writes bf16, fp16 or float32.
void check_quantized_gemm_shape(const GemmShape& shape);
constexpr size_t kInt8ScratchBytes = size_t{64} << 20;

// A GEMM tactic: a cuBLASLt algorithm, or our GEMV kernel for decode-sized m (<= kGemvMaxRows
// rows of bf16/fp16, fp8 or int8 activations: every weight element is read once, in 16-byte
// vectors, for all the rows; one warp per output column, four for fp8 / int8).
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
    // cuBLASLt runs the rest. Device pointers; enqueued on `stream`. `scales`: quantized shapes only.
    void run(const GemmShape& shape, int64_t m, const void* x, const void* w, const void* bias, void* y,
             const GemmTactic* tactic, cudaStream_t stream, const GemmScales* scales = nullptr);

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
    // One cublasLtMatmul with the plan's descriptors; y is int32 for int8 shapes.
    cublasStatus_t matmul(const Plan& p, const cublasLtMatmulAlgo_t& algo, const GemmShape& shape, const void* x,
                          const void* w, void* y, const GemmScales* scales, cudaStream_t stream);
    void run_int8(const GemmShape& shape, int64_t m, const void* x, const void* w, const void* bias, void* y,
                  const cublasLtMatmulAlgo_t* preferred, const GemmScales& scales, cudaStream_t stream);

    cublasLtHandle_t handle_ = nullptr;
    DeviceBuffer workspace_;
    DeviceBuffer int32_scratch_;  // int8 accumulators, kInt8ScratchBytes, made on the first int8 GEMM
    DeviceBuffer int8_padded_x_;  // int8 x of fewer than 32 rows, padded with zero rows for cuBLASLt
    std::map<std::string, std::unique_ptr<Plan>> plans_;
};

}  // namespace trtllm::kernels
