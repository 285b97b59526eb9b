#include "gemm/gemm_cuda.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "cuda_common.cuh"
#include "elementwise/elementwise_cuda.h"

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
// lane reads 16-byte vectors of the weight row, four in flight, and uses each for all M rows.
template <class T, class TY, int M>
__global__ void gemv_kernel(const T* __restrict__ x, const T* __restrict__ w, const TY* __restrict__ bias,
                            TY* __restrict__ y, int n, int k) {
    constexpr int V = cuda::kVec<T>;
    constexpr int kUnroll = 4;
    const int j = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (j >= n) return;
    const int lane = threadIdx.x % 32;
    const T* wr = w + int64_t{j} * k;
    float acc[M];
#pragma unroll
    for (int mi = 0; mi < M; ++mi) acc[mi] = 0.0f;
    int x0 = lane * V;
    for (; x0 + (kUnroll - 1) * 32 * V < k; x0 += kUnroll * 32 * V) {
        float wf[kUnroll][V];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) cuda::load_vec(wr + x0 + u * 32 * V, wf[u]);
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
            for (int mi = 0; mi < M; ++mi) {
                float xf[V];
                cuda::load_vec(x + int64_t{mi} * k + x0 + u * 32 * V, xf);
#pragma unroll
                for (int i = 0; i < V; ++i) acc[mi] += wf[u][i] * xf[i];
            }
        }
    }
    for (; x0 < k; x0 += 32 * V) {
        float wf[V];
        cuda::load_vec(wr + x0, wf);
#pragma unroll
        for (int mi = 0; mi < M; ++mi) {
            float xf[V];
            cuda::load_vec(x + int64_t{mi} * k + x0, xf);
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
    switch (m) {
        case 1: gemv_kernel<T, TY, 1><<<grid, kWarps * 32, 0, stream>>>(xp, wp, bp, yp, ni, ki); break;
        case 2: gemv_kernel<T, TY, 2><<<grid, kWarps * 32, 0, stream>>>(xp, wp, bp, yp, ni, ki); break;
        case 3: gemv_kernel<T, TY, 3><<<grid, kWarps * 32, 0, stream>>>(xp, wp, bp, yp, ni, ki); break;
        default: gemv_kernel<T, TY, 4><<<grid, kWarps * 32, 0, stream>>>(xp, wp, bp, yp, ni, ki); break;
    }
    CHECK_LAUNCH("gemv_kernel");
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

bool gemv_supported(const GemmShape& s, int64_t m) {
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
    const cudaDataType_t xt = cuda_type(s.x_dtype), yt = cuda_type(s.y_dtype);
    CHECK_CUBLAS(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
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
    if (s.has_bias) {
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

void CublasLtGemm::run(const GemmShape& s, int64_t m, const void* x, const void* w, const void* bias, void* y,
                       const GemmTactic* tactic, cudaStream_t stream) {
    if (m <= 0) return;
    if ((bias != nullptr) != s.has_bias) throw std::invalid_argument("GEMM: bias pointer disagrees with the shape's has_bias");
    if (tactic != nullptr && tactic->gemv && gemv_supported(s, m) && cuda::aligned16(x) && cuda::aligned16(w)) {
        gemv(s, m, x, w, bias, y, stream);
        return;
    }
    Plan& p = plan(s, m, tactic != nullptr && !tactic->gemv ? &tactic->algo : nullptr);
    if (p.bias_epilogue) {
        CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    }
    const float alpha = 1.0f, beta = 0.0f;
    CHECK_CUBLAS(cublasLtMatmul(handle_, p.desc, &alpha, w, p.a, x, p.b, &beta, y, p.d, y, p.d, &p.algo,
                                workspace_.get(), workspace_.bytes(), stream));
    if (s.has_bias && !p.bias_epilogue) {
        add_bias_cuda(y, bias, s.y_dtype, m, s.n, stream);
    }
}

std::vector<CublasLtGemm::Tuned> CublasLtGemm::autotune(const GemmShape& s, const std::vector<int64_t>& ms,
                                                        int max_algos, int reps) {
    if (ms.empty()) return {};
    const int64_t max_m = *std::max_element(ms.begin(), ms.end());
    CudaStream stream;
    DeviceBuffer x(static_cast<size_t>(max_m * s.k) * dtype_size(s.x_dtype));
    DeviceBuffer w(static_cast<size_t>(s.n * s.k) * dtype_size(s.x_dtype));
    DeviceBuffer y(static_cast<size_t>(max_m * s.n) * dtype_size(s.y_dtype));
    DeviceBuffer bias(s.has_bias ? static_cast<size_t>(s.n) * dtype_size(s.y_dtype) : 0);
    fill_random(x.get(), s.x_dtype, max_m * s.k, 1, stream.get());
    fill_random(w.get(), s.x_dtype, s.n * s.k, 2, stream.get());
    if (s.has_bias) fill_random(bias.get(), s.y_dtype, s.n, 3, stream.get());
    CudaEvent start, stop;
    std::vector<Tuned> out;
    for (const int64_t m : ms) {
        Plan& base = plan(s, m, nullptr);  // descriptors (with the epilogue decision) + the heuristic's choice
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
        const float alpha = 1.0f, beta = 0.0f;
        auto time_algo = [&](const cublasLtMatmulAlgo_t& algo) -> float {
            auto once = [&] {
                return cublasLtMatmul(handle_, base.desc, &alpha, w.get(), base.a, x.get(), base.b, &beta, y.get(),
                                      base.d, y.get(), base.d, &algo, workspace_.get(), workspace_.bytes(),
                                      stream.get());
            };
            for (int i = 0; i < 3; ++i) {
                if (once() != CUBLAS_STATUS_SUCCESS) return -1.0f;
            }
            CHECK_CUDA(cudaEventRecord(start.get(), stream.get()));
            for (int i = 0; i < reps; ++i) once();
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
            for (int i = 0; i < 3; ++i) gemv(s, m, x.get(), w.get(), bp, y.get(), stream.get());
            CHECK_CUDA(cudaEventRecord(start.get(), stream.get()));
            for (int i = 0; i < reps; ++i) gemv(s, m, x.get(), w.get(), bp, y.get(), stream.get());
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
