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

}  // namespace
}  // namespace imgfs
