#include "gemm/gemm_cuda.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "cuda_common.cuh"
#include "elementwise/elementwise_cuda.h"
#include "gemm/quant_gemm_cuda.h"

namespace trtllm::kernels {
namespace {

void check_lt(cublasStatus_t status, const char* what, const char* file, int line) {
    if (status != CUBLAS_STATUS_SUCCESS) {
        throw CudaError(std::string("cuBLASLt error: ") + what + " failed at " + file + ":" + std::to_string(line) +
                        ": status " + std::to_string(static_cast<int>(status)));
    }
}
#define CHECK_CUBLAS(call) check_lt((call), #call, __FILE__, __LINE__)

cudaDataType_t cuda_type(DType dt) {
    switch (dt) {
        case DType::kFloat32: return CUDA_R_32F;
        case DType::kBFloat16: return CUDA_R_16BF;
        case DType::kFloat16: return CUDA_R_16F;
        case DType::kFloat8E4M3: return CUDA_R_8F_E4M3;
        case DType::kInt8: return CUDA_R_8I;
        default: throw std::invalid_argument(std::string("cuBLASLt GEMM: unsupported dtype ") + dtype_name(dt));
    }
}

// Uniform values in [-1, 1) from a hash of the index: timing inputs that are not zeros.
template <class T>
__global__ void fill_random_kernel(T* p, int64_t n, uint32_t seed) {
    for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
        uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
        h ^= h >> 16;
        h *= 0x7feb352du;
        h ^= h >> 15;
        p[i] = cuda::from_float<T>(static_cast<float>(h & 0xffffu) / 32768.0f - 1.0f);
    }
}

void fill_random(void* p, DType dt, int64_t n, uint32_t seed, cudaStream_t stream) {
    TRTLLM_DISPATCH_FLOAT(dt, T, { fill_random_kernel<T><<<cuda::blocks_for(n, 256), 256, 0, stream>>>(static_cast<T*>(p), n, seed); });
    CHECK_LAUNCH("fill_random_kernel");
}

// y[mi, j] = w[j, :] · x[mi, :] (+ bias[j]) for mi < M: one warp per output column j; each
// lane reads 16-byte vectors of the weight row, four in flight (a step), and uses each for all M rows.
// The weights load evict-first (__ldcs: each byte is read once, so the L2 keeps what the next kernels
// read): TP=2 8B decode on 2 H100s 282.8 -> 289.4 tok/s against plain loads (session 23). Loading
// the first step before the wait took 54 registers instead of 34 and gained nothing more.
// Launched early (cuda_common.cuh): x is not __restrict__, so that it is never read through the
// non-coherent path (ld.global.nc), which ptxas may move above griddepcontrol.wait.
template <class T, class TY, int M>
__global__ void gemv_kernel(const T* x, const T* __restrict__ w, const TY* __restrict__ bias,
                            TY* __restrict__ y, int n, int k) {
    constexpr int V = cuda::kVec<T>;
    constexpr int kUnroll = 4;
    constexpr int kStep = kUnroll * 32 * V;  // elements of a row per warp step
    const int j = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (j >= n) return;  // no activation touched: the block's other warps wait
    const int lane = threadIdx.x % 32;
    const T* wr = w + int64_t{j} * k + lane * V;
    const T* xr = x + lane * V;
    float acc[M];
#pragma unroll
    for (int mi = 0; mi < M; ++mi) acc[mi] = 0.0f;
    const int steps = k / kStep;
    cuda::wait_for_prior_kernels();
    for (int s = 0; s < steps; ++s) {
        uint4 wv[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) wv[u] = __ldcs(reinterpret_cast<const uint4*>(wr + s * kStep + u * 32 * V));
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
            const T* e = reinterpret_cast<const T*>(&wv[u]);
#pragma unroll
            for (int mi = 0; mi < M; ++mi) {
                float xf[V];
                cuda::load_vec(xr + int64_t{mi} * k + s * kStep + u * 32 * V, xf);
#pragma unroll
                for (int i = 0; i < V; ++i) acc[mi] += cuda::to_float(e[i]) * xf[i];
            }
        }
    }
    cuda::let_next_kernel_start();  // the kernel after may place its blocks while the sums are added
    for (int x0 = steps * kStep; x0 + lane * V < k; x0 += 32 * V) {  // k's last part, under a step
        float wf[V];
        cuda::load_vec(wr + x0, wf);
#pragma unroll
        for (int mi = 0; mi < M; ++mi) {
            float xf[V];
            cuda::load_vec(xr + int64_t{mi} * k + x0, xf);
#pragma unroll
            for (int i = 0; i < V; ++i) acc[mi] += wf[i] * xf[i];
        }
    }
#pragma unroll
    for (int mi = 0; mi < M; ++mi) acc[mi] = cuda::warp_sum(acc[mi]);
    if (lane == 0) {
        const float b = bias != nullptr ? cuda::to_float(bias[j]) : 0.0f;
#pragma unroll
        for (int mi = 0; mi < M; ++mi) y[int64_t{mi} * n + j] = cuda::from_float<TY>(acc[mi] + b);
    }
}

