// imgfs — registries.conf parsing (the TOML subset), merging and loading (see
// registries_conf.h).
#include "registry/registries_conf.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>
#include <system_error>
#include <utility>
#include <variant>

#include <nlohmann/json.hpp>

#include "base/strings.h"
#include "base/unique_fd.h"

namespace imgfs::registry {
namespace {

using Value = std::variant<std::string, bool, std::vector<std::string>>;

// Longest string accepted (locations, aliases; a host plus a repository path is < 512).
constexpr size_t kMaxStringBytes = 4096;

bool IsBareKeyChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

// Which table the keys being read belong to.
enum class Section { kRoot, kRegistry, kMirror, kAliases, kIgnored };

class Parser {
 public:
  Parser(std::string_view text, std::string_view name) : text_(text), name_(name) {}

  Result<RegistriesConf> Parse() {
    while (true) {
      SkipBlank(/*newlines=*/true);
      if (AtEnd()) break;
      const char c = text_[pos_];
      if (c == '[') {
        IMGFS_RETURN_IF_ERROR(ParseHeader());
      } else {
        IMGFS_RETURN_IF_ERROR(ParseKeyValue());
      }
      IMGFS_RETURN_IF_ERROR(EndOfLine());
    }
    IMGFS_RETURN_IF_ERROR(Finish());
    return std::move(conf_);
  }

 private:
  bool AtEnd() const { return pos_ >= text_.size(); }

  Status Error(std::string_view what) const {
    return Status::InvalidArgument(std::string(name_) + ":" + std::to_string(line_) + ": " +
                                   std::string(what));
  }

  // Spaces, tabs and comments; newlines too when `newlines`.
  void SkipBlank(bool newlines) {
    while (!AtEnd()) {
      const char c = text_[pos_];
      if (c == ' ' || c == '\t' || c == '\r') {
        ++pos_;
      } else if (c == '#') {
        while (!AtEnd() && text_[pos_] != '\n') ++pos_;
      } else if (c == '\n' && newlines) {
        ++pos_;
        ++line_;
      } else {
        break;
      }
    }
  }

  // After a header or a key/value: only a comment may follow on the line.
  Status EndOfLine() {
    SkipBlank(/*newlines=*/false);
    if (AtEnd()) return Status::Ok();
    if (text_[pos_] != '\n') return Error("unexpected text after a value or table header");
    ++pos_;
    ++line_;
    return Status::Ok();
  }

  // A bare or quoted key.
  Result<std::string> ParseKey() {
    SkipBlank(/*newlines=*/false);
    if (AtEnd()) return Error("a key is missing");
    if (text_[pos_] == '"' || text_[pos_] == '\'') return ParseString();
    const size_t start = pos_;
    while (!AtEnd() && IsBareKeyChar(text_[pos_])) ++pos_;
    if (pos_ == start) return Error("a key is missing");
    return std::string(text_.substr(start, pos_ - start));
  }

