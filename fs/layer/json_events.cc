// imgfs — JSON event parser (see json_events.h).
#include "fs/layer/json_events.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "base/strings.h"

namespace imgfs::fs {
namespace {

constexpr uint64_t kOnes = 0x0101010101010101ull;
constexpr uint64_t kHighBits = 0x8080808080808080ull;

// A mask with the high bit set in (at least) the bytes of `w` that end the fast run of a
// string: '"', '\\', a control character (< 0x20) or a non-ASCII byte. Bytes above the first
// such byte may be flagged falsely (borrows), so callers look at the bytes one by one once
// the mask is non-zero.
uint64_t SpecialBytes(uint64_t w) {
  auto zero = [](uint64_t x) { return (x - kOnes) & ~x & kHighBits; };
  uint64_t below_space = (w - kOnes * 0x20) & ~w & kHighBits;
  return zero(w ^ (kOnes * '"')) | zero(w ^ (kOnes * '\\')) | below_space | (w & kHighBits);
}

bool IsSpecial(unsigned char c) { return c == '"' || c == '\\' || c < 0x20 || c >= 0x80; }

// The first special byte (see SpecialBytes) in [p, end), or end.
const char* FindSpecial(const char* p, const char* end) {
  while (end - p >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    if (SpecialBytes(w) != 0) break;
    p += 8;
  }
  while (p < end && !IsSpecial(static_cast<unsigned char>(*p))) ++p;
  return p;
}

class Parser {
 public:
  Parser(std::string_view text, JsonEvents& events)
      : begin_(text.data()), p_(text.data()), end_(text.data() + text.size()), events_(events) {}

  JsonParseResult Run();

 private:
  enum class State { kValue, kKey, kAfterValue };

  JsonParseResult Fail(std::string_view reason) {
    return {JsonOutcome::kSyntax, static_cast<size_t>(p_ - begin_), reason};
  }
  JsonParseResult Stopped() {
    return {JsonOutcome::kStopped, static_cast<size_t>(p_ - begin_), {}};
  }

  void SkipWhitespace() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  }

  // With p_ after the opening quote: reads the string and its closing quote. On success
  // *out views the decoded text: the input itself when there is no escape (*in_scratch
  // false), else scratch_.
  bool ScanString(std::string_view* out, bool* in_scratch, std::string_view* reason);
  // Appends the escape at p_ (after the backslash) to scratch_ and moves past it.
  bool ScanEscape(std::string_view* reason);
  // Reads four hex digits at p_ into *cp.
  bool ScanHex4(uint32_t* cp);
  // With p_ at '-' or a digit: reads a number and reports it.
  bool ScanNumber(bool* stopped, std::string_view* reason);

  const char* const begin_;
  const char* p_;
  const char* const end_;
  JsonEvents& events_;
  std::vector<bool> in_object_;  // the open containers, innermost last
  std::string scratch_;          // a decoded string or a number's text
};

bool Parser::ScanHex4(uint32_t* cp) {
  if (end_ - p_ < 4) return false;
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) {
    const char c = *p_++;
    v <<= 4;
    if (c >= '0' && c <= '9') {
      v |= static_cast<uint32_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      v |= static_cast<uint32_t>(c - 'a' + 10);
    } else if (c >= 'A' && c <= 'F') {
      v |= static_cast<uint32_t>(c - 'A' + 10);
    } else {
      return false;
    }
  }
  *cp = v;
  return true;
}

