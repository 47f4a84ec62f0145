// Fuzz target: an OCI layout's oci-layout and index.json (registry/oci_layout.h) on arbitrary
// bytes. Never crashes or throws; an index.json that decodes re-encodes to one that decodes
// to the same value, and naming an image in it leaves exactly one entry with that name.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "registry/oci_layout.h"

namespace {

void Fail(const char* what) {
  std::fprintf(stderr, "oci_layout fuzz: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace imgfs::registry;  // NOLINT(google-build-using-namespace)
  std::string_view bytes(reinterpret_cast<const char*>(data), size);

  imgfs::Status layout = CheckOciLayoutFile(bytes);
  if (!layout.ok() && layout.code() != imgfs::StatusCode::kCorrupt) {
    Fail("oci-layout error is not Corrupt");
  }

  imgfs::Result<Index> index = DecodeOciIndex(bytes);
  if (!index.has_value()) {
    if (index.error().code() != imgfs::StatusCode::kCorrupt) Fail("index.json error not Corrupt");
    if (index.error().message().find("index.json") == std::string::npos) {
      Fail("index.json error does not name the file");
    }
    return 0;
  }
  for (const Descriptor& d : index->manifests) {
    if (d.size < 0) Fail("negative descriptor size");
  }
  const std::string encoded = EncodeOciIndex(*index);
  imgfs::Result<Index> again = DecodeOciIndex(encoded);
  if (!again.has_value()) Fail("encoded index.json does not decode");
  if (EncodeOciIndex(*again) != encoded) Fail("index.json encoding is not canonical");

  if (!index->manifests.empty()) {
    const std::string name = "fuzz:latest";
    Descriptor image = index->manifests.front();
    NameInOciIndex(&*index, image, name);
    size_t named = 0;
    for (const Descriptor& d : index->manifests) {
      auto it = d.annotations.find(std::string(kRefNameAnnotation));
      if (it != d.annotations.end() && it->second == name) ++named;
    }
    if (named != 1) Fail("a name names more than one image");
  }
  return 0;
}
