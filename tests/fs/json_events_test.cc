// Tests for fs/layer/json_events.h: events of valid documents, escapes and surrogates,
// UTF-8 validation, numbers at the int64/uint64 edges, the depth limit, trailing text and
// receivers that stop. tests/fuzz/json_events_fuzz.cc compares with nlohmann on any input.
#include "fs/layer/json_events.h"

#include <cstdint>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

namespace imgfs::fs {
namespace {

// Records events as text: `s:abc` a string, `k:x` a key, `u:1`, `i:-1`, `f:1.5`, ...
class Recorder : public JsonEvents {
 public:
  bool Null() override { return Add("null"); }
  bool Boolean(bool v) override { return Add(v ? "true" : "false"); }
  bool Integer(int64_t v) override { return Add("i:" + std::to_string(v)); }
  bool Unsigned(uint64_t v) override { return Add("u:" + std::to_string(v)); }
  bool Float(double v, std::string_view text) override {
    return Add("f:" + std::string(text) + "=" + std::to_string(v));
  }
  bool String(std::string& v) override { return Add("s:" + v); }
  bool Key(std::string_view k) override { return Add("k:" + std::string(k)); }
  bool StartObject() override { return Add("{"); }
  bool EndObject() override { return Add("}"); }
  bool StartArray() override { return Add("["); }
  bool EndArray() override { return Add("]"); }

  std::string events;
  size_t stop_after = SIZE_MAX;

