// A small JSON reader for the engine's metadata (the only JSON the runtime parses).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace trtllm {

class JsonError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class Json {
public:
    enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };

    static Json parse(std::string_view text);  // throws JsonError with the byte offset

    Kind kind() const { return kind_; }
    bool is_null() const { return kind_ == Kind::kNull; }
    bool is_object() const { return kind_ == Kind::kObject; }
    bool is_array() const { return kind_ == Kind::kArray; }

    // Typed accessors throw JsonError naming the expected kind.
    bool as_bool() const;
    double as_number() const;
    int64_t as_int() const;   // rejects non-integral numbers
    const std::string& as_string() const;
    const std::vector<Json>& as_array() const;
    const std::map<std::string, Json>& as_object() const;

    bool contains(const std::string& key) const;
    // Object member; throws JsonError("missing key 'k'") when absent.
    const Json& at(const std::string& key) const;
    // Member or null when absent.
    const Json& get(const std::string& key) const;
    const Json& operator[](size_t i) const { return as_array().at(i); }
    size_t size() const;

private:
    friend class JsonParser;
    Kind kind_ = Kind::kNull;
    bool bool_ = false;
    double number_ = 0.0;
    std::string string_;
    std::vector<Json> array_;
    std::map<std::string, Json> object_;
};

}  // namespace trtllm