template <class T, class TY>
void launch_gemv(int64_t m, const void* x, const void* w, const void* bias, void* y, int64_t n, int64_t k,
                 cudaStream_t stream) {
    constexpr int kWarps = 4;
    const dim3 grid(static_cast<unsigned>((n + kWarps - 1) / kWarps));
    const auto* xp = static_cast<const T*>(x);
    const auto* wp = static_cast<const T*>(w);
    const auto* bp = static_cast<const TY*>(bias);
    auto* yp = static_cast<TY*>(y);
    const int ni = static_cast<int>(n), ki = static_cast<int>(k);
    auto launch = [&](auto kernel) {
        cuda::launch_after_prior("gemv_kernel", kernel, grid, kWarps * 32, 0, stream, xp, wp, bp, yp, ni, ki);
    };
    switch (m) {
        case 1: launch(gemv_kernel<T, TY, 1>); break;
        case 2: launch(gemv_kernel<T, TY, 2>); break;
        case 3: launch(gemv_kernel<T, TY, 3>); break;
        default: launch(gemv_kernel<T, TY, 4>); break;
    }
}

void gemv(const GemmShape& s, int64_t m, const void* x, const void* w, const void* bias, void* y, cudaStream_t stream) {
    if (s.x_dtype == DType::kBFloat16) {
        if (s.y_dtype == DType::kFloat32) launch_gemv<__nv_bfloat16, float>(m, x, w, bias, y, s.n, s.k, stream);
        else launch_gemv<__nv_bfloat16, __nv_bfloat16>(m, x, w, bias, y, s.n, s.k, stream);
    } else {
        if (s.y_dtype == DType::kFloat32) launch_gemv<__half, float>(m, x, w, bias, y, s.n, s.k, stream);
        else launch_gemv<__half, __half>(m, x, w, bias, y, s.n, s.k, stream);
    }
}

// cuBLASLt's int8 GEMM wants more than 16 rows of x (torch._int_mm refuses m <= 16 for this
// reason): fewer rows run padded with zero rows to this many, and only the real rows are kept.
constexpr int64_t kInt8MinRows = 32;

int64_t lt_rows(const GemmShape& s, int64_t m) { return s.x_dtype == DType::kInt8 ? std::max(m, kInt8MinRows) : m; }

// Heuristic preferences: our workspace, and split-K partial sums added in float32 (in the
// workspace) or not split at all. cuBLASLt may otherwise add them in the output type (bf16),
// rounding more than once, against the op set's "accumulate in float32, round once".
cublasLtMatmulPreference_t make_preference(uint64_t workspace_bytes) {
    cublasLtMatmulPreference_t pref = nullptr;
    CHECK_CUBLAS(cublasLtMatmulPreferenceCreate(&pref));
    CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
                                                      sizeof(workspace_bytes)));
    const uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
    CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &schemes,
                                                      sizeof(schemes)));
    return pref;
}

}  // namespace

