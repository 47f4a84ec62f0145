#include "base/random.h"

#include <sys/random.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>

namespace imgfs {

std::string RandomHex(size_t bytes) {
  static const char kHex[] = "0123456789abcdef";
  std::string raw(bytes, '\0');
  size_t got = 0;
  while (got < raw.size()) {
    ssize_t n = ::getrandom(raw.data() + got, raw.size() - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  if (got < raw.size()) {
    auto seed = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
                (static_cast<uint64_t>(::getpid()) * 2654435761u);
    for (size_t i = got; i < raw.size(); ++i) {
      seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
      raw[i] = static_cast<char>(seed >> 56);
    }
  }
  std::string out;
  out.reserve(2 * raw.size());
  for (char c : raw) {
    auto b = static_cast<unsigned char>(c);
    out += kHex[b >> 4];
    out += kHex[b & 0xf];
  }
  return out;
}

}  // namespace imgfs
