// imgfs — test helper: describe and compare directory trees.
#include "tests/support/tree_compare.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <sstream>

#include "base/unique_fd.h"
#include "registry/digest.h"

namespace imgfs::testing {
namespace {

std::string Hex(const std::string& bytes) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kHex[c >> 4];
    out += kHex[c & 0xf];
  }
  return out;
}

std::string FormatTime(int64_t sec, uint32_t nsec) {
  time_t t = static_cast<time_t>(sec);
  struct tm tm {};
  gmtime_r(&t, &tm);
  char buf[64];
  strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  std::string out = buf;
  if (nsec != 0) {
    char frac[16];
    snprintf(frac, sizeof(frac), ".%09u", nsec);
    out += frac;
  }
  return out + "Z";
}

bool ParseTime(const std::string& text, int64_t* sec, uint32_t* nsec) {
  struct tm tm {};
  const char* rest = strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (rest == nullptr) return false;
  *sec = timegm(&tm);
  *nsec = 0;
  if (*rest == '.') {
    ++rest;
    std::string digits;
    while (*rest >= '0' && *rest <= '9') digits += *rest++;
    digits.resize(9, '0');
    *nsec = static_cast<uint32_t>(std::stoul(digits));
  }
  return true;
}

std::string Xattrs(const std::string& path, const TreeOptions& options) {
  std::string names(65536, '\0');
  ssize_t n = llistxattr(path.c_str(), names.data(), names.size());
  if (n <= 0) return "-";
  names.resize(static_cast<size_t>(n));
  std::vector<std::string> list;
  for (size_t pos = 0; pos < names.size();) {
    std::string name(names.c_str() + pos);
    pos += name.size() + 1;
    if (name.empty() || options.ignore_xattrs.count(name) > 0) continue;
    std::string value(65536, '\0');
    ssize_t vn = lgetxattr(path.c_str(), name.c_str(), value.data(), value.size());
    if (vn < 0) continue;
    value.resize(static_cast<size_t>(vn));
    list.push_back(name + "=0x" + Hex(value));
  }
  if (list.empty()) return "-";
  std::sort(list.begin(), list.end());
  std::string out;
  for (const auto& x : list) {
    if (!out.empty()) out += ",";
    out += x;
  }
  return out;
}

std::string Sha256File(const std::string& path, std::string* error) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *error = "open " + path + ": " + strerror(errno);
    return "";
  }
  UniqueFd owned(fd);
  registry::Sha256 hasher;
  std::string buf(1 << 20, '\0');
  for (;;) {
    ssize_t n = read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      *error = "read " + path + ": " + strerror(errno);
      return "";
    }
    if (n == 0) break;
    hasher.Update(std::string_view(buf.data(), static_cast<size_t>(n)));
  }
  return hasher.Finish().hex();
}

void Walk(const std::string& root, const std::string& rel, const TreeOptions& options,
          std::map<std::string, TreeEntry>* out,
          std::map<std::pair<dev_t, ino_t>, std::vector<std::string>>* inodes, std::string* error) {
  if (!error->empty()) return;
  std::string path = rel.empty() ? root : root + rel;
  std::string key = rel.empty() ? "/" : rel;
  if (options.ignore_paths.count(key) > 0) return;
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) {
    *error = "lstat " + path + ": " + strerror(errno);
    return;
  }
  TreeEntry e;
  e.mode = st.st_mode & 07777;
  e.uid = st.st_uid;
  e.gid = st.st_gid;
  e.mtime_sec = st.st_mtim.tv_sec;
  e.mtime_nsec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
  e.size = "-";
  e.content = "-";
  e.nlink = "-";
  e.xattrs = options.compare_xattrs ? Xattrs(path, options) : "-";
  if (S_ISDIR(st.st_mode)) {
    e.type = 'd';
  } else if (S_ISREG(st.st_mode)) {
    e.type = 'f';
    e.size = std::to_string(st.st_size);
    e.nlink = std::to_string(st.st_nlink);
    e.content = Sha256File(path, error);
    (*inodes)[{st.st_dev, st.st_ino}].push_back(key);
  } else if (S_ISLNK(st.st_mode)) {
    e.type = 'l';
    std::string target(PATH_MAX, '\0');
    ssize_t n = readlink(path.c_str(), target.data(), target.size());
    if (n < 0) {
      *error = "readlink " + path + ": " + strerror(errno);
      return;
    }
    target.resize(static_cast<size_t>(n));
    e.size = std::to_string(target.size());
    e.content = target;
  } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
    e.type = S_ISCHR(st.st_mode) ? 'c' : 'b';
    e.content = std::to_string(major(st.st_rdev)) + ":" + std::to_string(minor(st.st_rdev));
  } else if (S_ISFIFO(st.st_mode)) {
    e.type = 'p';
  } else if (S_ISSOCK(st.st_mode)) {
    e.type = 's';
  }
  (*out)[key] = e;
  if (e.type != 'd') return;
  DIR* dir = opendir(path.c_str());
  if (dir == nullptr) {
    *error = "opendir " + path + ": " + strerror(errno);
    return;
  }
  std::vector<std::string> names;
  while (struct dirent* d = readdir(dir)) {
    std::string name = d->d_name;
    if (name == "." || name == "..") continue;
    names.push_back(name);
  }
  closedir(dir);
  std::sort(names.begin(), names.end());
  for (const auto& name : names) Walk(root, rel + "/" + name, options, out, inodes, error);
}

}  // namespace

