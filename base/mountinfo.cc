// imgfs — reading /proc/self/mountinfo (see mountinfo.h).
#include "base/mountinfo.h"

#include "base/file_util.h"
#include "base/status.h"

namespace imgfs {
namespace {

// A mountinfo field with its octal escapes (\040 and the like) undone.
std::string Unescape(std::string_view field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size() && field[i + 1] >= '0' && field[i + 1] <= '3' &&
        field[i + 2] >= '0' && field[i + 2] <= '7' && field[i + 3] >= '0' && field[i + 3] <= '7') {
      out += static_cast<char>((field[i + 1] - '0') * 64 + (field[i + 2] - '0') * 8 +
                               (field[i + 3] - '0'));
      i += 3;
    } else {
      out += field[i];
    }
  }
  return out;
}

// The space-separated fields of `line` (empty fields of repeated spaces kept, as the kernel
// never writes them).
std::vector<std::string_view> Fields(std::string_view line) {
  std::vector<std::string_view> fields;
  size_t f = 0;
  while (f <= line.size()) {
    size_t sp = line.find(' ', f);
    if (sp == std::string_view::npos) sp = line.size();
    fields.push_back(line.substr(f, sp - f));
    f = sp + 1;
  }
  return fields;
}

bool IsMajMin(std::string_view dev) {
  const size_t colon = dev.find(':');
  return colon != 0 && colon != std::string_view::npos && colon + 1 != dev.size() &&
         dev.find_first_not_of("0123456789:") == std::string_view::npos &&
         dev.find(':', colon + 1) == std::string_view::npos;
}

}  // namespace

std::vector<MountInfoEntry> ParseMountInfo(std::string_view mountinfo) {
  std::vector<MountInfoEntry> out;
  size_t pos = 0;
  while (pos < mountinfo.size()) {
    size_t nl = mountinfo.find('\n', pos);
    if (nl == std::string_view::npos) nl = mountinfo.size();
    const std::vector<std::string_view> fields = Fields(mountinfo.substr(pos, nl - pos));
    pos = nl + 1;
    if (fields.size() < 6) continue;
    MountInfoEntry e{std::string(fields[2]),
                     Unescape(fields[3]),
                     Unescape(fields[4]),
                     std::string(fields[5]),
                     "",
                     "",
                     ""};
    for (size_t i = 6; i < fields.size(); ++i) {
      if (fields[i] != "-") continue;
      if (i + 1 < fields.size()) e.fstype = std::string(fields[i + 1]);
      if (i + 2 < fields.size()) e.source = Unescape(fields[i + 2]);
      if (i + 3 < fields.size()) e.super_options = std::string(fields[i + 3]);
      break;
    }
    out.push_back(std::move(e));
  }
  return out;
}

std::vector<MountInfoEntry> ReadMountInfo() {
  Result<std::string> text = ReadFile("/proc/self/mountinfo");
  return text.has_value() ? ParseMountInfo(*text) : std::vector<MountInfoEntry>{};
}

std::optional<std::string> MountDeviceOf(std::string_view mountinfo, std::string_view mountpoint) {
  std::optional<std::string> found;
  for (MountInfoEntry& e : ParseMountInfo(mountinfo)) {
    if (e.mountpoint == mountpoint && IsMajMin(e.device)) found = std::move(e.device);
  }
  return found;
}

bool IsMountPoint(std::string_view path) {
  for (const MountInfoEntry& e : ReadMountInfo()) {
    if (e.mountpoint == path) return true;
  }
  return false;
}

}  // namespace imgfs
