// Element types of engine tensors and the scalar conversions every backend agrees on.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>

namespace trtllm {

enum class DType : int32_t { kFloat32, kFloat16, kBFloat16, kInt32, kInt8, kUInt8, kFloat8E4M3 };

inline size_t dtype_size(DType dt) {
    switch (dt) {
        case DType::kFloat32: case DType::kInt32: return 4;
        case DType::kFloat16: case DType::kBFloat16: return 2;
        case DType::kInt8: case DType::kUInt8: case DType::kFloat8E4M3: return 1;
    }
    throw std::invalid_argument("unknown dtype");
}

// Names as in the engine's JSON (numpy / ml_dtypes spelling).
inline DType dtype_from_name(std::string_view name) {
    if (name == "float32") return DType::kFloat32;
    if (name == "float16") return DType::kFloat16;
    if (name == "bfloat16") return DType::kBFloat16;
    if (name == "int32") return DType::kInt32;
    if (name == "int8") return DType::kInt8;
    if (name == "uint8") return DType::kUInt8;
    if (name == "float8_e4m3fn") return DType::kFloat8E4M3;
    throw std::invalid_argument("unknown dtype name '" + std::string(name) + "'");
}

inline const char* dtype_name(DType dt) {
    switch (dt) {
        case DType::kFloat32: return "float32";
        case DType::kFloat16: return "float16";
        case DType::kBFloat16: return "bfloat16";
        case DType::kInt32: return "int32";
        case DType::kInt8: return "int8";
        case DType::kUInt8: return "uint8";
        case DType::kFloat8E4M3: return "float8_e4m3fn";
    }
    return "?";
}

inline uint32_t float_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

inline float bits_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// The conversions are written as selects, without branches or loops, so that the CPU kernels'
// row loops over them vectorize (after F. Giesen's half <-> float conversions). Exact; tests check
// them against numpy / ml_dtypes.

inline float bf16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

// Round to nearest even, as torch and ml_dtypes do; NaN stays a (quiet) NaN.
inline uint16_t float_to_bf16(float f) {
    const uint32_t u = float_bits(f);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const uint32_t nan = (u >> 16) | 0x40u;
    return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

inline float fp16_to_float(uint16_t h) {
    constexpr uint32_t kShiftedExp = 0x7c00u << 13;
    uint32_t o = (static_cast<uint32_t>(h) & 0x7fffu) << 13;
    const uint32_t exp = o & kShiftedExp;
    o += (127u - 15u) << 23;
    const uint32_t inf_nan = o + ((128u - 16u) << 23);
    // Subnormal: let the FPU renormalize by subtracting 2^-14 from 2^-14 * (1 + m / 2^10).
    const uint32_t subnormal = float_bits(bits_float(o + (1u << 23)) - bits_float(113u << 23));
    // Selects as all-ones / all-zeros masks: GCC will not if-convert the nested ?: here.
    const uint32_t is_inf_nan = 0u - static_cast<uint32_t>(exp == kShiftedExp);
    const uint32_t is_subnormal = 0u - static_cast<uint32_t>(exp == 0);
    o = (inf_nan & is_inf_nan) | (subnormal & is_subnormal) | (o & ~(is_inf_nan | is_subnormal));
    return bits_float(o | (static_cast<uint32_t>(h) & 0x8000u) << 16);
}

// Round to nearest even, overflow to inf, NaN to a quiet NaN, subnormals handled.
inline uint16_t float_to_fp16(float f) {
    const uint32_t u_signed = float_bits(f);
    const uint32_t sign = u_signed & 0x80000000u;
    const uint32_t u = u_signed ^ sign;
    const uint32_t inf_nan = u > 0x7f800000u ? 0x7e00u : 0x7c00u;
    // Result subnormal or zero: adding 0.5 lines the 10 result bits up at the bottom of the
    // mantissa and the FPU rounds them to nearest even.
    constexpr uint32_t kDenormMagic = ((127u - 15u) + (23u - 10u) + 1u) << 23;
    const uint32_t subnormal = float_bits(bits_float(u) + bits_float(kDenormMagic)) - kDenormMagic;
    const uint32_t normal = (u + ((15u - 127u) << 23) + 0xfffu + ((u >> 13) & 1u)) >> 13;
    const uint32_t is_big = 0u - static_cast<uint32_t>(u >= (143u << 23));
    const uint32_t is_small = 0u - static_cast<uint32_t>(u < (113u << 23));
    const uint32_t o = (inf_nan & is_big) | (subnormal & is_small) | (normal & ~(is_big | is_small));
    return static_cast<uint16_t>(o | (sign >> 16));
}

// Load / store one element of a float activation type as float32.
inline float load_float(const void* p, DType dt, int64_t i) {
    switch (dt) {
        case DType::kFloat32: return static_cast<const float*>(p)[i];
        case DType::kBFloat16: return bf16_to_float(static_cast<const uint16_t*>(p)[i]);
        case DType::kFloat16: return fp16_to_float(static_cast<const uint16_t*>(p)[i]);
        default: throw std::invalid_argument(std::string("not a float activation dtype: ") + dtype_name(dt));
    }
}

inline void store_float(void* p, DType dt, int64_t i, float v) {
    switch (dt) {
        case DType::kFloat32: static_cast<float*>(p)[i] = v; return;
        case DType::kBFloat16: static_cast<uint16_t*>(p)[i] = float_to_bf16(v); return;
        case DType::kFloat16: static_cast<uint16_t*>(p)[i] = float_to_fp16(v); return;
        default: throw std::invalid_argument(std::string("not a float activation dtype: ") + dtype_name(dt));
    }
}

}  // namespace trtllm
