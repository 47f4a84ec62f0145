// imgfs — fuzz target for ParseWwwAuthenticate.
//
// Oracle: whatever parses must survive a round trip. The challenges are printed back in
// canonical form (lower-case scheme, every value quoted and escaped) and parsed again; the
// result must be identical. Schemes and parameter names must be non-empty lower-case tokens.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "registry/auth.h"

namespace {

using imgfs::registry::Challenge;

std::string Quote(const std::string& value) {
  std::string out = "\"";
  for (char c : value) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

std::string Print(const std::vector<Challenge>& challenges) {
  std::string out;
  for (const Challenge& c : challenges) {
    if (!out.empty()) out += ", ";
    out += c.scheme;
    if (!c.token68.empty()) {
      out += " " + c.token68;
      continue;
    }
    bool first = true;
    for (const auto& [name, value] : c.params) {
      out += first ? " " : ", ";
      first = false;
      out += name + "=" + Quote(value);
    }
  }
  return out;
}

void Fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "www_authenticate_fuzz: %s: %s\n", what, detail.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  imgfs::Result<std::vector<Challenge>> parsed = imgfs::registry::ParseWwwAuthenticate(input);
  if (!parsed.has_value()) return 0;
  for (const Challenge& c : *parsed) {
    if (c.scheme.empty()) Fail("empty scheme", std::string(input));
    for (char ch : c.scheme) {
      if (ch >= 'A' && ch <= 'Z') Fail("scheme not lower-cased", c.scheme);
    }
    if (!c.token68.empty() && !c.params.empty()) Fail("token68 and params", std::string(input));
    for (const auto& [name, value] : c.params) {
      if (name.empty()) Fail("empty parameter name", std::string(input));
    }
  }
  std::string printed = Print(*parsed);
  imgfs::Result<std::vector<Challenge>> again = imgfs::registry::ParseWwwAuthenticate(printed);
  if (!again.has_value()) Fail("canonical form does not parse", printed);
  if (*again != *parsed) Fail("round trip changed the challenges", printed);
  return 0;
}