bool is_quantized_gemm(const GemmShape& s) { return s.x_dtype == DType::kFloat8E4M3 || s.x_dtype == DType::kInt8; }

void check_quantized_gemm_shape(const GemmShape& s) {
    const bool y_ok = s.y_dtype == DType::kBFloat16 || s.y_dtype == DType::kFloat16 || s.y_dtype == DType::kFloat32;
    if (!is_quantized_gemm(s) || !y_ok || s.k <= 0 || s.n <= 0 || s.k % 16 != 0 || s.n % 16 != 0 ||
        s.n >= (int64_t{1} << 31) || s.k >= (int64_t{1} << 31)) {
        throw std::invalid_argument("quantized GEMM " + s.key() +
                                    ": the CUDA backend needs fp8 / int8 inputs, a bf16 / fp16 / float32 output and "
                                    "n, k multiples of 16 (cuBLASLt's 16-byte leading dimensions)");
    }
}

bool gemv_supported(const GemmShape& s, int64_t m) {
    if (is_quantized_gemm(s)) {
        return m >= 1 && m <= kGemvMaxRows && s.k % 16 == 0 && s.n % 16 == 0 &&
               quant_gemv_supported(s.x_dtype == DType::kInt8);
    }
    const bool half = s.x_dtype == DType::kBFloat16 || s.x_dtype == DType::kFloat16;
    return half && (s.y_dtype == s.x_dtype || s.y_dtype == DType::kFloat32) && m >= 1 && m <= kGemvMaxRows &&
           s.k % 8 == 0 && s.n < (int64_t{1} << 31) && s.k < (int64_t{1} << 31);
}

std::string gemm_tactic_to_string(const GemmTactic& t) { return t.gemv ? "gemv" : gemm_algo_to_hex(t.algo); }

GemmTactic gemm_tactic_from_string(const std::string& text) {
    GemmTactic t;
    if (text == "gemv") {
        t.gemv = true;
    } else {
        t.algo = gemm_algo_from_hex(text);
    }
    return t;
}

std::string GemmShape::key() const {
    return std::to_string(n) + "x" + std::to_string(k) + ":" + dtype_name(x_dtype) + ":" + dtype_name(y_dtype) + ":" +
           (has_bias ? "bias" : "nobias");
}

std::string gemm_algo_to_hex(const cublasLtMatmulAlgo_t& algo) {
    static const char* digits = "0123456789abcdef";
    const auto* bytes = reinterpret_cast<const unsigned char*>(&algo);
    std::string s;
    for (size_t i = 0; i < sizeof(algo); ++i) {
        s += digits[bytes[i] >> 4];
        s += digits[bytes[i] & 15];
    }
    return s;
}

cublasLtMatmulAlgo_t gemm_algo_from_hex(const std::string& hex) {
    cublasLtMatmulAlgo_t algo{};
    if (hex.size() != 2 * sizeof(algo)) {
        throw std::invalid_argument("GEMM tactic must be " + std::to_string(2 * sizeof(algo)) + " hex digits, got " +
                                    std::to_string(hex.size()));
    }
    auto* bytes = reinterpret_cast<unsigned char*>(&algo);
    auto nibble = [&](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        throw std::invalid_argument("GEMM tactic has a non-hex character '" + std::string(1, c) + "'");
    };
    for (size_t i = 0; i < sizeof(algo); ++i) bytes[i] = static_cast<unsigned char>(nibble(hex[2 * i]) * 16 + nibble(hex[2 * i + 1]));
    return algo;
}

