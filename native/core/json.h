// A small, strict JSON reader for the two JSON documents the engine parses natively:
// safetensors headers and Hugging Face config.json files. Both are small, so the DOM is a
// plain tree; the parser bounds-checks everything and reports the byte offset of errors.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace gainrag::json {

class Value {
 public:
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };

  Value() = default;
  static Value Null() { return Value(); }

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::kNull; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_number() const { return kind_ == Kind::kNumber; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_array() const { return kind_ == Kind::kArray; }
  bool is_object() const { return kind_ == Kind::kObject; }

  bool as_bool() const { return bool_; }
  double as_number() const { return number_; }
  // True when the literal had no fraction/exponent and fits int64 exactly.
  bool is_integer() const { return kind_ == Kind::kNumber && integral_; }
  int64_t as_int() const { return int_; }
  const std::string& as_string() const { return string_; }
  const std::vector<Value>& as_array() const { return array_; }
  const std::vector<std::pair<std::string, Value>>& as_object() const { return object_; }

  // Object lookup; nullptr when absent or when this is not an object.
  const Value* find(std::string_view key) const;

  std::string kind_name() const;

 private:
  friend class Parser;
  Kind kind_ = Kind::kNull;
  bool bool_ = false;
  bool integral_ = false;
  double number_ = 0;
  int64_t int_ = 0;
  std::string string_;
  std::vector<Value> array_;
  std::vector<std::pair<std::string, Value>> object_;  // insertion order kept (safetensors offsets)
};

// Throws std::invalid_argument with a message that names the byte offset.
Value Parse(std::string_view text);

// Serialise (used when writing safetensors headers and config.json files).
std::string Quote(std::string_view s);

}  // namespace gainrag::json
