// imgfs — proves that the sanitizer builds really instrument the code: a deliberate
// heap-buffer overflow must be caught by AddressSanitizer (in the asan build) and is not run
// otherwise (the test exists only in sanitizer builds). Model: mountpoint-s3's `test-asan-working`.
#include <cstdlib>
#include <cstring>

#include <gtest/gtest.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define IMGFS_HAVE_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define IMGFS_HAVE_ASAN 1
#endif

namespace {

#ifdef IMGFS_HAVE_ASAN
[[gnu::noinline]] int Overflow(int index) {
  char* p = static_cast<char*>(std::malloc(8));
  std::memset(p, 0, 8);
  int v = p[index];
  std::free(p);
  return v;
}

TEST(SanitizerCanaryTest, AddressSanitizerCatchesOverflow) {
  EXPECT_DEATH(Overflow(8), "heap-buffer-overflow");
}
#endif

}  // namespace
