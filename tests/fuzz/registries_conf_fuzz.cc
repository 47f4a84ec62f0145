// Fuzz target: registry::ParseRegistriesConf on arbitrary text, then resolution of a few
// references through what parsed. Never crashes; a parsed configuration keeps its invariants
// (every registry has a prefix, every mirror a location) and a failure has a message naming
// the file.
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "registry/pull_endpoints.h"
#include "registry/registries_conf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace imgfs::registry;  // NOLINT(google-build-using-namespace): a fuzz driver
  std::string_view text(reinterpret_cast<const char*>(data), size);
  imgfs::Result<RegistriesConf> conf = ParseRegistriesConf(text, "fuzz.conf");
  if (!conf.has_value()) {
    if (!conf.error().message().starts_with("fuzz.conf")) std::abort();
    return 0;
  }
  for (const RegistryConf& reg : conf->registries) {
    if (reg.prefix.empty()) std::abort();
    for (const MirrorConf& m : reg.mirrors) {
      if (m.location.empty()) std::abort();
    }
  }
  static const std::vector<std::string_view> kRefs = {
      "alpine", "docker.io/library/alpine:3.20", "quay.io/a/b:1", "127.0.0.1:5000/demo/app:1",
      "a.example.com/x@sha256:1fb51b9d896f2a83747de477a0e885a04b169111076bf13b7b3a4a718f37e229"};
  for (std::string_view text_ref : kRefs) {
    imgfs::Result<std::vector<Reference>> candidates = ResolveShortName(*conf, text_ref);
    if (!candidates.has_value()) continue;
    for (const Reference& ref : *candidates) {
      imgfs::Result<std::vector<PullEndpoint>> endpoints = PullEndpoints(*conf, ref);
      if (endpoints.has_value() && endpoints->empty()) std::abort();
    }
  }
  return 0;
}