// Descriptors of one (shape, m) and the algorithm it runs with. Column-major view of the
// row-major product: Dᵀ[n, m] = W[k, n]ᵀ · Xᵀ[k, m], so A = W (transposed), B = X.
struct CublasLtGemm::Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool bias_epilogue = false;
    ~Plan() {
        if (d) cublasLtMatrixLayoutDestroy(d);
        if (b) cublasLtMatrixLayoutDestroy(b);
        if (a) cublasLtMatrixLayoutDestroy(a);
        if (desc) cublasLtMatmulDescDestroy(desc);
    }
};

CublasLtGemm::CublasLtGemm(size_t workspace_bytes) : workspace_(workspace_bytes) {
    CHECK_CUBLAS(cublasLtCreate(&handle_));
}

CublasLtGemm::~CublasLtGemm() {
    plans_.clear();
    if (handle_) cublasLtDestroy(handle_);
}

CublasLtGemm::Plan& CublasLtGemm::plan(const GemmShape& s, int64_t m, const cublasLtMatmulAlgo_t* preferred) {
    std::string key = s.key() + ":" + std::to_string(m);
    if (preferred) key += ":" + gemm_algo_to_hex(*preferred);
    auto it = plans_.find(key);
    if (it != plans_.end()) return *it->second;

    auto p = std::make_unique<Plan>();
    // int8: exact int32 accumulators out (our epilogue scales them); everything else float32 compute.
    const bool int8 = s.x_dtype == DType::kInt8;
    const cudaDataType_t xt = cuda_type(s.x_dtype), yt = int8 ? CUDA_R_32I : cuda_type(s.y_dtype);
    CHECK_CUBLAS(cublasLtMatmulDescCreate(&p->desc, int8 ? CUBLAS_COMPUTE_32I : CUBLAS_COMPUTE_32F,
                                          int8 ? CUDA_R_32I : CUDA_R_32F));
    const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
    CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
    CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&p->a, xt, static_cast<uint64_t>(s.k), static_cast<uint64_t>(s.n), s.k));
    CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&p->b, xt, static_cast<uint64_t>(s.k), static_cast<uint64_t>(m), s.k));
    CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&p->d, yt, static_cast<uint64_t>(s.n), static_cast<uint64_t>(m), s.n));

    cublasLtMatmulPreference_t pref = make_preference(workspace_.bytes());
    const uint64_t ws = workspace_.bytes();
    auto find_algo = [&]() -> bool {
        uint32_t scheme = CUBLASLT_REDUCTION_SCHEME_NONE;
        size_t written = 0;
        if (preferred && cublasLtMatmulAlgoConfigGetAttribute(preferred, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme,
                                                              sizeof(scheme), &written) == CUBLAS_STATUS_SUCCESS &&
            (scheme & ~uint32_t{CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE}) != 0) {
            preferred = nullptr;  // a split-K sum in the output type (see make_preference): not ours to run
        }
        if (preferred) {
            cublasLtMatmulHeuristicResult_t check{};
            if (cublasLtMatmulAlgoCheck(handle_, p->desc, p->a, p->b, p->d, p->d, preferred, &check) ==
                    CUBLAS_STATUS_SUCCESS &&
                check.workspaceSize <= ws) {
                p->algo = *preferred;
                return true;
            }
        }
        cublasLtMatmulHeuristicResult_t result{};
        int found = 0;
        const cublasStatus_t st =
            cublasLtMatmulAlgoGetHeuristic(handle_, p->desc, p->a, p->b, p->d, p->d, pref, 1, &result, &found);
        if (st != CUBLAS_STATUS_SUCCESS || found == 0) return false;
        p->algo = result.algo;
        return true;
    };
    bool ok = false;
    // cuBLASLt reads an fp8 GEMM's bias as bf16 when D is float32, so a float32 bias there is added by our own
    // kernel after the GEMM (the same fl(fl(acc·alpha) + bias) either way).
    const bool fp8_f32 = s.x_dtype == DType::kFloat8E4M3 && s.y_dtype == DType::kFloat32;
    if (s.has_bias && !int8 && !fp8_f32) {
        const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
        p->bias_epilogue = ok = find_algo();
        if (!ok) {  // no kernel with the bias epilogue for this shape: add the bias separately
            const cublasLtEpilogue_t none = CUBLASLT_EPILOGUE_DEFAULT;
            CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &none, sizeof(none)));
        }
    }
    if (!ok) ok = find_algo();
    cublasLtMatmulPreferenceDestroy(pref);
    if (!ok) throw CudaError("cuBLASLt has no algorithm for GEMM " + s.key() + " at m=" + std::to_string(m));
    return *(plans_[key] = std::move(p));
}