bool Parser::ScanEscape(std::string_view* reason) {
  if (p_ == end_) {
    *reason = "unterminated string";
    return false;
  }
  const char c = *p_++;
  switch (c) {
    case '"':
    case '\\':
    case '/':
      scratch_.push_back(c);
      return true;
    case 'b':
      scratch_.push_back('\b');
      return true;
    case 'f':
      scratch_.push_back('\f');
      return true;
    case 'n':
      scratch_.push_back('\n');
      return true;
    case 'r':
      scratch_.push_back('\r');
      return true;
    case 't':
      scratch_.push_back('\t');
      return true;
    case 'u':
      break;
    default:
      *reason = "invalid escape";
      return false;
  }
  uint32_t cp = 0;
  if (!ScanHex4(&cp)) {
    *reason = "\\u must be followed by 4 hex digits";
    return false;
  }
  if (cp >= 0xD800 && cp <= 0xDBFF) {
    uint32_t low = 0;
    if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') {
      *reason = "high surrogate not followed by \\u";
      return false;
    }
    p_ += 2;
    if (!ScanHex4(&low)) {
      *reason = "\\u must be followed by 4 hex digits";
      return false;
    }
    if (low < 0xDC00 || low > 0xDFFF) {
      *reason = "high surrogate not followed by a low surrogate";
      return false;
    }
    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
  } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
    *reason = "low surrogate without a high surrogate";
    return false;
  }
  AppendUtf8(cp, &scratch_);
  return true;
}

bool Parser::ScanString(std::string_view* out, bool* in_scratch, std::string_view* reason) {
  const char* const start = p_;
  bool escaped = false;  // scratch_ holds the text of [start, run)
  const char* run = start;
  for (;;) {
    const char* q = FindSpecial(p_, end_);
    if (q == end_) {
      p_ = q;
      *reason = "unterminated string";
      return false;
    }
    const auto c = static_cast<unsigned char>(*q);
    if (c >= 0x80) {
      const size_t n = Utf8SequenceLength(std::string_view(q, end_ - q));
      if (n == 0) {
        p_ = q;
        *reason = "invalid UTF-8";
        return false;
      }
      p_ = q + n;
      continue;
    }
    if (c == '"') {
      p_ = q + 1;
      *in_scratch = escaped;
      if (!escaped) {
        *out = std::string_view(start, q - start);
      } else {
        scratch_.append(run, q);
        *out = scratch_;
      }
      return true;
    }
    if (c != '\\') {
      p_ = q;
      *reason = "control character in string";
      return false;
    }
    if (!escaped) {
      scratch_.clear();
      escaped = true;
    }
    scratch_.append(run, q);
    p_ = q + 1;
    if (!ScanEscape(reason)) return false;
    run = p_;
  }
}

bool Parser::ScanNumber(bool* stopped, std::string_view* reason) {
  const char* const start = p_;
  auto digits = [&] {
    const char* from = p_;
    while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    return p_ > from;
  };
  const bool negative = *p_ == '-';
  if (negative) ++p_;
  const char* const int_start = p_;
  if (p_ < end_ && *p_ == '0') {
    ++p_;  // a leading zero is the whole integer part: "01" is 0 followed by 1
  } else if (!digits()) {
    *reason = "invalid number";
    return false;
  }
  const char* const int_end = p_;
  bool integer = true;
  if (p_ < end_ && *p_ == '.') {
    ++p_;
    if (!digits()) {
      *reason = "invalid number: no digit after '.'";
      return false;
    }
    integer = false;
  }
  if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
    ++p_;
    if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
    if (!digits()) {
      *reason = "invalid number: no digit in exponent";
      return false;
    }
    integer = false;
  }
  const std::string_view text(start, p_ - start);
  if (integer) {
    // As nlohmann: an integer that fits is reported as one, else it is read as a double.
    uint64_t v = 0;
    bool fits = true;
    for (const char* d = int_start; d < int_end && fits; ++d) {
      const auto digit = static_cast<uint64_t>(*d - '0');
      if (v > (std::numeric_limits<uint64_t>::max() - digit) / 10) {
        fits = false;
      } else {
        v = v * 10 + digit;
      }
    }
    if (fits && !negative) {
      *stopped = !events_.Unsigned(v);
      return true;
    }
    constexpr uint64_t kMinMagnitude = uint64_t{1} << 63;  // of INT64_MIN
    if (fits && v <= kMinMagnitude) {
      *stopped = !events_.Integer(v == kMinMagnitude ? std::numeric_limits<int64_t>::min()
                                                     : -static_cast<int64_t>(v));
      return true;
    }
  }
  // strtod, as nlohmann: correctly rounded, and finite for underflow where from_chars fails.
  scratch_.assign(text);
  const double d = std::strtod(scratch_.c_str(), nullptr);
  if (!std::isfinite(d)) {
    *reason = "number overflow";
    return false;
  }
  *stopped = !events_.Float(d, text);
  return true;
}

