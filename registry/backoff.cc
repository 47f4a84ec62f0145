// imgfs — RetryDelay (see backoff.h).
#include "registry/backoff.h"

#include <algorithm>
#include <cctype>
#include <string>

namespace imgfs::registry {

std::chrono::milliseconds RetryDelay(int retry, std::chrono::milliseconds base,
                                     std::chrono::milliseconds max, const HttpResponse* response) {
  auto delay = base;
  for (int i = 1; i < retry && delay < max; ++i) delay *= 2;
  if (response != nullptr && (response->status == 429 || response->status == 503)) {
    std::string text = response->Header("retry-after");
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
    const size_t start = text.find_first_not_of(" \t");
    text = start == std::string::npos ? "" : text.substr(start);
    // At most 8 digits: larger values are capped by `max` anyway and never overflow here.
    if (!text.empty() && text.size() < 9 &&
        std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      delay = std::chrono::seconds(std::stol(text));
    }
  }
  return std::min(delay, max);
}

}  // namespace imgfs::registry
