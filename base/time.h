// imgfs — RFC 3339 times (the form of every time in image configs, TOCs and the store's
// records): one formatter and one strict parser.
//
// Thread-safety: pure functions; safe from any thread.
#ifndef IMGFS_BASE_TIME_H_
#define IMGFS_BASE_TIME_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"

namespace imgfs {

// Days since 1970-01-01 of a civil (proleptic Gregorian) date (Howard Hinnant's algorithm).
int64_t DaysFromCivil(int64_t year, unsigned month, unsigned day);

// "YYYY-MM-DDTHH:MM:SSZ" in UTC; with `nanos`, "YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ" (nine digits,
// so that records sort as text), or with `go_style` as Go's time.RFC3339Nano writes it
// (trailing zeros and a zero fraction left out: what eStargz and zstd:chunked TOCs carry).
std::string FormatRfc3339(int64_t unix_seconds);
std::string FormatRfc3339Nanos(int64_t unix_seconds, uint32_t nanos, bool go_style = false);
// The current time, formatted as above.
std::string NowRfc3339();
std::string NowRfc3339Nanos();

// Parses an RFC 3339 date-time ("2024-03-01T01:00:00.5+01:00", "…Z"): seconds since the
// epoch (negative before 1970) and nanoseconds. An empty text is the epoch. Anything else
// that is not RFC 3339 is kCorrupt naming the text.
Status ParseRfc3339(std::string_view text, int64_t* sec, uint32_t* nsec);

}  // namespace imgfs

#endif  // IMGFS_BASE_TIME_H_
