// imgfs — /etc/subuid and /etc/subgid.
#include "fs/run/subid.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>

#include "base/unique_fd.h"

namespace imgfs::fs::run {
namespace {

// The id no range may reach: (uid_t)-1 means "unchanged" to setresuid(2) and chown(2).
constexpr uint64_t kInvalidId = 4294967295u;

// A decimal number of digits only (no sign, no spaces), within 32 bits.
bool ParseId(std::string_view text, uint32_t* out) {
  if (text.empty() || text.find_first_not_of("0123456789") != std::string_view::npos) {
    return false;
  }
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && end == text.data() + text.size();
}

}  // namespace

std::vector<SubordinateRange> ParseSubordinateRanges(std::string_view text,
                                                     std::string_view user_name, uint32_t user_id) {
  std::vector<SubordinateRange> out;
  while (!text.empty() && out.size() < kMaxSubordinateRanges) {
    size_t newline = text.find('\n');
    std::string_view line = text.substr(0, newline);
    text.remove_prefix(newline == std::string_view::npos ? text.size() : newline + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line[0] == '#') continue;
    size_t first = line.find(':');
    if (first == std::string_view::npos) continue;
    size_t second = line.find(':', first + 1);
    if (second == std::string_view::npos || line.find(':', second + 1) != std::string_view::npos) {
      continue;
    }
    std::string_view owner = line.substr(0, first);
    uint32_t owner_id = 0;
    bool matches = (!user_name.empty() && owner == user_name) ||
                   (ParseId(owner, &owner_id) && owner_id == user_id);
    if (!matches) continue;
    SubordinateRange range;
    if (!ParseId(line.substr(first + 1, second - first - 1), &range.start) ||
        !ParseId(line.substr(second + 1), &range.count) || range.count == 0 ||
        static_cast<uint64_t>(range.start) + range.count > kInvalidId) {
      continue;
    }
    out.push_back(range);
  }
  return out;
}

Result<std::vector<SubordinateRange>> ReadSubordinateRanges(const std::string& path,
                                                            std::string_view user_name,
                                                            uint32_t user_id) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd.IsValid()) return Status::FromErrno(errno, "opening " + path);
  // One byte more than the limit tells a file at the limit from a larger one.
  std::string text(kMaxSubordinateFileBytes + 1, '\0');
  size_t used = 0;
  while (used < text.size()) {
    ssize_t n = ::read(fd.get(), text.data() + used, text.size() - used);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, "reading " + path);
    if (n == 0) break;
    used += static_cast<size_t>(n);
  }
  if (used > kMaxSubordinateFileBytes) {
    return Status::InvalidArgument(path + " is larger than " +
                                   std::to_string(kMaxSubordinateFileBytes) + " bytes");
  }
  text.resize(used);
  return ParseSubordinateRanges(text, user_name, user_id);
}

}  // namespace imgfs::fs::run