 private:
  bool Add(const std::string& e) {
    if (!events.empty()) events += ' ';
    events += e;
    return --stop_after > 0;
  }
};

// The events of `text`, or "error: <reason>" when it is refused.
std::string Events(std::string_view text) {
  Recorder r;
  JsonParseResult result = ParseJson(text, r);
  if (!result.ok()) return "error: " + std::string(result.reason);
  return r.events;
}

bool Accepts(std::string_view text) {
  Recorder r;
  return ParseJson(text, r).ok();
}

TEST(JsonEventsTest, EventsOfADocument) {
  EXPECT_EQ(Events(R"( {"a" : [1, "x", true, false, null, {}, []], "b":{"c":-2}} )"),
            "{ k:a [ u:1 s:x true false null { } [ ] ] k:b { k:c i:-2 } }");
  EXPECT_EQ(Events("\"top\""), "s:top");
  EXPECT_EQ(Events("\t\r\n7\n"), "u:7");
  EXPECT_EQ(Events("{\"\":\"\"}"), "{ k: s: }");
}

TEST(JsonEventsTest, Escapes) {
  EXPECT_EQ(Events(R"(["\"\\\/\b\f\n\r\t"])"), "[ s:\"\\/\b\f\n\r\t ]");
  EXPECT_EQ(Events(R"(["a\u0041\u00e9\u20ACz"])"), "[ s:aA\xc3\xa9\xe2\x82\xacz ]");
  EXPECT_EQ(Events(R"({"k\u0065y":1})"), "{ k:key u:1 }");  // a key with an escape
  // \u0000 is a NUL inside the string.
  Recorder r;
  ASSERT_TRUE(ParseJson(R"(["a\u0000b"])", r).ok());
  EXPECT_EQ(r.events, std::string("[ s:a\0b ]", 9));
  for (const char* bad : {R"(["\x"])", R"(["\u12"])", R"(["\u12g4"])", R"(["\)", R"(["\'"])"}) {
    EXPECT_FALSE(Accepts(bad)) << bad;
  }
}

TEST(JsonEventsTest, SurrogatePairsBecomeOneCodePoint) {
  EXPECT_EQ(Events(R"(["\ud83d\ude00"])"), "[ s:\xf0\x9f\x98\x80 ]");  // U+1F600
  EXPECT_EQ(Events(R"(["\uDBFF\uDFFF"])"), "[ s:\xf4\x8f\xbf\xbf ]");  // U+10FFFF
  for (const char* bad :
       {R"(["\ud83d"])", R"(["\ud83dx"])", R"(["\ud83d\n"])", R"(["\ud83d\u0041"])",
        R"(["\ude00"])", R"(["\ude00\ud83d"])", R"(["\ud83d\ud83d"])"}) {
    EXPECT_FALSE(Accepts(bad)) << bad;
  }
}

TEST(JsonEventsTest, Utf8IsValidated) {
  // Well-formed: 2, 3 and 4 bytes, at the edges of each range.
  for (const char* good :
       {"[\"\xc2\x80\xdf\xbf\"]", "[\"\xe0\xa0\x80\xef\xbf\xbf\"]",
        "[\"\xed\x9f\xbf\xee\x80\x80\"]", "[\"\xf0\x90\x80\x80\"]", "[\"\xf4\x8f\xbf\xbf\"]",
        "[\"0123456789\xc3\xa9"
        "0123456789\"]"}) {
    EXPECT_TRUE(Accepts(good)) << good;
  }
  for (const char* bad : {
           "[\"\x80\"]",              // a lone continuation byte
           "[\"\xc0\xaf\"]",          // overlong '/'
           "[\"\xc1\xbf\"]",          // overlong
           "[\"\xe0\x9f\xbf\"]",      // overlong 3 bytes
           "[\"\xed\xa0\x80\"]",      // a surrogate, U+D800
           "[\"\xf0\x8f\xbf\xbf\"]",  // overlong 4 bytes
           "[\"\xf4\x90\x80\x80\"]",  // above U+10FFFF
           "[\"\xf5\x80\x80\x80\"]",  // no such lead byte
           "[\"\xff\"]",              //
           "[\"\xc3\"]",              // cut short by the quote
           "[\"\xe2\x82\"]",          //
           "[\"abc\xc3",              // cut short by the end
           "\xc3\xa9",                // UTF-8 outside a string
       }) {
    EXPECT_FALSE(Accepts(bad)) << bad;
  }
}

TEST(JsonEventsTest, ControlCharactersAreRefusedInStrings) {
  for (int c = 0; c < 0x20; ++c) {
    std::string text = "[\"ab";
    text += static_cast<char>(c);
    text += "cdefghijkl\"]";  // past the first 8 bytes, so the word-at-a-time scan sees it
    EXPECT_FALSE(Accepts(text)) << c;
  }
  EXPECT_TRUE(Accepts("[\"\x7f\"]"));  // DEL is not a control character to JSON
}

TEST(JsonEventsTest, NumbersAtTheIntegerEdges) {
  EXPECT_EQ(Events("[0,-0,18446744073709551615,-9223372036854775808]"),
            "[ u:0 i:0 u:18446744073709551615 i:-9223372036854775808 ]");
  // Past uint64 or int64: a double, as nlohmann.
  EXPECT_EQ(Events("18446744073709551616"), "f:18446744073709551616=18446744073709551616.000000");
  EXPECT_EQ(Events("-9223372036854775809"), "f:-9223372036854775809=-9223372036854775808.000000");
  EXPECT_EQ(Events("[1.0,1e2,-1E-2,2.5e+1]"),
            "[ f:1.0=1.000000 f:1e2=100.000000 f:-1E-2=-0.010000 f:2.5e+1=25.000000 ]");
  EXPECT_EQ(Events("1e-400"), "f:1e-400=0.000000");  // underflow is finite
  EXPECT_FALSE(Accepts("1e400"));                    // overflow is not
  EXPECT_FALSE(Accepts("-1e400"));
  for (const char* bad : {"-", "+1", ".5", "1.", "1.e2", "1e", "1e+", "--1", "0x10", "01", "-01",
                          "[01]", "1 2", "Infinity", "NaN", "-"}) {
    EXPECT_FALSE(Accepts(bad)) << bad;
  }
}

TEST(JsonEventsTest, DepthIsBounded) {
  const std::string ok = std::string(kMaxJsonDepth, '[') + std::string(kMaxJsonDepth, ']');
  EXPECT_TRUE(Accepts(ok));
  const std::string deep = "[" + ok + "]";
  Recorder r;
  JsonParseResult result = ParseJson(deep, r);
  EXPECT_EQ(result.outcome, JsonOutcome::kTooDeep);
  EXPECT_EQ(result.offset, kMaxJsonDepth);
  const std::string objects = [] {
    std::string s;
    for (size_t i = 0; i <= kMaxJsonDepth; ++i) s += "{\"a\":";
    return s + "1" + std::string(kMaxJsonDepth + 1, '}');
  }();
  EXPECT_EQ(ParseJson(objects, r).outcome, JsonOutcome::kTooDeep);
}

TEST(JsonEventsTest, TrailingTextAndEmptyInput) {
  EXPECT_EQ(Events(""), "error: unexpected end of input");
  EXPECT_FALSE(Accepts("   "));
  EXPECT_FALSE(Accepts("{} x"));
  EXPECT_FALSE(Accepts("{}{}"));
  EXPECT_FALSE(Accepts("[] ]"));
  EXPECT_FALSE(Accepts("truex"));
  // A NUL after the value ends the text, as in nlohmann (its lexer also reads C strings).
  EXPECT_TRUE(Accepts(std::string("{} \0x", 5)));
  EXPECT_FALSE(Accepts(std::string("\0{}", 3)));
  EXPECT_FALSE(Accepts(std::string("[\0]", 3)));
  EXPECT_TRUE(Accepts("{} \n"));
}

TEST(JsonEventsTest, MalformedStructure) {
  for (const char* bad : {"{",
                          "[",
                          "{\"a\"}",
                          "{\"a\":}",
                          "{\"a\":1,}",
                          "[1,]",
                          "[,1]",
                          "{1:2}",
                          "{\"a\" 1}",
                          "[1 2]",
                          "{\"a\":1 \"b\":2}",
                          "]",
                          "}",
                          "tru",
                          "nul",
                          "True",
                          "'a'",
                          "[\"a]",
                          "/*c*/1",
                          "{'a':1}"}) {
    EXPECT_FALSE(Accepts(bad)) << bad;
  }
}

TEST(JsonEventsTest, ByteOrderMarkAsNlohmann) {
  EXPECT_EQ(Events("\xef\xbb\xbf{}"), "{ }");
  EXPECT_FALSE(Accepts("\xef\xbb{}"));
  EXPECT_FALSE(Accepts(" \xef\xbb\xbf{}"));  // only at the very start
}

TEST(JsonEventsTest, AStopEndsTheParse) {
  Recorder r;
  r.stop_after = 3;
  JsonParseResult result = ParseJson("[1,2,3,4]", r);
  EXPECT_EQ(result.outcome, JsonOutcome::kStopped);
  EXPECT_EQ(r.events, "[ u:1 u:2");
}

TEST(JsonEventsTest, EventsBeforeAnErrorAreDelivered) {
  Recorder r;
  JsonParseResult result = ParseJson("[1,\"a\",x]", r);
  EXPECT_EQ(result.outcome, JsonOutcome::kSyntax);
  EXPECT_EQ(result.offset, 7u);
  EXPECT_EQ(r.events, "[ u:1 s:a");
}

}  // namespace
}  // namespace imgfs::fs
