// Fuzz target: registry::Reference::Parse on arbitrary text. Never crashes; a parsed
// reference's String() parses back to the same reference (String() is a fixed point), and
// the familiar and endpoint forms are computable.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "registry/reference.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using imgfs::registry::Reference;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  imgfs::Result<Reference> ref = Reference::Parse(text);
  if (!ref.has_value()) {
    if (ref.error().message().empty()) std::abort();
    return 0;
  }
  std::string full = ref->String();
  imgfs::Result<Reference> again = Reference::Parse(full);
  if (!again.has_value() || !(*again == *ref) || again->String() != full) {
    std::fprintf(stderr, "round trip failed: input \"%.*s\" -> \"%s\"\n",
                 static_cast<int>(text.size()), text.data(), full.c_str());
    std::abort();
  }
  // Familiar forms may normalise differently when re-parsed (Docker's own behaviour for
  // "docker.io/localhost/x"), so only compute them.
  volatile size_t sink = ref->FamiliarString().size() + ref->Endpoint().size() +
                         ref->TagOrDigest().size() +
                         static_cast<size_t>(imgfs::registry::IsLoopbackHost(ref->domain()));
  (void)sink;
  imgfs::registry::IsLoopbackHost(text);
  return 0;
}
