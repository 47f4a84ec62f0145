// Fuzz target: the JSON event parser (fs/layer/json_events.h) against nlohmann's sax_parse,
// its reference. Both must accept or refuse the same bytes and report the same events (keys,
// strings, numbers with their kind, containers) up to the end or the refusal. The one
// allowed difference: input nested deeper than kMaxJsonDepth, which ours refuses; its events
// up to the refusal must still be nlohmann's. A second run through a receiver that stops
// after some events checks that a stop ends the parse at once.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "fs/layer/json_events.h"

namespace {

using json = nlohmann::json;

void Fail(const char* what) {
  std::fprintf(stderr, "json_events fuzz: %s\n", what);
  std::abort();
}

// One line per event, the same for both parsers.
class Log {
 public:
  void Add(char kind, std::string_view text = {}) {
    log_ += kind;
    log_ += std::to_string(text.size());
    log_ += ':';
    log_.append(text);
    ++events_;
  }
  void AddFloat(double v, std::string_view text) {
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof bits);
    Add('f', std::to_string(bits) + "/" + std::string(text));
  }
  const std::string& str() const { return log_; }
  size_t events() const { return events_; }

 private:
  std::string log_;
  size_t events_ = 0;
};

class Ours : public imgfs::fs::JsonEvents {
 public:
  explicit Ours(size_t stop_after) : stop_after_(stop_after) {}
  bool Null() override { return Add('n'); }
  bool Boolean(bool v) override { return Add(v ? 't' : 'F'); }
  bool Integer(int64_t v) override { return Add('i', std::to_string(v)); }
  bool Unsigned(uint64_t v) override { return Add('u', std::to_string(v)); }
  bool Float(double v, std::string_view text) override {
    log.AddFloat(v, text);
    return log.events() < stop_after_;
  }
  bool String(std::string& v) override {
    std::string taken = std::move(v);  // receivers may move from it
    return Add('s', taken);
  }
  bool Key(std::string_view k) override { return Add('k', k); }
  bool StartObject() override { return Add('{'); }
  bool EndObject() override { return Add('}'); }
  bool StartArray() override { return Add('['); }
  bool EndArray() override { return Add(']'); }

  Log log;

 private:
  bool Add(char kind, std::string_view text = {}) {
    log.Add(kind, text);
    return log.events() < stop_after_;
  }
  size_t stop_after_;
};

struct Theirs {
  bool null() { return Add('n'); }
  bool boolean(bool v) { return Add(v ? 't' : 'F'); }
  bool number_integer(json::number_integer_t v) { return Add('i', std::to_string(v)); }
  bool number_unsigned(json::number_unsigned_t v) { return Add('u', std::to_string(v)); }
  bool number_float(json::number_float_t v, const json::string_t& text) {
    log.AddFloat(v, text);
    return true;
  }
  bool string(json::string_t& v) { return Add('s', v); }
  bool binary(json::binary_t&) { return Add('b'); }
  bool key(json::string_t& k) { return Add('k', k); }
  bool start_object(std::size_t) { return Add('{'); }
  bool end_object() { return Add('}'); }
  bool start_array(std::size_t) { return Add('['); }
  bool end_array() { return Add(']'); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) {
    return false;
  }
  bool Add(char kind, std::string_view text = {}) {
    log.Add(kind, text);
    return true;
  }
  Log log;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using imgfs::fs::JsonOutcome;
  std::string_view in(reinterpret_cast<const char*>(data), size);

  Theirs theirs;
  bool their_ok = false;
  try {
    their_ok = json::sax_parse(in.begin(), in.end(), &theirs);
  } catch (const json::exception&) {
    their_ok = false;
  }

  Ours ours(SIZE_MAX);
  const imgfs::fs::JsonParseResult r = imgfs::fs::ParseJson(in, ours);
  if (r.outcome == JsonOutcome::kStopped) Fail("stopped without a receiver asking");
  if (r.offset > in.size()) Fail("offset past the input");
  if (r.outcome == JsonOutcome::kTooDeep) {
    if (theirs.log.str().compare(0, ours.log.str().size(), ours.log.str()) != 0) {
      Fail("events before the depth limit differ from nlohmann's");
    }
    return 0;
  }
  if (r.ok() != their_ok) {
    std::fprintf(stderr, "ours %s (%.*s at %zu), nlohmann %s\n", r.ok() ? "accepts" : "refuses",
                 static_cast<int>(r.reason.size()), r.reason.data(), r.offset,
                 their_ok ? "accepts" : "refuses");
    Fail("accept/reject differs from nlohmann");
  }
  if (ours.log.str() != theirs.log.str()) Fail("events differ from nlohmann's");

  // A receiver that stops after k events: the parse ends there, with exactly k events.
  if (ours.log.events() > 0) {
    const size_t k = 1 + (size > 0 ? data[0] : 0) % ours.log.events();
    Ours stopping(k);
    const imgfs::fs::JsonParseResult s = imgfs::fs::ParseJson(in, stopping);
    if (s.outcome != JsonOutcome::kStopped || stopping.log.events() != k) {
      Fail("a stop did not end the parse");
    }
  }
  return 0;
}