cublasStatus_t CublasLtGemm::matmul(const Plan& p, const cublasLtMatmulAlgo_t& algo, const GemmShape& s,
                                    const void* x, const void* w, void* y, const GemmScales* scales,
                                    cudaStream_t stream) {
    if (s.x_dtype == DType::kInt8) {  // int32 scalars with int32 compute; alpha is applied in our epilogue
        const int32_t alpha = 1, beta = 0;
        return cublasLtMatmul(handle_, p.desc, &alpha, w, p.a, x, p.b, &beta, y, p.d, y, p.d, &algo, workspace_.get(),
                              workspace_.bytes(), stream);
    }
    // fp8: alpha = fl(input_scale * weight_scale), so D = fl(acc * alpha) (+ bias), as the op says.
    const float alpha = scales != nullptr ? scales->alpha : 1.0f, beta = 0.0f;
    return cublasLtMatmul(handle_, p.desc, &alpha, w, p.a, x, p.b, &beta, y, p.d, y, p.d, &algo, workspace_.get(),
                          workspace_.bytes(), stream);
}

void CublasLtGemm::run_int8(const GemmShape& s, int64_t m, const void* x, const void* w, const void* bias, void* y,
                            const cublasLtMatmulAlgo_t* preferred, const GemmScales& scales, cudaStream_t stream) {
    // Made on the first int8 GEMM, an eager run: a CUDA graph captures a bucket only after running it eagerly.
    if (int32_scratch_.bytes() == 0) int32_scratch_ = DeviceBuffer(kInt8ScratchBytes);
    const int64_t chunk = std::max(kInt8MinRows, static_cast<int64_t>(int32_scratch_.bytes()) / (s.n * 4));
    if (chunk * s.n * 4 > static_cast<int64_t>(int32_scratch_.bytes())) {
        throw std::invalid_argument("int8 GEMM " + s.key() + ": n too large for the int32 scratch");
    }
    auto* acc = int32_scratch_.as<int32_t>();
    for (int64_t m0 = 0; m0 < m; m0 += chunk) {
        const int64_t rows = std::min(chunk, m - m0);
        const void* xs = static_cast<const int8_t*>(x) + m0 * s.k;
        if (rows < kInt8MinRows) {
            const size_t real = static_cast<size_t>(rows * s.k), padded = static_cast<size_t>(kInt8MinRows * s.k);
            if (int8_padded_x_.bytes() < padded) int8_padded_x_ = DeviceBuffer(padded);
            CHECK_CUDA(cudaMemcpyAsync(int8_padded_x_.get(), xs, real, cudaMemcpyDeviceToDevice, stream));
            CHECK_CUDA(cudaMemsetAsync(int8_padded_x_.as<int8_t>() + real, 0, padded - real, stream));
            xs = int8_padded_x_.get();
        }
        Plan& p = plan(s, lt_rows(s, rows), preferred);
        CHECK_CUBLAS(matmul(p, p.algo, s, xs, w, acc, &scales, stream));
        int8_epilogue_cuda(acc, scales.alpha_per_n, bias, static_cast<std::byte*>(y) + m0 * s.n * dtype_size(s.y_dtype),
                           s.y_dtype, rows, s.n, stream);
    }
}