  // A single-line basic ("...") or literal ('...') string.
  Result<std::string> ParseString() {
    const char quote = text_[pos_];
    if (text_.substr(pos_, 3) == std::string(3, quote)) {
      return Error("multi-line strings are not supported here");
    }
    ++pos_;
    std::string out;
    while (true) {
      if (AtEnd() || text_[pos_] == '\n') return Error("unterminated string");
      const char c = text_[pos_++];
      if (c == quote) break;
      if (out.size() >= kMaxStringBytes) return Error("string too long");
      const auto u = static_cast<unsigned char>(c);
      if ((u < 0x20 && c != '\t') || u == 0x7f) return Error("control character in a string");
      if (c != '\\' || quote == '\'') {
        out.push_back(c);
        continue;
      }
      if (AtEnd()) return Error("unterminated string");
      const char e = text_[pos_++];
      switch (e) {
        case 'b':
          out.push_back('\b');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case '"':
          out.push_back('"');
          break;
        case '\\':
          out.push_back('\\');
          break;
        case 'u':
        case 'U': {
          const size_t digits = e == 'u' ? 4 : 8;
          if (text_.size() - pos_ < digits) return Error("bad \\u escape");
          uint32_t cp = 0;
          for (size_t i = 0; i < digits; ++i) {
            const char h = text_[pos_++];
            uint32_t v = 0;
            if (h >= '0' && h <= '9') {
              v = static_cast<uint32_t>(h - '0');
            } else if (h >= 'a' && h <= 'f') {
              v = static_cast<uint32_t>(h - 'a' + 10);
            } else if (h >= 'A' && h <= 'F') {
              v = static_cast<uint32_t>(h - 'A' + 10);
            } else {
              return Error("bad \\u escape");
            }
            cp = cp * 16 + v;
          }
          if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            return Error("\\u escape is not a Unicode scalar value");
          }
          AppendUtf8(cp, &out);
          break;
        }
        default:
          return Error("unknown escape sequence in a string");
      }
    }
    return out;
  }

  Result<Value> ParseValue() {
    SkipBlank(/*newlines=*/false);
    if (AtEnd() || text_[pos_] == '\n') return Error("a value is missing");
    const char c = text_[pos_];
    if (c == '"' || c == '\'') {
      IMGFS_ASSIGN_OR_RETURN(std::string s, ParseString());
      return Value(std::move(s));
    }
    if (text_.substr(pos_, 4) == "true" &&
        (pos_ + 4 == text_.size() || !IsBareKeyChar(text_[pos_ + 4]))) {
      pos_ += 4;
      return Value(true);
    }
    if (text_.substr(pos_, 5) == "false" &&
        (pos_ + 5 == text_.size() || !IsBareKeyChar(text_[pos_ + 5]))) {
      pos_ += 5;
      return Value(false);
    }
    if (c == '[') {
      ++pos_;
      std::vector<std::string> items;
      while (true) {
        SkipBlank(/*newlines=*/true);
        if (AtEnd()) return Error("unterminated array");
        if (text_[pos_] == ']') {
          ++pos_;
          break;
        }
        if (text_[pos_] != '"' && text_[pos_] != '\'') {
          return Error("only arrays of strings are supported");
        }
        if (items.size() >= kMaxRegistriesConfEntries) return Error("array too long");
        IMGFS_ASSIGN_OR_RETURN(std::string s, ParseString());
        items.push_back(std::move(s));
        SkipBlank(/*newlines=*/true);
        if (AtEnd()) return Error("unterminated array");
        if (text_[pos_] == ',') {
          ++pos_;
        } else if (text_[pos_] != ']') {
          return Error("expected ',' or ']' in an array");
        }
      }
      return Value(std::move(items));
    }
    if (c == '{') return Error("inline tables are not supported here");
    return Error("unsupported value (expected a string, a boolean or an array of strings)");
  }

  Status ParseHeader() {
    const bool array = text_.substr(pos_, 2) == "[[";
    pos_ += array ? 2 : 1;
    std::vector<std::string> path;
    while (true) {
      IMGFS_ASSIGN_OR_RETURN(std::string part, ParseKey());
      path.push_back(std::move(part));
      SkipBlank(/*newlines=*/false);
      if (AtEnd()) return Error("unterminated table header");
      if (text_[pos_] == '.') {
        ++pos_;
        if (path.size() >= 8) return Error("table name nested too deeply");
        continue;
      }
      break;
    }
    if (array) {
      if (text_.substr(pos_, 2) != "]]") return Error("expected ']]' after the table name");
      pos_ += 2;
    } else {
      if (text_[pos_] != ']') return Error("expected ']' after the table name");
      ++pos_;
    }
    keys_.clear();
    std::string joined;
    for (const std::string& p : path) joined += (joined.empty() ? "" : ".") + p;
    if (joined == "registry") {
      if (!array) return Error("[registry] must be an array of tables: write [[registry]]");
      IMGFS_RETURN_IF_ERROR(FinishRegistry());
      if (++entries_ > kMaxRegistriesConfEntries) return Error("too many registries");
      conf_.registries.emplace_back();
      registry_line_ = line_;
      section_ = Section::kRegistry;
    } else if (joined == "registry.mirror") {
      if (!array) return Error("[registry.mirror] must be an array of tables");
      if (conf_.registries.empty()) return Error("[[registry.mirror]] before any [[registry]]");
      if (++entries_ > kMaxRegistriesConfEntries) return Error("too many mirrors");
      conf_.registries.back().mirrors.emplace_back();
      section_ = Section::kMirror;
    } else if (joined == "aliases") {
      if (array) return Error("[[aliases]] must be a table: write [aliases]");
      section_ = Section::kAliases;
    } else {
      section_ = Section::kIgnored;
    }
    if (!array && !tables_.insert(joined).second) {
      return Error("table [" + joined + "] defined twice");
    }
    return Status::Ok();
  }