std::string TreeEntry::Line(const std::string& path) const {
  std::ostringstream s;
  char mode_buf[8];
  snprintf(mode_buf, sizeof(mode_buf), "%04o", mode);
  s << path << '\t' << type << '\t' << mode_buf << '\t' << uid << ':' << gid << '\t' << size << '\t'
    << content << '\t' << FormatTime(mtime_sec, mtime_nsec) << '\t' << nlink << '\t' << xattrs;
  if (!link_group.empty()) s << "\t[links: " << link_group << "]";
  return s.str();
}

std::map<std::string, TreeEntry> ListTree(const std::string& root, const TreeOptions& options,
                                          std::string* error) {
  std::map<std::string, TreeEntry> out;
  std::map<std::pair<dev_t, ino_t>, std::vector<std::string>> inodes;
  error->clear();
  std::string base = root;
  while (base.size() > 1 && base.back() == '/') base.pop_back();
  Walk(base, "", options, &out, &inodes, error);
  if (!error->empty()) return {};
  for (auto& [ino, names] : inodes) {
    if (names.size() < 2) continue;
    std::sort(names.begin(), names.end());
    std::string group;
    for (const auto& n : names) group += (group.empty() ? "" : ",") + n;
    for (const auto& n : names) out[n].link_group = group;
  }
  return out;
}

std::map<std::string, TreeEntry> ParseListing(const std::string& text) {
  std::map<std::string, TreeEntry> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> cols;
    size_t start = 0;
    for (;;) {
      size_t tab = line.find('\t', start);
      cols.push_back(
          line.substr(start, tab == std::string::npos ? std::string::npos : tab - start));
      if (tab == std::string::npos) break;
      start = tab + 1;
    }
    if (cols.size() < 9) continue;
    TreeEntry e;
    e.type = cols[1].empty() ? '?' : cols[1][0];
    e.mode = static_cast<uint32_t>(std::stoul(cols[2], nullptr, 8));
    size_t colon = cols[3].find(':');
    e.uid = static_cast<uint32_t>(std::stoul(cols[3].substr(0, colon)));
    e.gid = static_cast<uint32_t>(std::stoul(cols[3].substr(colon + 1)));
    e.size = cols[4];
    e.content = cols[5];
    ParseTime(cols[6], &e.mtime_sec, &e.mtime_nsec);
    e.nlink = cols[7];
    e.xattrs = cols[8];
    out[cols[0]] = e;
  }
  return out;
}

namespace {

std::vector<std::string> Compare(const std::map<std::string, TreeEntry>& actual,
                                 const std::map<std::string, TreeEntry>& expected,
                                 const TreeOptions& options, bool with_groups) {
  std::vector<std::string> diffs;
  for (const auto& [path, want] : expected) {
    if (options.ignore_paths.count(path) > 0) continue;
    auto it = actual.find(path);
    if (it == actual.end()) {
      diffs.push_back("missing: " + want.Line(path));
      continue;
    }
    TreeEntry got = it->second;
    TreeEntry exp = want;
    if (!with_groups) got.link_group = exp.link_group = "";
    if (path == "/" && !options.compare_root_mtime) {
      got.mtime_sec = exp.mtime_sec;
      got.mtime_nsec = exp.mtime_nsec;
    }
    if (!options.compare_xattrs) got.xattrs = exp.xattrs = "-";
    if (got.Line(path) != exp.Line(path)) {
      diffs.push_back("differs:\n    got:  " + got.Line(path) + "\n    want: " + exp.Line(path));
    }
  }
  for (const auto& [path, got] : actual) {
    if (options.ignore_paths.count(path) > 0) continue;
    if (expected.count(path) == 0) diffs.push_back("unexpected: " + got.Line(path));
  }
  return diffs;
}

}  // namespace

std::vector<std::string> CompareTrees(const std::map<std::string, TreeEntry>& actual,
                                      const std::map<std::string, TreeEntry>& expected,
                                      const TreeOptions& options) {
  return Compare(actual, expected, options, /*with_groups=*/true);
}

std::vector<std::string> CompareWithListing(const std::map<std::string, TreeEntry>& actual,
                                            const std::map<std::string, TreeEntry>& listing,
                                            const TreeOptions& options) {
  return Compare(actual, listing, options, /*with_groups=*/false);
}

}  // namespace imgfs::testing
