// Fuzz target: manifest, index and image-config decoding on arbitrary bytes. Never crashes or
// throws; whatever decodes re-encodes to canonical JSON that decodes to the same value, and
// platform selection on a decoded index always answers.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "registry/manifest.h"

namespace {

void Fail(const char* what) {
  std::fprintf(stderr, "manifest fuzz: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace imgfs::registry;  // NOLINT(google-build-using-namespace)
  std::string_view bytes(reinterpret_cast<const char*>(data), size);

  imgfs::Result<DocumentKind> kind = ClassifyDocument(bytes, "");
  (void)kind;

  imgfs::Result<Manifest> m = DecodeManifest(bytes);
  if (m.has_value()) {
    // Every download a manifest asks for is bounded by its descriptors' sizes.
    if (m->config.size <= 0 || m->config.size > kMaxConfigBytes) Fail("unbounded config size");
    for (const Descriptor& d : m->layers) {
      if (d.size <= 0) Fail("layer without a size");
    }
    std::string encoded = EncodeManifest(*m);
    imgfs::Result<Manifest> again = DecodeManifest(encoded);
    if (!again.has_value()) Fail("encoded manifest does not decode");
    if (!(*again == *m)) Fail("manifest round trip changed the value");
    if (EncodeManifest(*again) != encoded) Fail("manifest encoding is not canonical");
  } else if (m.error().message().empty()) {
    Fail("manifest error without a message");
  }

  imgfs::Result<Index> idx = DecodeIndex(bytes);
  if (idx.has_value()) {
    std::string encoded = EncodeIndex(*idx);
    imgfs::Result<Index> again = DecodeIndex(encoded);
    if (!again.has_value()) Fail("encoded index does not decode");
    if (!(*again == *idx)) Fail("index round trip changed the value");
    for (const char* p : {"linux/amd64", "linux/arm/v7", "linux/arm64"}) {
      imgfs::Result<Descriptor> d = SelectPlatform(*idx, *Platform::Parse(p));
      if (!d.has_value() && d.error().code() != imgfs::StatusCode::kNotFound) {
        Fail("SelectPlatform failed with something else than NotFound");
      }
    }
  }

  imgfs::Result<ImageConfig> config = DecodeImageConfig(bytes);
  if (config.has_value() && config->raw != bytes) Fail("config raw bytes differ");
  return 0;
}