  Status ParseKeyValue() {
    IMGFS_ASSIGN_OR_RETURN(std::string key, ParseKey());
    SkipBlank(/*newlines=*/false);
    if (AtEnd() || text_[pos_] != '=') {
      if (!AtEnd() && text_[pos_] == '.') return Error("dotted keys are not supported here");
      return Error("expected '=' after key \"" + key + "\"");
    }
    ++pos_;
    IMGFS_ASSIGN_OR_RETURN(Value value, ParseValue());
    if (!keys_.insert(key).second) return Error("key \"" + key + "\" given twice");
    return Apply(key, std::move(value));
  }

  Result<std::string> WantString(const std::string& key, Value& value) {
    if (auto* s = std::get_if<std::string>(&value)) return std::move(*s);
    return Error("\"" + key + "\" must be a string");
  }
  Result<bool> WantBool(const std::string& key, const Value& value) {
    if (const auto* b = std::get_if<bool>(&value)) return *b;
    return Error("\"" + key + "\" must be true or false");
  }

  // A location or prefix as containers/image accepts it: no URL scheme, trailing '/' cut.
  Result<std::string> Location(const std::string& key, Value& value) {
    IMGFS_ASSIGN_OR_RETURN(std::string s, WantString(key, value));
    if (s.starts_with("http://") || s.starts_with("https://")) {
      return Error("\"" + key + "\" " + QuoteForMessage(s) +
                   ": URL schemes are not supported (use insecure = true for plain http)");
    }
    while (!s.empty() && s.back() == '/') s.pop_back();
    for (char c : s) {
      const auto u = static_cast<unsigned char>(c);
      if (u <= 0x20 || u == 0x7f) return Error("\"" + key + "\" contains white space");
    }
    return s;
  }

