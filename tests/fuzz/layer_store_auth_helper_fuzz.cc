// imgfs — fuzz target for the additional-layer-store-auth-helper input
// (fs/layer_store/auth_helper.h): what containers/image writes on the helper's stdin, and what
// any local user of the store's socket could send. Oracle: what parses is within the bounds
// and names a host for every credential.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "fs/layer_store/auth_helper.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  auto creds = imgfs::fs::ParseAuthHelperInput(in);
  if (!creds.has_value()) return 0;
  if (creds->size() > imgfs::fs::kMaxAuthHelperEntries) std::abort();
  for (const imgfs::fs::HelperCredential& c : *creds) {
    if (c.host.empty()) std::abort();
    if (c.credential.username.empty() && c.credential.identity_token.empty()) std::abort();
    if (c.credential.password.size() > imgfs::fs::kMaxAuthHelperFieldBytes) std::abort();
  }
  return 0;
}
