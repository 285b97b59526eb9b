// `weight_only_linear` on the GPU (W8A16 / W4A16, AWQ): docs/opset.md, weight layout
// "cuda_k_interleaved_v1" (written at build time by trtllm_build/passes/weight_layout.py):
//
//   weight: uint8, each row of K inputs in K (int8) or K / 2 (int4) bytes, values in offset binary
//           (u = q + 128, resp. q + 8). int4: every 32-bit word (little endian) holds 8 consecutive
//           inputs e = 0..7 with input e in nibble (e % 2) * 4 + e / 2, so that (word >> 4j) & 0x000f000f
//           puts inputs 2j and 2j + 1 in the two 16-bit halves at once.
//   weight_scale: [N, K / G] in the activation dtype (unchanged).
//
// Layout "cuda_mma_tiles_v1" (n % 16 == 0; k and G multiples of the tile's TI inputs, 64 for int4
// and 32 for int8; the builder's choice where it applies): the same offset-binary values ordered as
// the A operand of mma.m16n8k16. Tile (r, c) = rows 16r..16r+15 x inputs TI c..TI c + TI - 1, 512
// bytes at (r * k/TI + c) * 512; lane l = 4g + t of a warp owns its bytes 16l..16l+15, four 32-bit
// words. int4: word j holds, with kk = 64c + 16t + 4j, pair p in nibbles p (first input) and p + 4
// (second): p0 = row g, inputs kk, kk+1; p1 = row g+8, kk, kk+1; p2 = row g, kk+2, kk+3; p3 = row
// g+8, kk+2, kk+3. int8: words 2j and 2j + 1 hold rows g and g + 8, inputs kk..kk+3 in bytes 0..3,
// with kk = 32c + 8t + 4j.
//
// Two paths compute the same y (the same dequantized weights, float32 sums):
//   GEMV (m <= weight_only_gemv_max_rows: 16, or 128 in the tile layout): reads each weight row
//     once, in 16-byte coalesced vectors, dequantizes in registers with paired 16-bit math (w =
//     round(q * s), one rounding, as the op set says) and accumulates in float32: bandwidth-bound
//     at decode sizes. On the interleaved layout the CUDA cores multiply; on the tile layout the
//     tensor cores do (mma.m16n8k16, x's rows as B's columns), which keeps m = 2..16 about as fast
//     as m = 1;
//   dequantize + cuBLASLt: the whole weight is dequantized (same arithmetic) into a scratch
//     [N, K] and cuBLASLt runs the GEMM: for prefill.
// The builder times both per m bucket (autotune_weight_only) and records the faster in the engine;
// without a recorded choice the GEMV runs up to kWeightOnlyDefaultGemvRows.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "gemm/gemm_cuda.h"
#include "trtllm/dtype.h"

namespace trtllm::kernels {

inline constexpr const char* kCudaWeightLayout = "cuda_k_interleaved_v1";
inline constexpr const char* kCudaMmaTileLayout = "cuda_mma_tiles_v1";
// The CUDA layout named `layout`: true for kCudaMmaTileLayout, false for kCudaWeightLayout;
// std::invalid_argument for anything else (row_major is the CPU's).
bool weight_only_mma_tiles_from_name(const std::string& layout);
constexpr int64_t kWeightOnlyGemvMaxRows = 16;
// The tile GEMV takes x in chunks of 16 rows (each chunk re-reads the tiles from the L2): prompts of
// up to this many tokens may run it where the build timed it faster than dequantize + cuBLASLt.
constexpr int64_t kWeightOnlyTileGemvMaxRows = 128;
constexpr int64_t kWeightOnlyDefaultGemvRows = 8;

enum class WeightOnlyPath : int32_t { kGemv, kDequantGemm };
const char* weight_only_path_name(WeightOnlyPath path);             // "gemv" / "dequant_gemm"
WeightOnlyPath weight_only_path_from_name(const std::string& name);  // std::invalid_argument if unknown
// Rows of x given a pre_quant_scale at a time on the cuBLASLt path (bounds the scratch for x * s).
constexpr int64_t kWeightOnlyChunkRows = 1024;

// One weight_only_linear's device tensors (layout above).
struct WeightOnlyGemmCuda {
    int64_t n = 0, k = 0;
    int weight_bits = 8;                   // 8 or 4
    int64_t group_size = 0;                // G: divides k, a multiple of the inputs per 16-byte vector
    DType dtype = DType::kBFloat16;        // activations, scales and bias: bfloat16 or float16
    DType out_dtype = DType::kBFloat16;    // y: dtype, or float32 (a quantized lm_head's logits; no bias then)
    const void* weight = nullptr;
    const void* scale = nullptr;           // [n, k / G]
    const void* pre_quant_scale = nullptr; // [k] or nullptr
    const void* bias = nullptr;            // [n] or nullptr
    bool mma_tiles = false;                // weight in kCudaMmaTileLayout (else kCudaWeightLayout)
};

// Throws std::invalid_argument unless the kernels can run `w` (dtype, bits, k and G multiples of
// the inputs per 16-byte vector: 16 for int8, 32 for int4; the tile layout's bounds above).
void check_weight_only_gemm(const WeightOnlyGemmCuda& w);

// The most rows of x the GEMV path takes for `w` (kWeightOnlyGemvMaxRows, kWeightOnlyTileGemvMaxRows).
int64_t weight_only_gemv_max_rows(const WeightOnlyGemmCuda& w);

// Scratch elements (of the activation dtype) the dequantize + cuBLASLt path needs for up to max_m
// rows: the dequantized weight, then x * pre_quant_scale for up to kWeightOnlyChunkRows rows.
int64_t weight_only_scratch_elems(const WeightOnlyGemmCuda& w, int64_t max_m);

// y [m, n] = round(x' · wᵀ + bias) in out_dtype, x [m, k] (all device pointers). `path`: the
// recorded choice for this m (a GEMV choice past weight_only_gemv_max_rows is ignored), or nullptr
// for the default. `scratch` holds weight_only_scratch_elems(w, m) elements (unused by the GEMV).
void weight_only_gemm_cuda(const WeightOnlyGemmCuda& w, const void* x, void* y, int64_t m, void* scratch,
                           CublasLtGemm& gemm, cudaStream_t stream, const WeightOnlyPath* path = nullptr);

struct WeightOnlyTuned {
    int64_t m = 0;
    WeightOnlyPath path = WeightOnlyPath::kGemv;
    float gemv_us = 0.0f;     // 0 where the GEMV does not apply (m > weight_only_gemv_max_rows)
    float dequant_us = 0.0f;
};
// Times both paths at each m on synthetic weights of w's shape (w's pointers are ignored) on the
// current device; returns the faster per m.
std::vector<WeightOnlyTuned> autotune_weight_only(const WeightOnlyGemmCuda& w, const std::vector<int64_t>& ms,
                                                  int reps);

}  // namespace trtllm::kernels