  Status Apply(const std::string& key, Value value) {
    switch (section_) {
      case Section::kRoot:
        if (key == "unqualified-search-registries") {
          auto* list = std::get_if<std::vector<std::string>>(&value);
          if (list == nullptr) return Error("unqualified-search-registries must be an array");
          for (const std::string& r : *list) {
            if (r.empty() || r.find('/') != std::string::npos ||
                r.find_first_of(" \t") != std::string::npos) {
              return Error("unqualified-search-registries: " + QuoteForMessage(r) +
                           " is not a registry host name");
            }
          }
          conf_.unqualified_search_registries = std::move(*list);
        }
        return Status::Ok();
      case Section::kRegistry: {
        RegistryConf& reg = conf_.registries.back();
        if (key == "location") {
          IMGFS_ASSIGN_OR_RETURN(reg.location, Location(key, value));
        } else if (key == "prefix") {
          IMGFS_ASSIGN_OR_RETURN(reg.prefix, Location(key, value));
        } else if (key == "insecure") {
          IMGFS_ASSIGN_OR_RETURN(reg.insecure, WantBool(key, value));
        } else if (key == "blocked") {
          IMGFS_ASSIGN_OR_RETURN(reg.blocked, WantBool(key, value));
        } else if (key == "mirror-by-digest-only") {
          IMGFS_ASSIGN_OR_RETURN(reg.mirror_by_digest_only, WantBool(key, value));
        }
        return Status::Ok();
      }
      case Section::kMirror: {
        MirrorConf& mirror = conf_.registries.back().mirrors.back();
        if (key == "location") {
          IMGFS_ASSIGN_OR_RETURN(mirror.location, Location(key, value));
          if (mirror.location.empty()) return Error("a mirror's location is empty");
        } else if (key == "insecure") {
          IMGFS_ASSIGN_OR_RETURN(mirror.insecure, WantBool(key, value));
        } else if (key == "pull-from-mirror") {
          IMGFS_ASSIGN_OR_RETURN(std::string mode, WantString(key, value));
          if (mode == "all" || mode.empty()) {
            mirror.pull_from_mirror = PullFromMirror::kAll;
          } else if (mode == "digest-only") {
            mirror.pull_from_mirror = PullFromMirror::kDigestOnly;
          } else if (mode == "tag-only") {
            mirror.pull_from_mirror = PullFromMirror::kTagOnly;
          } else {
            return Error("pull-from-mirror " + QuoteForMessage(mode) +
                         ": expected \"all\", \"digest-only\" or \"tag-only\"");
          }
        }
        return Status::Ok();
      }
      case Section::kAliases: {
        IMGFS_ASSIGN_OR_RETURN(std::string target, WantString(key, value));
        if (key.empty() || target.empty()) return Error("an alias and its value must not be empty");
        if (key.size() > kMaxStringBytes) return Error("alias too long");
        if (conf_.aliases.size() >= kMaxRegistriesConfEntries) return Error("too many aliases");
        conf_.aliases[key] = std::move(target);
        return Status::Ok();
      }
      case Section::kIgnored:
        return Status::Ok();
    }
    return Status::Ok();
  }

  // Checks and completes the last [[registry]] (containers/image postProcessRegistries).
  Status FinishRegistry() {
    if (conf_.registries.empty()) return Status::Ok();
    RegistryConf& reg = conf_.registries.back();
    auto error = [&](const std::string& what) {
      return Status::InvalidArgument(std::string(name_) + ":" + std::to_string(registry_line_) +
                                     ": [[registry]]: " + what);
    };
    if (reg.prefix.empty()) {
      if (reg.location.empty()) return error("neither location nor prefix is set");
      reg.prefix = reg.location;
    }
    if (reg.prefix.starts_with("*.")) {
      if (!reg.location.empty()) {
        return error("a wildcard prefix " + QuoteForMessage(reg.prefix) +
                     " cannot have a location");
      }
      if (reg.prefix.find_first_of("/:@", 2) != std::string::npos || reg.prefix.size() < 3) {
        return error("a wildcard prefix must be \"*.domain\", not " + QuoteForMessage(reg.prefix));
      }
    } else if (reg.location.empty()) {
      return error("location is empty for prefix " + QuoteForMessage(reg.prefix));
    }
    for (const MirrorConf& m : reg.mirrors) {
      if (m.location.empty()) return error("a mirror has no location");
      if (reg.mirror_by_digest_only && m.pull_from_mirror != PullFromMirror::kAll) {
        return error("mirror-by-digest-only and pull-from-mirror cannot both be set");
      }
    }
    for (size_t i = 0; i + 1 < conf_.registries.size(); ++i) {
      if (conf_.registries[i].prefix == reg.prefix) {
        return error("prefix " + QuoteForMessage(reg.prefix) + " is configured twice");
      }
    }
    return Status::Ok();
  }

  Status Finish() { return FinishRegistry(); }

