// imgfs — tests for base/base64.h.
#include "base/base64.h"

#include <gtest/gtest.h>

namespace imgfs {
namespace {

TEST(Base64Test, DecodesPaddedAndUnpadded) {
  EXPECT_EQ(DecodeBase64("AP8Q").value(), std::string("\x00\xff\x10", 3));
  EXPECT_EQ(DecodeBase64("aGVsbG8geGF0dHI=").value(), "hello xattr");
  EXPECT_EQ(DecodeBase64("aGVsbG8geGF0dHI").value(), "hello xattr");
  EXPECT_EQ(DecodeBase64("").value(), "");
}

TEST(Base64Test, RejectsBadInput) {
  EXPECT_FALSE(DecodeBase64("a*==").has_value());
  EXPECT_FALSE(DecodeBase64("abcde").has_value());  // impossible length
  EXPECT_FALSE(DecodeBase64("ab=c").has_value());   // padding inside
  EXPECT_EQ(DecodeBase64("a*==").error().code(), StatusCode::kCorrupt);
}

}  // namespace
}  // namespace imgfs
