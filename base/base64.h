// imgfs — base64 (RFC 4648 standard alphabet) decoding for the formats that carry binary
// values in text: PAX LIBARCHIVE.xattr records, eStargz / zstd:chunked TOC xattrs.
//
// Thread-safety: a pure function.
#ifndef IMGFS_BASE_BASE64_H_
#define IMGFS_BASE_BASE64_H_

#include <string>
#include <string_view>

#include "base/status.h"

namespace imgfs {

// Decodes `in`; trailing '=' padding is optional (writers differ). Corrupt for characters
// outside the alphabet, '=' before the end, or an impossible length.
Result<std::string> DecodeBase64(std::string_view in);

}  // namespace imgfs

#endif  // IMGFS_BASE_BASE64_H_