void CublasLtGemm::run(const GemmShape& s, int64_t m, const void* x, const void* w, const void* bias, void* y,
                       const GemmTactic* tactic, cudaStream_t stream, const GemmScales* scales) {
    if (m <= 0) return;
    if ((bias != nullptr) != s.has_bias) throw std::invalid_argument("GEMM: bias pointer disagrees with the shape's has_bias");
    const bool quantized = is_quantized_gemm(s);
    if (quantized) {
        check_quantized_gemm_shape(s);
        if (scales == nullptr || (s.x_dtype == DType::kInt8 && scales->alpha_per_n == nullptr)) {
            throw std::invalid_argument("quantized GEMM " + s.key() + " needs its scales");
        }
    }
    if (tactic != nullptr && tactic->gemv && gemv_supported(s, m) && cuda::aligned16(x) && cuda::aligned16(w)) {
        if (quantized) {
            quant_gemv_cuda(s, m, x, w, bias, y, *scales, stream);
        } else {
            gemv(s, m, x, w, bias, y, stream);
        }
        return;
    }
    const cublasLtMatmulAlgo_t* preferred = tactic != nullptr && !tactic->gemv ? &tactic->algo : nullptr;
    if (s.x_dtype == DType::kInt8) {
        run_int8(s, m, x, w, bias, y, preferred, *scales, stream);
        return;
    }
    Plan& p = plan(s, m, preferred);
    if (p.bias_epilogue) {
        CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    }
    CHECK_CUBLAS(matmul(p, p.algo, s, x, w, y, scales, stream));
    if (s.has_bias && !p.bias_epilogue) {
        add_bias_cuda(y, bias, s.y_dtype, m, s.n, stream);
    }
}

