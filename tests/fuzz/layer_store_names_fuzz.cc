// imgfs — fuzz target for the names and files of the Additional Layer Store
// (fs/layer_store/layer_store.h): the input is a reference directory name (any local user may
// look one up below the mount) and, after the first newline, an info file. Oracles: a decoded
// reference is a normalised one (decoding its own base64 again is not needed: it must parse
// and be its own normal form), and an info file that parses writes back to one that parses to
// the same fields.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fs/layer_store/layer_store.h"
#include "registry/reference.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const size_t nl = in.find('\n');
  const std::string_view name = in.substr(0, nl);
  auto ref = imgfs::fs::DecodeRefElement(name);
  if (ref.has_value()) {
    auto again = imgfs::registry::Reference::Parse(*ref);
    if (!again.has_value() || again->String() != *ref) std::abort();
  }
  if (nl == std::string_view::npos) return 0;
  auto info = imgfs::fs::ParseLayerInfoJson(in.substr(nl + 1));
  if (!info.has_value()) return 0;
  auto round = imgfs::fs::ParseLayerInfoJson(imgfs::fs::LayerInfoJson(*info));
  if (!round.has_value() || round->compressed != info->compressed ||
      round->compressed_size != info->compressed_size || round->toc != info->toc ||
      round->compression != info->compression || round->diff_size != info->diff_size) {
    std::abort();
  }
  return 0;
}
