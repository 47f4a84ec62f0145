// Tests for registry/backoff.h: the retry delay shared by pull and push.
#include "registry/backoff.h"

#include <gtest/gtest.h>

namespace imgfs::registry {
namespace {

using std::chrono::milliseconds;

TEST(RetryDelayTest, DoublesUpToTheCap) {
  EXPECT_EQ(RetryDelay(1, milliseconds(500), milliseconds(10000), nullptr), milliseconds(500));
  EXPECT_EQ(RetryDelay(2, milliseconds(500), milliseconds(10000), nullptr), milliseconds(1000));
  EXPECT_EQ(RetryDelay(3, milliseconds(500), milliseconds(10000), nullptr), milliseconds(2000));
  EXPECT_EQ(RetryDelay(60, milliseconds(500), milliseconds(10000), nullptr), milliseconds(10000));
}

TEST(RetryDelayTest, RetryAfterOf429And503IsHonouredUpToTheCap) {
  HttpResponse r;
  r.status = 429;
  r.headers["retry-after"] = " 3 ";
  EXPECT_EQ(RetryDelay(1, milliseconds(500), milliseconds(10000), &r), milliseconds(3000));
  r.status = 503;
  r.headers["retry-after"] = "99999999";
  EXPECT_EQ(RetryDelay(1, milliseconds(500), milliseconds(10000), &r), milliseconds(10000));
  // An HTTP-date, junk, 20 digits, or another status: the exponential delay.
  for (const char* junk : {"Wed, 21 Oct 2015 07:28:00 GMT", "-1", "12345678901234567890", ""}) {
    r.headers["retry-after"] = junk;
    EXPECT_EQ(RetryDelay(2, milliseconds(500), milliseconds(10000), &r), milliseconds(1000))
        << junk;
  }
  r.status = 500;
  r.headers["retry-after"] = "3";
  EXPECT_EQ(RetryDelay(1, milliseconds(500), milliseconds(10000), &r), milliseconds(500));
}

}  // namespace
}  // namespace imgfs::registry
