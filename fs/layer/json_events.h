// imgfs — a strict, bounded JSON event (SAX) parser for the TOCs of lazy layers.
//
// A lazy eStargz or zstd:chunked mount parses each layer's TOC (~8 MB of JSON for 20 000
// files) before its first byte can be served; nlohmann's lexer reads it a character at a
// time and builds every string with push_back (~50 ms per such TOC, issue 11). This parser
// passes over ASCII in strings eight bytes at a time (non-ASCII is checked a UTF-8 sequence
// at a time), hands keys over as views of the input and copies an escape-free value once.
//
// Contract: the same accept/reject decisions and the same events, in the same order, as
// nlohmann::json::sax_parse (3.11, strict, no comments) on every input, with one exception:
// containers nested deeper than kMaxJsonDepth are refused (nlohmann has no limit). That is:
// RFC 8259 with a leading UTF-8 byte order mark allowed (as nlohmann does); strings must be
// well-formed UTF-8 with no raw control characters, \u escapes are decoded to UTF-8 and a
// surrogate must be half of a pair; an integer that fits int64 (negative, and "-0") or
// uint64 (non-negative) is reported as such, any other number as a double (which must be
// finite: "1e400" is refused); nothing but whitespace may follow the top value, up to the
// end or a NUL byte (which nlohmann's lexer takes for the end of the text).
// tests/fuzz/json_events_fuzz.cc holds the two parsers to this.
//
// Thread-safety: ParseJson keeps all its state in the call (no globals); concurrent calls are
// safe. Events are delivered on the calling thread, in input order.
#ifndef IMGFS_FS_LAYER_JSON_EVENTS_H_
#define IMGFS_FS_LAYER_JSON_EVENTS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace imgfs::fs {

// Nesting limit of objects and arrays. A TOC is 3 levels deep (root, entries, xattrs); 1024
// is far beyond any real document and bounds the parser's stack at 1 KiB.
inline constexpr size_t kMaxJsonDepth = 1024;

// Receiver of parse events. Each returns false to stop the parse (ParseJson then returns
// kStopped). Views and strings passed are valid only during the call.
class JsonEvents {
 public:
  virtual ~JsonEvents() = default;
  virtual bool Null() = 0;
  virtual bool Boolean(bool value) = 0;
  virtual bool Integer(int64_t value) = 0;    // a negative integer, or "-0"
  virtual bool Unsigned(uint64_t value) = 0;  // a non-negative integer
  // Any other number: a fraction, an exponent or an integer outside int64/uint64; `text` is
  // the number as written.
  virtual bool Float(double value, std::string_view text) = 0;
  // `value` is decoded; the receiver may move from it.
  virtual bool String(std::string& value) = 0;
  virtual bool Key(std::string_view key) = 0;  // decoded
  virtual bool StartObject() = 0;
  virtual bool EndObject() = 0;
  virtual bool StartArray() = 0;
  virtual bool EndArray() = 0;
};

enum class JsonOutcome {
  kOk,
  kSyntax,   // not JSON (nlohmann refuses it too)
  kTooDeep,  // nested deeper than kMaxJsonDepth (the one case nlohmann accepts)
  kStopped,  // an event returned false
};

struct JsonParseResult {
  JsonOutcome outcome = JsonOutcome::kOk;
  size_t offset = 0;        // where parsing stopped, in bytes from the start of the text
  std::string_view reason;  // what was wrong (static text); empty when kOk or kStopped
  bool ok() const { return outcome == JsonOutcome::kOk; }
};

// Parses `text` as one JSON document, calling `events` for each value as it is read. On
// failure the events already delivered stand; nothing follows the failing point.
JsonParseResult ParseJson(std::string_view text, JsonEvents& events);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAYER_JSON_EVENTS_H_