JsonParseResult Parser::Run() {
  // A UTF-8 byte order mark may open the text (nlohmann skips it; RFC 8259 section 8.1
  // lets a parser do so).
  if (p_ < end_ && static_cast<unsigned char>(*p_) == 0xEF) {
    if (end_ - p_ < 3 || static_cast<unsigned char>(p_[1]) != 0xBB ||
        static_cast<unsigned char>(p_[2]) != 0xBF) {
      return Fail("invalid byte order mark");
    }
    p_ += 3;
  }
  State state = State::kValue;
  std::string_view text;
  bool in_scratch = false;
  std::string_view reason;
  for (;;) {
    SkipWhitespace();
    switch (state) {
      case State::kValue: {
        if (p_ == end_) return Fail("unexpected end of input");
        const char c = *p_;
        if (c == '{' || c == '[') {
          if (in_object_.size() >= kMaxJsonDepth) {
            return {JsonOutcome::kTooDeep, static_cast<size_t>(p_ - begin_),
                    "nested deeper than kMaxJsonDepth"};
          }
          const bool object = c == '{';
          if (!(object ? events_.StartObject() : events_.StartArray())) return Stopped();
          ++p_;
          in_object_.push_back(object);
          SkipWhitespace();
          if (p_ < end_ && *p_ == (object ? '}' : ']')) {
            ++p_;
            in_object_.pop_back();
            if (!(object ? events_.EndObject() : events_.EndArray())) return Stopped();
            state = State::kAfterValue;
          } else {
            state = object ? State::kKey : State::kValue;
          }
          continue;
        }
        bool ok = true;
        if (c == '"') {
          ++p_;
          if (!ScanString(&text, &in_scratch, &reason)) return Fail(reason);
          if (!in_scratch) scratch_.assign(text);  // the one copy of an escape-free value
          ok = events_.String(scratch_);
        } else if (c == '-' || (c >= '0' && c <= '9')) {
          bool stopped = false;
          if (!ScanNumber(&stopped, &reason)) return Fail(reason);
          ok = !stopped;
        } else {
          auto literal = [&](std::string_view word) {
            if (static_cast<size_t>(end_ - p_) < word.size() ||
                std::memcmp(p_, word.data(), word.size()) != 0) {
              return false;
            }
            p_ += word.size();
            return true;
          };
          if (literal("true")) {
            ok = events_.Boolean(true);
          } else if (literal("false")) {
            ok = events_.Boolean(false);
          } else if (literal("null")) {
            ok = events_.Null();
          } else {
            return Fail("unexpected character");
          }
        }
        if (!ok) return Stopped();
        state = State::kAfterValue;
        continue;
      }
      case State::kKey:
        if (p_ == end_ || *p_ != '"') return Fail("expected a key");
        ++p_;
        if (!ScanString(&text, &in_scratch, &reason)) return Fail(reason);
        if (!events_.Key(text)) return Stopped();
        SkipWhitespace();
        if (p_ == end_ || *p_ != ':') return Fail("expected ':'");
        ++p_;
        state = State::kValue;
        continue;
      case State::kAfterValue: {
        if (in_object_.empty()) {
          // A NUL where a token may start is the end of the text to nlohmann's lexer (which
          // also reads C strings), so what follows it is not looked at.
          if (p_ != end_ && *p_ != '\0') return Fail("text after the value");
          return {};
        }
        const bool object = in_object_.back();
        if (p_ < end_ && *p_ == ',') {
          ++p_;
          state = object ? State::kKey : State::kValue;
          continue;
        }
        if (p_ < end_ && *p_ == (object ? '}' : ']')) {
          ++p_;
          in_object_.pop_back();
          if (!(object ? events_.EndObject() : events_.EndArray())) return Stopped();
          continue;
        }
        return Fail(object ? "expected ',' or '}'" : "expected ',' or ']'");
      }
    }
  }
}

}  // namespace

JsonParseResult ParseJson(std::string_view text, JsonEvents& events) {
  Parser parser(text, events);
  return parser.Run();
}

}  // namespace imgfs::fs