  std::string_view text_;
  std::string_view name_;
  size_t pos_ = 0;
  int line_ = 1;
  int registry_line_ = 0;
  size_t entries_ = 0;
  Section section_ = Section::kRoot;
  std::set<std::string> keys_;    // keys of the current table
  std::set<std::string> tables_;  // [tables] seen (each may be defined once)
  RegistriesConf conf_;
};

// The file's bytes, at most kMaxRegistriesConfBytes; NotFound when it does not exist.
Result<std::string> ReadConfFile(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.IsValid()) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) return Status::NotFound(path + " does not exist");
    return Status::Io(path + ": " + std::strerror(err));  // NOLINT(concurrency-mt-unsafe)
  }
  struct stat st {};
  if (fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return Status::InvalidArgument(path + " is not a regular file");
  }
  if (static_cast<uint64_t>(st.st_size) > kMaxRegistriesConfBytes) {
    return Status::InvalidArgument(path + " is larger than " +
                                   std::to_string(kMaxRegistriesConfBytes) + " bytes");
  }
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = read(fd.get(), out.data() + done, out.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::Io(path + ": read failed");
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  out.resize(done);
  return out;
}

// Parses `path` into `conf` (merged on top). Missing files are skipped.
Status MergeFile(const std::string& path, bool must_exist, RegistriesConf* conf) {
  Result<std::string> text = ReadConfFile(path);
  if (!text.has_value()) {
    if (text.error().code() == StatusCode::kNotFound && !must_exist) return Status::Ok();
    return text.error().WithContext("registries.conf");
  }
  IMGFS_ASSIGN_OR_RETURN(RegistriesConf one, ParseRegistriesConf(*text, path));
  one.files = {path};
  for (RegistryConf& reg : one.registries) reg.file = path;
  MergeRegistriesConf(conf, std::move(one));
  return Status::Ok();
}

