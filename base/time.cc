#include "base/time.h"

#include <time.h>

#include <cstdio>
#include <ctime>

namespace imgfs {

int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2 ? 1 : 0;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

std::string FormatRfc3339(int64_t unix_seconds) {
  time_t t = static_cast<time_t>(unix_seconds);
  tm utc{};
  ::gmtime_r(&t, &utc);
  char buf[64];
  size_t n = std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return std::string(buf, n);
}

std::string FormatRfc3339Nanos(int64_t unix_seconds, uint32_t nanos) {
  time_t t = static_cast<time_t>(unix_seconds);
  tm utc{};
  ::gmtime_r(&t, &utc);
  char buf[64];
  size_t n = std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &utc);
  char frac[16];
  std::snprintf(frac, sizeof(frac), ".%09uZ", nanos % 1000000000u);
  return std::string(buf, n) + frac;
}

std::string NowRfc3339() { return FormatRfc3339(static_cast<int64_t>(::time(nullptr))); }

std::string NowRfc3339Nanos() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return FormatRfc3339Nanos(ts.tv_sec, static_cast<uint32_t>(ts.tv_nsec));
}

Status ParseRfc3339(std::string_view t, int64_t* sec, uint32_t* nsec) {
  *sec = 0;
  *nsec = 0;
  if (t.empty()) return Status::Ok();
  auto bad = [&] { return Status::Corrupt("bad RFC 3339 time '" + std::string(t) + "'"); };
  auto num = [&](size_t pos, size_t n, int64_t* v) {
    if (pos + n > t.size()) return false;
    int64_t x = 0;
    for (size_t i = pos; i < pos + n; ++i) {
      if (t[i] < '0' || t[i] > '9') return false;
      x = x * 10 + (t[i] - '0');
    }
    *v = x;
    return true;
  };
  int64_t y, mo, d, h, mi, s;
  if (t.size() < 20 || !num(0, 4, &y) || t[4] != '-' || !num(5, 2, &mo) || t[7] != '-' ||
      !num(8, 2, &d) || (t[10] != 'T' && t[10] != 't') || !num(11, 2, &h) || t[13] != ':' ||
      !num(14, 2, &mi) || t[16] != ':' || !num(17, 2, &s)) {
    return bad();
  }
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60) return bad();
  size_t pos = 19;
  uint32_t frac = 0;
  if (pos < t.size() && t[pos] == '.') {
    ++pos;
    size_t digits = 0;
    while (pos < t.size() && t[pos] >= '0' && t[pos] <= '9') {
      if (digits < 9) frac = frac * 10 + static_cast<uint32_t>(t[pos] - '0');
      ++digits;
      ++pos;
    }
    if (digits == 0) return bad();
    for (size_t i = digits; i < 9; ++i) frac *= 10;
  }
  int64_t offset = 0;
  if (pos < t.size() && (t[pos] == 'Z' || t[pos] == 'z')) {
    ++pos;
  } else if (pos < t.size() && (t[pos] == '+' || t[pos] == '-')) {
    int64_t oh, om;
    if (!num(pos + 1, 2, &oh) || pos + 3 >= t.size() || t[pos + 3] != ':' ||
        !num(pos + 4, 2, &om) || oh > 23 || om > 59) {
      return bad();
    }
    offset = (oh * 60 + om) * 60 * (t[pos] == '-' ? -1 : 1);
    pos += 6;
  } else {
    return bad();
  }
  if (pos != t.size()) return bad();
  *sec = DaysFromCivil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d)) * 86400 + h * 3600 +
         mi * 60 + s - offset;
  *nsec = frac;
  return Status::Ok();
}

}  // namespace imgfs
