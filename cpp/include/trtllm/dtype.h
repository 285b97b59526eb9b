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

inline float bf16_to_float(uint16_t h) {
    uint32_t bits = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// Round to nearest even, as torch and ml_dtypes do; NaN stays NaN.
inline uint16_t float_to_bf16(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return static_cast<uint16_t>(bits >> 16);
}

inline float fp16_to_float(uint16_t h) {
    uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {  // subnormal: normalize
            exp = 127 - 15 + 1;
            while (!(mant & 0x400u)) { mant <<= 1; --exp; }
            bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// Round to nearest even with overflow to inf, subnormals handled.
inline uint16_t float_to_fp16(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
    uint32_t abs = bits & 0x7fffffffu;
    if (abs > 0x7f800000u) return sign | 0x7e00u;                 // NaN
    if (abs >= 0x477ff000u) return sign | 0x7c00u;               // overflow (>= 65520) -> inf
    if (abs < 0x38800000u) {                                     // subnormal or zero in fp16
        if (abs < 0x33000000u) return sign;                      // < 2^-25 rounds to 0
        uint32_t exp = abs >> 23, mant = (abs & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - exp;                              // 14 + (113 - exp)
        uint32_t half = mant >> shift, rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1u))) ++half;
        return sign | static_cast<uint16_t>(half);
    }
    uint32_t r = abs + 0xfffu + ((abs >> 13) & 1u);
    return sign | static_cast<uint16_t>((r - 0x38000000u) >> 13);
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