// *.conf files of `dir` in lexical order (none when it does not exist).
std::vector<std::string> DropIns(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".conf" && out.size() < kMaxRegistriesConfDropIns) {
      out.push_back(entry.path().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

Result<RegistriesConf> ParseRegistriesConf(std::string_view text, std::string_view name) {
  if (text.size() > kMaxRegistriesConfBytes) {
    return Status::InvalidArgument(std::string(name) + " is larger than " +
                                   std::to_string(kMaxRegistriesConfBytes) + " bytes");
  }
  if (text.find('\0') != std::string_view::npos) {
    return Status::InvalidArgument(std::string(name) + " contains a NUL byte");
  }
  return Parser(text, name).Parse();
}

void MergeRegistriesConf(RegistriesConf* base, RegistriesConf update) {
  for (RegistryConf& reg : update.registries) {
    auto same = std::find_if(base->registries.begin(), base->registries.end(),
                             [&](const RegistryConf& r) { return r.prefix == reg.prefix; });
    if (same != base->registries.end()) {
      *same = std::move(reg);
    } else {
      base->registries.push_back(std::move(reg));
    }
  }
  if (update.unqualified_search_registries) {
    base->unqualified_search_registries = std::move(update.unqualified_search_registries);
  }
  for (auto& [alias, target] : update.aliases) base->aliases[alias] = std::move(target);
  for (std::string& f : update.files) base->files.push_back(std::move(f));
}

Result<std::vector<MirrorConf>> ParseDockerDaemonMirrors(std::string_view json_text) {
  nlohmann::json doc = nlohmann::json::parse(json_text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    return Status::Corrupt("daemon.json is not a JSON object");
  }
  std::vector<MirrorConf> out;
  auto it = doc.find("registry-mirrors");
  if (it == doc.end() || it->is_null()) return out;
  if (!it->is_array()) return Status::Corrupt("daemon.json: registry-mirrors is not an array");
  for (const nlohmann::json& item : *it) {
    if (!item.is_string()) return Status::Corrupt("daemon.json: a registry mirror is not a string");
    std::string url = item.get<std::string>();
    MirrorConf mirror;
    if (url.starts_with("https://")) {
      url.erase(0, 8);
    } else if (url.starts_with("http://")) {
      url.erase(0, 7);
      mirror.insecure = true;
    } else {
      return Status::Corrupt("daemon.json: registry mirror " + QuoteForMessage(url) +
                             " is not an http(s) URL");
    }
    while (!url.empty() && url.back() == '/') url.pop_back();
    if (url.empty() || url.find_first_of(" \t\r\n") != std::string::npos) {
      return Status::Corrupt("daemon.json: registry mirror " + QuoteForMessage(url) +
                             " has no host");
    }
    if (out.size() >= kMaxRegistriesConfEntries) {
      return Status::Corrupt("daemon.json: too many mirrors");
    }
    mirror.location = std::move(url);
    out.push_back(std::move(mirror));
  }
  return out;
}

RegistriesConfPaths RegistriesConfPathsFromEnvironment() {
  RegistriesConfPaths paths;
  // NOLINTBEGIN(concurrency-mt-unsafe): getenv only; imgfs sets no environment variable
  // after its start (--registries-conf is applied while parsing flags).
  if (const char* f = std::getenv("CONTAINERS_REGISTRIES_CONF"); f != nullptr) {
    paths.explicit_file = f;
  }
  if (const char* r = std::getenv("IMGFS_CONFIG_ROOT"); r != nullptr) paths.root = r;
  if (const char* h = std::getenv("HOME"); h != nullptr) paths.home = h;
  // NOLINTEND(concurrency-mt-unsafe)
  return paths;
}

Result<RegistriesConf> LoadRegistriesConf(const RegistriesConfPaths& paths) {
  RegistriesConf conf;
  if (!paths.explicit_file.empty()) {
    IMGFS_RETURN_IF_ERROR(MergeFile(paths.explicit_file, /*must_exist=*/true, &conf));
    return conf;
  }
  const std::string system_file = paths.root + "/etc/containers/registries.conf";
  const std::string system_dir = paths.root + "/etc/containers/registries.conf.d";
  std::string user_file;
  std::string user_dir;
  if (!paths.home.empty()) {
    user_file = paths.home + "/.config/containers/registries.conf";
    user_dir = paths.home + "/.config/containers/registries.conf.d";
  }
  std::error_code ec;
  std::vector<std::string> dirs;
  if (!user_file.empty() && std::filesystem::exists(user_file, ec)) {
    // A per-user file replaces the system one and its drop-ins (containers/image).
    IMGFS_RETURN_IF_ERROR(MergeFile(user_file, /*must_exist=*/false, &conf));
  } else {
    IMGFS_RETURN_IF_ERROR(MergeFile(system_file, /*must_exist=*/false, &conf));
    dirs.push_back(system_dir);
  }
  if (!user_dir.empty()) dirs.push_back(user_dir);
  for (const std::string& dir : dirs) {
    for (const std::string& file : DropIns(dir)) {
      IMGFS_RETURN_IF_ERROR(MergeFile(file, /*must_exist=*/false, &conf));
    }
  }

  const bool docker_io_configured =
      std::any_of(conf.registries.begin(), conf.registries.end(),
                  [](const RegistryConf& r) { return r.prefix == "docker.io"; });
  const std::string daemon_json = paths.root + "/etc/docker/daemon.json";
  Result<std::string> daemon = ReadConfFile(daemon_json);
  if (!docker_io_configured && daemon.has_value()) {
    Result<std::vector<MirrorConf>> mirrors = ParseDockerDaemonMirrors(*daemon);
    if (!mirrors.has_value()) return mirrors.error().WithContext(daemon_json);
    if (!mirrors->empty()) {
      RegistryConf docker;
      docker.prefix = "docker.io";
      docker.location = "docker.io";
      docker.mirrors = std::move(mirrors).value();
      docker.file = daemon_json;
      conf.registries.push_back(std::move(docker));
      conf.files.push_back(daemon_json);
    }
  }
  return conf;
}

}  // namespace imgfs::registry