std::vector<CublasLtGemm::Tuned> CublasLtGemm::autotune(const GemmShape& s, const std::vector<int64_t>& ms,
                                                        int max_algos, int reps) {
    if (ms.empty()) return {};
    const int64_t max_m = *std::max_element(ms.begin(), ms.end());
    const bool quantized = is_quantized_gemm(s), int8 = s.x_dtype == DType::kInt8;
    if (quantized) check_quantized_gemm_shape(s);
    CudaStream stream;
    const int64_t max_lt_m = lt_rows(s, max_m);
    DeviceBuffer x(static_cast<size_t>(max_lt_m * s.k) * dtype_size(s.x_dtype));
    const cuda::ColdWeights cold(static_cast<size_t>(s.n * s.k) * dtype_size(s.x_dtype));
    DeviceBuffer w(cold.bytes());
    const int64_t w_elems = static_cast<int64_t>(cold.bytes() / dtype_size(s.x_dtype));
    DeviceBuffer y(static_cast<size_t>(max_m * s.n) * dtype_size(s.y_dtype));
    DeviceBuffer bias(s.has_bias ? static_cast<size_t>(s.n) * dtype_size(s.y_dtype) : 0);
    // int8: cuBLASLt writes int32 accumulators (the whole m at once here), our epilogue reads them.
    DeviceBuffer acc(int8 ? static_cast<size_t>(max_lt_m * s.n) * sizeof(int32_t) : 0);
    DeviceBuffer alpha_per_n(int8 ? static_cast<size_t>(s.n) * sizeof(float) : 0);
    if (quantized) {
        fill_random_quantized(x.get(), s.x_dtype, max_lt_m * s.k, 1, stream.get());
        fill_random_quantized(w.get(), s.x_dtype, w_elems, 2, stream.get());
    } else {
        fill_random(x.get(), s.x_dtype, max_m * s.k, 1, stream.get());
        fill_random(w.get(), s.x_dtype, w_elems, 2, stream.get());
    }
    if (int8) fill_random(alpha_per_n.get(), DType::kFloat32, s.n, 4, stream.get());
    if (s.has_bias) fill_random(bias.get(), s.y_dtype, s.n, 3, stream.get());
    GemmScales scales;
    scales.alpha = 1e-2f;
    scales.alpha_per_n = int8 ? alpha_per_n.as<float>() : nullptr;
    CudaEvent start, stop;
    std::vector<Tuned> out;
    for (const int64_t m : ms) {
        // Descriptors (with the epilogue decision) + the heuristic's choice; int8 at its padded rows.
        Plan& base = plan(s, lt_rows(s, m), nullptr);
        cublasLtMatmulPreference_t pref = make_preference(workspace_.bytes());
        std::vector<cublasLtMatmulHeuristicResult_t> results(static_cast<size_t>(std::max(1, max_algos)));
        int found = 0;
        CHECK_CUBLAS(cublasLtMatmulAlgoGetHeuristic(handle_, base.desc, base.a, base.b, base.d, base.d, pref,
                                                    static_cast<int>(results.size()), results.data(), &found));
        cublasLtMatmulPreferenceDestroy(pref);
        if (base.bias_epilogue) {
            const void* bp = bias.get();
            CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(base.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof(bp)));
        }
        auto time_algo = [&](const cublasLtMatmulAlgo_t& algo) -> float {
            auto once = [&](int i) {  // int8: the epilogue is part of every cuBLASLt candidate's time
                const cublasStatus_t st = matmul(base, algo, s, x.get(), cold.at(w.get(), i), int8 ? acc.get() : y.get(),
                                                 &scales, stream.get());
                if (int8 && st == CUBLAS_STATUS_SUCCESS) {
                    int8_epilogue_cuda(acc.as<int32_t>(), scales.alpha_per_n, s.has_bias ? bias.get() : nullptr,
                                       y.get(), s.y_dtype, m, s.n, stream.get());
                }
                return st;
            };
            for (int i = 0; i < 3; ++i) {
                if (once(i) != CUBLAS_STATUS_SUCCESS) return -1.0f;
            }
            CHECK_CUDA(cudaEventRecord(start.get(), stream.get()));
            for (int i = 0; i < reps; ++i) once(i);
            CHECK_CUDA(cudaEventRecord(stop.get(), stream.get()));
            CHECK_CUDA(cudaEventSynchronize(stop.get()));
            float ms_total = 0.0f;
            CHECK_CUDA(cudaEventElapsedTime(&ms_total, start.get(), stop.get()));
            return ms_total * 1000.0f / static_cast<float>(reps);
        };
        Tuned t;
        t.m = m;
        t.tactic.algo = base.algo;
        t.default_us = t.best_us = time_algo(base.algo);
        t.candidates = found;
        for (int i = 0; i < found; ++i) {
            if (results[static_cast<size_t>(i)].state != CUBLAS_STATUS_SUCCESS) continue;
            const float us = time_algo(results[static_cast<size_t>(i)].algo);
            if (us > 0.0f && us < t.best_us) {
                t.best_us = us;
                t.tactic.algo = results[static_cast<size_t>(i)].algo;
            }
        }
        if (gemv_supported(s, m)) {
            const void* bp = s.has_bias ? bias.get() : nullptr;
            auto once = [&](int i) {
                if (quantized) {
                    quant_gemv_cuda(s, m, x.get(), cold.at(w.get(), i), bp, y.get(), scales, stream.get());
                } else {
                    gemv(s, m, x.get(), cold.at(w.get(), i), bp, y.get(), stream.get());
                }
            };
            for (int i = 0; i < 3; ++i) once(i);
            CHECK_CUDA(cudaEventRecord(start.get(), stream.get()));
            for (int i = 0; i < reps; ++i) once(i);
            CHECK_CUDA(cudaEventRecord(stop.get(), stream.get()));
            CHECK_CUDA(cudaEventSynchronize(stop.get()));
            float ms_total = 0.0f;
            CHECK_CUDA(cudaEventElapsedTime(&ms_total, start.get(), stop.get()));
            const float us = ms_total * 1000.0f / static_cast<float>(reps);
            if (us < t.best_us) {
                t.best_us = us;
                t.tactic.gemv = true;
            }
        }
        out.push_back(t);
    }
    CHECK_CUDA(cudaStreamSynchronize(stream.get()));
    return out;
}

}  // namespace trtllm::kernels
