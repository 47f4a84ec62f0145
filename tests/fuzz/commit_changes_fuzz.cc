// imgfs — fuzz target for `imgfs commit --change` (fs/commit.h ApplyConfigChanges): the input
// is split at newlines into instructions applied to a fixed image config. Oracles: a success
// is a JSON object that still carries the untouched fields, and applying the same changes
// again to the result gives the same document (every instruction is idempotent).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "fs/image_ops/commit.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> changes;
  size_t pos = 0;
  while (pos <= in.size() && changes.size() < 16) {
    size_t nl = in.find('\n', pos);
    if (nl == std::string_view::npos) nl = in.size();
    changes.emplace_back(in.substr(pos, nl - pos));
    pos = nl + 1;
  }
  const std::string base =
      R"({"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"]},)"
      R"("rootfs":{"type":"layers","diff_ids":[]}})";
  auto out = imgfs::fs::ApplyConfigChanges(base, changes);
  if (!out.has_value()) return 0;
  nlohmann::json j = nlohmann::json::parse(*out, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || j.value("architecture", "") != "amd64" ||
      !j.contains("rootfs") || !j["config"].is_object()) {
    std::abort();
  }
  auto again = imgfs::fs::ApplyConfigChanges(*out, changes);
  if (!again.has_value() || *again != *out) std::abort();
  return 0;
}
