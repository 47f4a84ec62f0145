// imgfs — small string helpers every module needs and none owns.
//
// Thread-safety: pure functions.
#ifndef IMGFS_BASE_STRINGS_H_
#define IMGFS_BASE_STRINGS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace imgfs {

// `text` in double quotes for an error or log line: bytes outside printable ASCII, `"` and
// `\` as \xNN (so hostile input cannot forge log lines or send terminal escapes), at most
// `max_shown` bytes of it, then `..."` when it was longer.
std::string QuoteForMessage(std::string_view text, size_t max_shown = 100);

// ASCII lower case (host names, header names, media-type parameters: never locale-dependent).
std::string ToLower(std::string_view text);

// Appends the UTF-8 encoding of Unicode scalar value `cp` (at most 0x10FFFF and not a
// surrogate: the caller has checked) to *out.
void AppendUtf8(uint32_t cp, std::string* out);

// Length of the well-formed UTF-8 sequence at the start of `text` (RFC 3629: no overlongs, no
// surrogates, nothing above U+10FFFF): 1 for an ASCII byte, 0 when there is none (or `text`
// is empty).
size_t Utf8SequenceLength(std::string_view text);

// Whether all of `text` is well-formed UTF-8 (what JSON text may hold).
bool IsValidUtf8(std::string_view text);

// `text` with each byte that starts no well-formed sequence replaced by U+FFFD.
std::string SanitizeUtf8(std::string_view text);

// `text` without leading and trailing ASCII white space (space, \t, \n, \v, \f, \r).
std::string_view Trim(std::string_view text);

}  // namespace imgfs

#endif  // IMGFS_BASE_STRINGS_H_
