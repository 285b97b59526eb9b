#include "trtllm/json.h"

#include <cmath>
#include <cstdlib>

namespace trtllm {

class JsonParser {
public:
    explicit JsonParser(std::string_view text) : s_(text) {}

    Json parse_document() {
        Json value = parse_value(0);
        skip_ws();
        if (pos_ != s_.size()) fail("trailing characters");
        return value;
    }

private:
    [[noreturn]] void fail(const std::string& what) const {
        throw JsonError("invalid JSON at byte " + std::to_string(pos_) + ": " + what);
    }

    void skip_ws() {
        while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\r' || s_[pos_] == '\t')) ++pos_;
    }

    bool consume(std::string_view word) {
        if (s_.substr(pos_, word.size()) != word) return false;
        pos_ += word.size();
        return true;
    }

    Json parse_value(int depth) {
        if (depth > 64) fail("nesting deeper than 64");
        skip_ws();
        if (pos_ >= s_.size()) fail("unexpected end");
        Json v;
        char c = s_[pos_];
        if (c == '{') {
            v.kind_ = Json::Kind::kObject;
            ++pos_;
            skip_ws();
            if (pos_ < s_.size() && s_[pos_] == '}') { ++pos_; return v; }
            while (true) {
                skip_ws();
                if (pos_ >= s_.size() || s_[pos_] != '"') fail("expected a string key");
                std::string key = parse_string();
                skip_ws();
                if (pos_ >= s_.size() || s_[pos_] != ':') fail("expected ':'");
                ++pos_;
                v.object_[key] = parse_value(depth + 1);
                skip_ws();
                if (pos_ < s_.size() && s_[pos_] == ',') { ++pos_; continue; }
                if (pos_ < s_.size() && s_[pos_] == '}') { ++pos_; return v; }
                fail("expected ',' or '}'");
            }
        }
        if (c == '[') {
            v.kind_ = Json::Kind::kArray;
            ++pos_;
            skip_ws();
            if (pos_ < s_.size() && s_[pos_] == ']') { ++pos_; return v; }
            while (true) {
                v.array_.push_back(parse_value(depth + 1));
                skip_ws();
                if (pos_ < s_.size() && s_[pos_] == ',') { ++pos_; continue; }
                if (pos_ < s_.size() && s_[pos_] == ']') { ++pos_; return v; }
                fail("expected ',' or ']'");
            }
        }
        if (c == '"') {
            v.kind_ = Json::Kind::kString;
            v.string_ = parse_string();
            return v;
        }
        if (consume("true")) { v.kind_ = Json::Kind::kBool; v.bool_ = true; return v; }
        if (consume("false")) { v.kind_ = Json::Kind::kBool; return v; }
        if (consume("null")) return v;
        // Python's json writes these for non-finite floats.
        if (consume("NaN")) { v.kind_ = Json::Kind::kNumber; v.number_ = NAN; return v; }
        if (consume("Infinity")) { v.kind_ = Json::Kind::kNumber; v.number_ = INFINITY; return v; }
        if (consume("-Infinity")) { v.kind_ = Json::Kind::kNumber; v.number_ = -INFINITY; return v; }
        if (c == '-' || (c >= '0' && c <= '9')) {
            size_t start = pos_;
            while (pos_ < s_.size() && std::string_view("+-0123456789.eE").find(s_[pos_]) != std::string_view::npos) ++pos_;
            std::string number(s_.substr(start, pos_ - start));
            char* end = nullptr;
            v.kind_ = Json::Kind::kNumber;
            v.number_ = std::strtod(number.c_str(), &end);
            if (end != number.c_str() + number.size()) fail("bad number '" + number + "'");
            return v;
        }
        fail(std::string("unexpected character '") + c + "'");
    }

    static void append_utf8(std::string& out, uint32_t cp) {
        if (cp < 0x80) {
            out += static_cast<char>(cp);
        } else if (cp < 0x800) {
            out += static_cast<char>(0xc0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
            out += static_cast<char>(0xe0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
            out += static_cast<char>(0x80 | (cp & 0x3f));
        } else {
            out += static_cast<char>(0xf0 | (cp >> 18));
            out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
            out += static_cast<char>(0x80 | (cp & 0x3f));
        }
    }

    uint32_t parse_hex4() {
        if (pos_ + 4 > s_.size()) fail("short \\u escape");
        uint32_t cp = 0;
        for (int i = 0; i < 4; ++i) {
            char h = s_[pos_++];
            cp <<= 4;
            if (h >= '0' && h <= '9') cp |= h - '0';
            else if (h >= 'a' && h <= 'f') cp |= h - 'a' + 10;
            else if (h >= 'A' && h <= 'F') cp |= h - 'A' + 10;
            else fail("bad \\u escape");
        }
        return cp;
    }

    std::string parse_string() {
        ++pos_;  // opening quote
        std::string out;
        while (true) {
            if (pos_ >= s_.size()) fail("unterminated string");
            char c = s_[pos_++];
            if (c == '"') return out;
            if (c != '\\') { out += c; continue; }
            if (pos_ >= s_.size()) fail("unterminated escape");
            char e = s_[pos_++];
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    uint32_t cp = parse_hex4();
                    if (cp >= 0xd800 && cp < 0xdc00 && consume("\\u")) {  // surrogate pair
                        uint32_t low = parse_hex4();
                        cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
                    }
                    append_utf8(out, cp);
                    break;
                }
                default: fail(std::string("bad escape '\\") + e + "'");
            }
        }
    }

    std::string_view s_;
    size_t pos_ = 0;
};

Json Json::parse(std::string_view text) { return JsonParser(text).parse_document(); }

namespace {
const char* kind_name(Json::Kind k) {
    switch (k) {
        case Json::Kind::kNull: return "null";
        case Json::Kind::kBool: return "bool";
        case Json::Kind::kNumber: return "number";
        case Json::Kind::kString: return "string";
        case Json::Kind::kArray: return "array";
        case Json::Kind::kObject: return "object";
    }
    return "?";
}
void expect(Json::Kind have, Json::Kind want) {
    if (have != want) throw JsonError(std::string("expected a JSON ") + kind_name(want) + ", got " + kind_name(have));
}
const Json& null_json() {
    static const Json null;
    return null;
}
}  // namespace

bool Json::as_bool() const { expect(kind_, Kind::kBool); return bool_; }
double Json::as_number() const { expect(kind_, Kind::kNumber); return number_; }
int64_t Json::as_int() const {
    expect(kind_, Kind::kNumber);
    if (std::floor(number_) != number_) throw JsonError("expected an integer, got " + std::to_string(number_));
    return static_cast<int64_t>(number_);
}
const std::string& Json::as_string() const { expect(kind_, Kind::kString); return string_; }
const std::vector<Json>& Json::as_array() const { expect(kind_, Kind::kArray); return array_; }
const std::map<std::string, Json>& Json::as_object() const { expect(kind_, Kind::kObject); return object_; }
bool Json::contains(const std::string& key) const { return kind_ == Kind::kObject && object_.count(key) > 0; }
const Json& Json::at(const std::string& key) const {
    auto it = as_object().find(key);
    if (it == object_.end()) throw JsonError("missing key '" + key + "'");
    return it->second;
}
const Json& Json::get(const std::string& key) const {
    auto it = as_object().find(key);
    return it == object_.end() ? null_json() : it->second;
}
size_t Json::size() const {
    if (kind_ == Kind::kArray) return array_.size();
    if (kind_ == Kind::kObject) return object_.size();
    throw JsonError(std::string("size() of a JSON ") + kind_name(kind_));
}

}  // namespace trtllm
