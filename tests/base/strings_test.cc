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

}  // namespace
}  // namespace imgfs
