// Tests for base/strings.h.
#include "base/strings.h"

#include <string>

#include <gtest/gtest.h>

namespace imgfs {
namespace {

TEST(QuoteForMessageTest, PrintableTextIsQuotedAsIs) {
  EXPECT_EQ(QuoteForMessage("alpine:3.20"), "\"alpine:3.20\"");
  EXPECT_EQ(QuoteForMessage(""), "\"\"");
}

TEST(QuoteForMessageTest, ControlBytesQuotesAndNonAsciiAreEscaped) {
  EXPECT_EQ(QuoteForMessage("a\nb"), "\"a\\x0ab\"");
  EXPECT_EQ(QuoteForMessage("\x1b[31m"), "\"\\x1b[31m\"");
  EXPECT_EQ(QuoteForMessage("say \"hi\"\\"), "\"say \\x22hi\\x22\\x5c\"");
  EXPECT_EQ(QuoteForMessage("h\xc3\xa9"), "\"h\\xc3\\xa9\"");
  EXPECT_EQ(QuoteForMessage(std::string("a\0b", 3)), "\"a\\x00b\"");
}

TEST(QuoteForMessageTest, LongTextIsCut) {
  const std::string long_text(500, 'x');
  EXPECT_EQ(QuoteForMessage(long_text, 4), "\"xxxx...\"");
  EXPECT_EQ(QuoteForMessage(long_text).size(), 100u + 5u);
  EXPECT_EQ(QuoteForMessage("abcd", 4), "\"abcd\"");
}

TEST(StringsTest, AppendUtf8EncodesEachLength) {
  std::string out;
  for (uint32_t cp : {0x24u, 0x7Fu, 0x80u, 0xA2u, 0x7FFu, 0x800u, 0x20ACu, 0xFFFFu, 0x10000u,
                      0x10348u, 0x10FFFFu}) {
    AppendUtf8(cp, &out);
  }
  EXPECT_EQ(out,
            "\x24\x7F\xC2\x80\xC2\xA2\xDF\xBF\xE0\xA0\x80\xE2\x82\xAC\xEF\xBF\xBF"
            "\xF0\x90\x80\x80\xF0\x90\x8D\x88\xF4\x8F\xBF\xBF");
}

TEST(SanitizeUtf8Test, ReplacesInvalidSequencesOnly) {
  EXPECT_EQ(SanitizeUtf8("plain"), "plain");
  EXPECT_EQ(SanitizeUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),
            "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
  EXPECT_EQ(SanitizeUtf8("caf\xe9"), "caf\xef\xbf\xbd");
  EXPECT_EQ(SanitizeUtf8("\xff\xfe"), "\xef\xbf\xbd\xef\xbf\xbd");
  EXPECT_EQ(SanitizeUtf8("\xc0\xaf"), "\xef\xbf\xbd\xef\xbf\xbd");                  // overlong '/'
  EXPECT_EQ(SanitizeUtf8("\xed\xa0\x80"), "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");  // surrogate
  EXPECT_EQ(SanitizeUtf8("\xe2\x82"), "\xef\xbf\xbd\xef\xbf\xbd");                  // truncated
  EXPECT_EQ(SanitizeUtf8(std::string("a\0b", 3)), std::string("a\0b", 3));
}

TEST(Utf8Test, ValidatesWholeSequences) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("/mnt/caf\xc3\xa9 \xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("/mnt/\xff"));
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(IsValidUtf8("ab\xe2\x82"));        // truncated
  EXPECT_EQ(Utf8SequenceLength(""), 0u);
  EXPECT_EQ(Utf8SequenceLength("a"), 1u);
  EXPECT_EQ(Utf8SequenceLength("\xe2\x82\xac!"), 3u);
}

}  // namespace
}  // namespace imgfs
