#include "base/strings.h"

namespace imgfs {

std::string QuoteForMessage(std::string_view text, size_t max_shown) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (char c : text.substr(0, max_shown)) {
    const auto b = static_cast<unsigned char>(c);
    if (b < 0x20 || b >= 0x7f || c == '"' || c == '\\') {
      out += "\\x";
      out += kHex[b >> 4];
      out += kHex[b & 0xf];
    } else {
      out += c;
    }
  }
  return out + (text.size() > max_shown ? "...\"" : "\"");
}

}  // namespace imgfs
