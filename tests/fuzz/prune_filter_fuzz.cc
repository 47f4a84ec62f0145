// imgfs — fuzz target for `imgfs image prune --filter` (cache/images.h ParsePruneFilters): the
// input is split at newlines into filter arguments. Oracles: a success names a label key in
// every label filter, parsing again gives the same filter, and an image whose Labels are
// exactly the label=KEY=VALUE filters (distinct keys) matches them.
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "cache/images.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> args;
  size_t pos = 0;
  while (pos <= in.size() && args.size() < 16) {
    size_t nl = in.find('\n', pos);
    if (nl == std::string_view::npos) nl = in.size();
    args.emplace_back(in.substr(pos, nl - pos));
    pos = nl + 1;
  }
  constexpr int64_t kNow = 1714521600;  // 2024-05-01T00:00:00Z
  auto f = imgfs::cache::ParsePruneFilters(args, kNow);
  if (!f.has_value()) return 0;
  std::map<std::string, std::string> labels;
  bool distinct = true;
  for (const std::vector<std::string>* list : {&f->labels, &f->not_labels}) {
    for (const std::string& kv : *list) {
      if (kv.empty() || kv[0] == '=') std::abort();
    }
  }
  for (const std::string& kv : f->labels) {
    size_t eq = kv.find('=');
    std::string key = kv.substr(0, eq);
    std::string value = eq == std::string::npos ? "" : kv.substr(eq + 1);
    if (labels.count(key) > 0) distinct = false;
    labels[key] = value;
  }
  if (distinct && !imgfs::cache::MatchesLabels(f->labels, labels)) std::abort();
  auto again = imgfs::cache::ParsePruneFilters(args, kNow);
  if (!again.has_value() || again->all != f->all || again->until_unix_s != f->until_unix_s ||
      again->labels != f->labels || again->not_labels != f->not_labels) {
    std::abort();
  }
  return 0;
}
