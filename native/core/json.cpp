#include "core/json.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

namespace gainrag::json {

const Value* Value::find(std::string_view key) const {
  if (kind_ != Kind::kObject) return nullptr;
  for (const auto& kv : object_)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

std::string Value::kind_name() const {
  switch (kind_) {
    case Kind::kNull: return "null";
    case Kind::kBool: return "boolean";
    case Kind::kNumber: return "number";
    case Kind::kString: return "string";
    case Kind::kArray: return "array";
    case Kind::kObject: return "object";
  }
  return "?";
}

class Parser {
 public:
  explicit Parser(std::string_view text) : s_(text) {}

  Value ParseDocument() {
    Value v = ParseValue(0);
    SkipSpace();
    if (pos_ != s_.size()) Fail("trailing characters after JSON value");
    return v;
  }

 private:
  static constexpr int kMaxDepth = 256;

  [[noreturn]] void Fail(const std::string& what) const {
    throw std::invalid_argument("invalid JSON at byte " + std::to_string(pos_) + ": " + what);
  }

  void SkipSpace() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\r' || s_[pos_] == '\t')) ++pos_;
  }

  char Peek() {
    SkipSpace();
    if (pos_ >= s_.size()) Fail("unexpected end of input");
    return s_[pos_];
  }

  void Expect(char c) {
    if (Peek() != c) Fail(std::string("expected '") + c + "'");
    ++pos_;
  }

  bool Literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) == word) {
      pos_ += word.size();
      return true;
    }
    return false;
  }

  Value ParseValue(int depth) {
    if (depth > kMaxDepth) Fail("nesting too deep");
    char c = Peek();
    Value v;
    if (c == '{') {
      ++pos_;
      v.kind_ = Value::Kind::kObject;
      if (Peek() == '}') { ++pos_; return v; }
      for (;;) {
        if (Peek() != '"') Fail("expected object key");
        std::string key = ParseString();
        Expect(':');
        v.object_.emplace_back(std::move(key), ParseValue(depth + 1));
        char d = Peek();
        ++pos_;
        if (d == '}') break;
        if (d != ',') { --pos_; Fail("expected ',' or '}'"); }
      }
    } else if (c == '[') {
      ++pos_;
      v.kind_ = Value::Kind::kArray;
      if (Peek() == ']') { ++pos_; return v; }
      for (;;) {
        v.array_.push_back(ParseValue(depth + 1));
        char d = Peek();
        ++pos_;
        if (d == ']') break;
        if (d != ',') { --pos_; Fail("expected ',' or ']'"); }
      }
    } else if (c == '"') {
      v.kind_ = Value::Kind::kString;
      v.string_ = ParseString();
    } else if (Literal("true")) {
      v.kind_ = Value::Kind::kBool; v.bool_ = true;
    } else if (Literal("false")) {
      v.kind_ = Value::Kind::kBool; v.bool_ = false;
    } else if (Literal("null")) {
      v.kind_ = Value::Kind::kNull;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      ParseNumber(v);
    } else if (Literal("NaN")) {  // Python's json writes these; configs occasionally contain them
      v.kind_ = Value::Kind::kNumber; v.number_ = NAN;
    } else if (Literal("Infinity")) {
      v.kind_ = Value::Kind::kNumber; v.number_ = INFINITY;
    } else {
      Fail("unexpected character");
    }
    return v;
  }

  void ParseNumber(Value& v) {
    size_t start = pos_;
    if (s_[pos_] == '-') ++pos_;
    if (Literal("Infinity")) { v.kind_ = Value::Kind::kNumber; v.number_ = -INFINITY; return; }
    bool integral = true;
    auto digits = [&] {
      size_t d = pos_;
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
      if (pos_ == d) Fail("expected digit");
    };
    digits();
    if (pos_ < s_.size() && s_[pos_] == '.') { ++pos_; integral = false; digits(); }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_; integral = false;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      digits();
    }
    std::string lit(s_.substr(start, pos_ - start));
    v.kind_ = Value::Kind::kNumber;
    v.number_ = std::strtod(lit.c_str(), nullptr);
    if (integral && lit.size() <= 19) {
      v.integral_ = true;
      v.int_ = std::strtoll(lit.c_str(), nullptr, 10);
    } else if (integral) {
      errno = 0;
      long long x = std::strtoll(lit.c_str(), nullptr, 10);
      if (errno == 0) { v.integral_ = true; v.int_ = x; }
    }
  }

  static void AppendUtf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) out += char(cp);
    else if (cp < 0x800) { out += char(0xC0 | (cp >> 6)); out += char(0x80 | (cp & 0x3F)); }
    else if (cp < 0x10000) { out += char(0xE0 | (cp >> 12)); out += char(0x80 | ((cp >> 6) & 0x3F)); out += char(0x80 | (cp & 0x3F)); }
    else { out += char(0xF0 | (cp >> 18)); out += char(0x80 | ((cp >> 12) & 0x3F)); out += char(0x80 | ((cp >> 6) & 0x3F)); out += char(0x80 | (cp & 0x3F)); }
  }

  uint32_t Hex4() {
    if (pos_ + 4 > s_.size()) Fail("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      char h = s_[pos_++];
      v <<= 4;
      if (h >= '0' && h <= '9') v |= h - '0';
      else if (h >= 'a' && h <= 'f') v |= h - 'a' + 10;
      else if (h >= 'A' && h <= 'F') v |= h - 'A' + 10;
      else Fail("bad hex digit in \\u escape");
    }
    return v;
  }

  std::string ParseString() {
    ++pos_;  // opening quote
    std::string out;
    for (;;) {
      if (pos_ >= s_.size()) Fail("unterminated string");
      char c = s_[pos_++];
      if (c == '"') break;
      if (static_cast<unsigned char>(c) < 0x20) Fail("control character in string");
      if (c != '\\') { out += c; continue; }
      if (pos_ >= s_.size()) Fail("unterminated escape");
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
          uint32_t cp = Hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && pos_ + 6 <= s_.size() && s_[pos_] == '\\' && s_[pos_ + 1] == 'u') {
            pos_ += 2;
            uint32_t lo = Hex4();
            if (lo >= 0xDC00 && lo < 0xE000) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            else Fail("unpaired surrogate");
          }
          AppendUtf8(out, cp);
          break;
        }
        default: Fail("bad escape");
      }
    }
    return out;
  }

  std::string_view s_;
  size_t pos_ = 0;
};

Value Parse(std::string_view text) { return Parser(text).ParseDocument(); }

std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

}  // namespace gainrag::json
