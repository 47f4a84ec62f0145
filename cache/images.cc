// imgfs — docker-like image operations on the local store.
#include "cache/images.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "base/log.h"
#include "base/time.h"
#include "cache/leases.h"
#include "cache/usage.h"
#include "registry/media_types.h"

namespace imgfs::cache {
namespace {

using json = nlohmann::json;
using registry::Descriptor;
using registry::Digest;
using registry::Reference;

// The manifest and config of a stored image, decoded by registry/manifest.h. ReadBlob
// verifies the bytes against `digest`.
Result<registry::Manifest> LoadManifest(const Store& store, const Digest& digest) {
  IMGFS_ASSIGN_OR_RETURN(std::string bytes, store.ReadBlob(digest));
  Result<registry::Manifest> m = registry::DecodeManifest(bytes);
  if (!m.has_value()) return m.error().WithContext("manifest " + digest.String());
  return m;
}

Result<registry::ImageConfig> LoadConfig(const Store& store, const Digest& digest) {
  IMGFS_ASSIGN_OR_RETURN(std::string bytes, store.ReadBlob(digest));
  Result<registry::ImageConfig> c = registry::DecodeImageConfig(bytes);
  if (!c.has_value()) return c.error().WithContext("image config " + digest.String());
  return c;
}

// Familiar repository name for a stored repository ("docker.io/library/alpine" → "alpine").
std::string FamiliarRepository(const std::string& repository) {
  if (repository.empty()) return {};
  auto ref = Reference::Parse(repository);
  return ref.has_value() ? ref->FamiliarName() : repository;
}

// What one index entry shows as.
struct EntryView {
  std::string repository = "<none>";
  std::string tag = "<none>";
  std::string familiar_ref;  // "alpine:3.20", "alpine@sha256:…", "" when dangling
  bool tagged = false;
};

EntryView ViewOf(const ImageRecord& r) {
  EntryView v;
  if (r.dangling()) return v;
  auto ref = Reference::Parse(r.reference);
  if (!ref.has_value()) {
    v.repository = r.reference;
    v.familiar_ref = r.reference;
    return v;
  }
  v.repository = ref->FamiliarName();
  v.familiar_ref = ref->FamiliarString();
  if (!ref->tag().empty()) {
    v.tag = ref->tag();
    v.tagged = true;
  }
  return v;
}

std::string RepoDigestOf(const ImageRecord& r) {
  if (r.repository.empty() || r.repo_digest.empty()) return {};
  return FamiliarRepository(r.repository) + "@" + r.repo_digest.String();
}

// An index entry with its manifest and config loaded (when possible).
struct LoadedRecord {
  ImageRecord record;
  std::optional<registry::Manifest> manifest;
  std::optional<registry::ImageConfig> config;
  Digest id;  // config digest, or the manifest digest if the manifest is unreadable
};

LoadedRecord Load(const Store& store, ImageRecord record) {
  LoadedRecord lr;
  lr.record = std::move(record);
  lr.id = lr.record.manifest.digest;
  auto m = LoadManifest(store, lr.record.manifest.digest);
  if (!m.has_value()) {
    IMGFS_LOG(kDebug) << "image " << lr.record.reference << ": " << m.error().ToString();
    return lr;
  }
  lr.id = m->config.digest;
  auto c = LoadConfig(store, m->config.digest);
  if (c.has_value()) lr.config = std::move(*c);
  lr.manifest = std::move(*m);
  return lr;
}

Result<std::vector<LoadedRecord>> LoadAll(const Store& store) {
  IMGFS_ASSIGN_OR_RETURN(std::vector<ImageRecord> records, store.ListRecords());
  std::vector<LoadedRecord> out;
  out.reserve(records.size());
  for (auto& r : records) out.push_back(Load(store, std::move(r)));
  return out;
}

int64_t ImageSize(const LoadedRecord& lr) {
  if (!lr.manifest.has_value()) return lr.record.manifest.size;
  int64_t size = lr.manifest->config.size;
  for (const auto& l : lr.manifest->layers) size += l.size;
  return size;
}

bool IsHex(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
}

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// Go's path.Match for one chunk (no '*'); returns the rest of `s` or nullopt.
std::optional<std::string_view> MatchChunk(std::string_view chunk, std::string_view s, bool* bad) {
  while (!chunk.empty()) {
    switch (chunk[0]) {
      case '[': {
        if (s.empty()) return std::nullopt;
        unsigned char r = static_cast<unsigned char>(s[0]);
        s.remove_prefix(1);
        chunk.remove_prefix(1);
        bool negated = !chunk.empty() && chunk[0] == '^';
        if (negated) chunk.remove_prefix(1);
        bool match = false;
        int nrange = 0;
        for (;;) {
          if (!chunk.empty() && chunk[0] == ']' && nrange > 0) {
            chunk.remove_prefix(1);
            break;
          }
          auto get_esc = [&](unsigned char* out) {
            if (chunk.empty() || chunk[0] == '-' || chunk[0] == ']') return false;
            if (chunk[0] == '\\') {
              chunk.remove_prefix(1);
              if (chunk.empty()) return false;
            }
            *out = static_cast<unsigned char>(chunk[0]);
            chunk.remove_prefix(1);
            return true;
          };
          unsigned char lo = 0;
          unsigned char hi = 0;
          if (!get_esc(&lo)) {
            *bad = true;
            return std::nullopt;
          }
          hi = lo;
          if (!chunk.empty() && chunk[0] == '-') {
            chunk.remove_prefix(1);
            if (!get_esc(&hi)) {
              *bad = true;
              return std::nullopt;
            }
          }
          if (lo <= r && r <= hi) match = true;
          ++nrange;
        }
        if (match == negated) return std::nullopt;
        break;
      }
      case '?':
        if (s.empty() || s[0] == '/') return std::nullopt;
        s.remove_prefix(1);
        chunk.remove_prefix(1);
        break;
      case '\\':
        chunk.remove_prefix(1);
        if (chunk.empty()) {
          *bad = true;
          return std::nullopt;
        }
        [[fallthrough]];
      default:
        if (s.empty() || chunk[0] != s[0]) return std::nullopt;
        s.remove_prefix(1);
        chunk.remove_prefix(1);
        break;
    }
  }
  return s;
}

// Go's path.Match: '*' and '?' never match '/'. A malformed pattern matches nothing.
bool PathMatch(std::string_view pattern, std::string_view name) {
  bool bad = false;
  while (!pattern.empty()) {
    bool star = false;
    while (!pattern.empty() && pattern[0] == '*') {
      pattern.remove_prefix(1);
      star = true;
    }
    // Scan the chunk up to the next unescaped '*' outside brackets.
    size_t i = 0;
    bool in_range = false;
    for (; i < pattern.size(); ++i) {
      char c = pattern[i];
      if (c == '\\') {
        if (i + 1 < pattern.size()) ++i;
      } else if (c == '[') {
        in_range = true;
      } else if (c == ']') {
        in_range = false;
      } else if (c == '*' && !in_range) {
        break;
      }
    }
    std::string_view chunk = pattern.substr(0, i);
    pattern.remove_prefix(i);
    if (star && chunk.empty()) return name.find('/') == std::string_view::npos;
    auto rest = MatchChunk(chunk, name, &bad);
    if (bad) return false;
    if (rest.has_value() && (rest->empty() || !pattern.empty())) {
      name = *rest;
      continue;
    }
    bool matched = false;
    if (star) {
      for (size_t j = 0; j < name.size() && name[j] != '/'; ++j) {
        auto t = MatchChunk(chunk, name.substr(j + 1), &bad);
        if (bad) return false;
        if (t.has_value()) {
          if (pattern.empty() && !t->empty()) continue;
          name = *t;
          matched = true;
          break;
        }
      }
    }
    if (!matched) return false;
  }
  return name.empty();
}

// The "Untagged:" lines of removing the entries `removed`: their familiar references, then,
// when the image goes with them, the repo digests of `image_records` (every entry it had)
// not listed yet.
std::vector<std::string> UntaggedLines(const std::vector<ImageRecord>& removed,
                                       const std::vector<ImageRecord>& image_records,
                                       bool image_gone) {
  std::vector<std::string> lines;
  for (const auto& r : removed) {
    EntryView v = ViewOf(r);
    if (!v.familiar_ref.empty()) lines.push_back(v.familiar_ref);
  }
  if (!image_gone) return lines;
  std::set<std::string> repo_digests;
  for (const auto& r : image_records) {
    std::string rd = RepoDigestOf(r);
    if (!rd.empty()) repo_digests.insert(rd);
  }
  for (const auto& rd : repo_digests) {
    if (std::find(lines.begin(), lines.end(), rd) == lines.end()) lines.push_back(rd);
  }
  return lines;
}

std::string NoSuchImage(std::string_view text) { return "No such image: " + std::string(text); }

}  // namespace

// ---------------------------------------------------------------------------------------
// Filters

Result<ImageFilter> ParseImageFilters(const std::vector<std::string>& args) {
  ImageFilter f;
  for (const auto& arg : args) {
    size_t eq = arg.find('=');
    if (eq == std::string::npos) {
      return Status::InvalidArgument("bad format of filter (expected name=value): '" + arg + "'");
    }
    std::string key = arg.substr(0, eq);
    std::string value = arg.substr(eq + 1);
    if (key == "dangling") {
      if (value == "true" || value == "1") {
        f.dangling = true;
      } else if (value == "false" || value == "0") {
        f.dangling = false;
      } else {
        return Status::InvalidArgument("invalid filter 'dangling=" + value +
                                       "': expected true or false");
      }
    } else if (key == "reference") {
      f.reference_globs.push_back(value);
    } else {
      return Status::InvalidArgument("invalid filter '" + key +
                                     "' (supported: dangling, reference)");
    }
  }
  return f;
}

namespace {

// Go's time.ParseDuration: an optional sign, then one or more decimal numbers (with an
// optional fraction) each followed by a unit (ns, us, µs, ms, s, m, h). Whole seconds,
// truncated toward zero; nullopt when `text` is not a duration.
std::optional<int64_t> ParseGoDurationSeconds(std::string_view text) {
  bool negative = false;
  if (!text.empty() && (text[0] == '-' || text[0] == '+')) {
    negative = text[0] == '-';
    text.remove_prefix(1);
  }
  if (text == "0") return 0;
  if (text.empty()) return std::nullopt;
  // Bounded like Go (durations fit in int64 nanoseconds, about 292 years).
  constexpr double kMaxSeconds = 9.2e9;
  double total = 0;
  while (!text.empty()) {
    size_t i = 0;
    double number = 0;
    bool digits = false;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
      number = number * 10 + (text[i++] - '0');
      digits = true;
      if (number > kMaxSeconds * 1e9) return std::nullopt;
    }
    if (i < text.size() && text[i] == '.') {
      ++i;
      double scale = 0.1;
      while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
        number += (text[i++] - '0') * scale;
        scale /= 10;
        digits = true;
      }
    }
    if (!digits) return std::nullopt;
    text.remove_prefix(i);
    static const std::pair<std::string_view, double> kUnits[] = {
        {"ns", 1e-9}, {"us", 1e-6}, {"\u00b5s", 1e-6}, {"\u03bcs", 1e-6},
        {"ms", 1e-3}, {"s", 1},     {"m", 60},         {"h", 3600}};
    double unit = 0;
    size_t unit_len = 0;
    for (const auto& [name, seconds] : kUnits) {
      // The longest unit that prefixes the rest ("ms" before "m").
      if (text.starts_with(name) && name.size() > unit_len) {
        unit = seconds;
        unit_len = name.size();
      }
    }
    if (unit_len == 0) return std::nullopt;
    text.remove_prefix(unit_len);
    total += number * unit;
    if (total > kMaxSeconds) return std::nullopt;
  }
  auto seconds = static_cast<int64_t>(total);
  return negative ? -seconds : seconds;
}

// Unix seconds with an optional fraction ("1714521600", "1714521600.5").
std::optional<int64_t> ParseUnixSeconds(std::string_view text) {
  size_t dot = text.find('.');
  std::string_view whole = text.substr(0, dot);
  std::string_view fraction = dot == std::string_view::npos ? "" : text.substr(dot + 1);
  auto all_digits = [](std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  if (whole.empty() || whole.size() > 12 || !all_digits(whole) || !all_digits(fraction)) {
    return std::nullopt;
  }
  if (dot != std::string_view::npos && fraction.empty()) return std::nullopt;
  int64_t value = 0;
  for (char c : whole) value = value * 10 + (c - '0');
  return value;
}

// docker's timetypes.GetTimestamp for `until`, as documented at ParsePruneFilters.
Result<int64_t> ParseUntil(const std::string& value, int64_t now_unix_s) {
  if (value != "0") {
    if (std::optional<int64_t> d = ParseGoDurationSeconds(value)) return now_unix_s - *d;
  }
  auto bad = [&value] {
    return Status::InvalidArgument("invalid filter 'until=" + value +
                                   "': not a timestamp or a duration");
  };
  if (value.find('-') == std::string::npos) {
    if (std::optional<int64_t> s = ParseUnixSeconds(value)) return *s;
    return bad();
  }
  // Complete the forms docker accepts into RFC 3339: a date, an hour, minutes; no zone → Z.
  std::string text = value;
  size_t t = text.find_first_of("Tt");
  size_t zone = std::string::npos;
  if (t != std::string::npos) {
    zone = text.find_first_of("Zz+-", t);
  } else if (text.size() > 10) {
    zone = 10;  // "2024-05-01Z", "2024-05-01+02:00"
  }
  std::string main = text.substr(0, zone);
  std::string suffix = zone == std::string::npos ? "Z" : text.substr(zone);
  if (t == std::string::npos) main += "T00:00:00";
  size_t colons = std::count(main.begin(), main.end(), ':');
  if (main.find('.') == std::string::npos) {
    for (; colons < 2; ++colons) main += ":00";
  }
  int64_t sec = 0;
  uint32_t nsec = 0;
  if (!ParseRfc3339(main + suffix, &sec, &nsec).ok()) return bad();
  return sec;
}

}  // namespace

Result<ImagePruneFilter> ParsePruneFilters(const std::vector<std::string>& args,
                                           int64_t now_unix_s) {
  ImagePruneFilter f;
  for (const std::string& arg : args) {
    size_t eq = arg.find('=');
    if (eq == std::string::npos) {
      return Status::InvalidArgument("bad format of filter (expected name=value): '" + arg + "'");
    }
    std::string key = arg.substr(0, eq);
    std::string value = arg.substr(eq + 1);
    // "label!=x" splits as key "label!" (docker's filters.ParseFlag does the same).
    if (key == "until") {
      if (f.until_unix_s.has_value()) {
        return Status::InvalidArgument("more than one until filter specified");
      }
      IMGFS_ASSIGN_OR_RETURN(int64_t until, ParseUntil(value, now_unix_s));
      f.until_unix_s = until;
    } else if (key == "label" || key == "label!") {
      if (value.empty() || value[0] == '=') {
        return Status::InvalidArgument("invalid filter '" + arg + "': no label key");
      }
      (key == "label" ? f.labels : f.not_labels).push_back(value);
    } else if (key == "dangling") {
      if (value == "true" || value == "1") {
        f.all = false;
      } else if (value == "false" || value == "0") {
        f.all = true;
      } else {
        return Status::InvalidArgument("invalid filter 'dangling=" + value +
                                       "': expected true or false");
      }
    } else {
      return Status::InvalidArgument("invalid filter '" + key +
                                     "' (supported: until, label, label!, dangling)");
    }
  }
  return f;
}

bool MatchesLabels(const std::vector<std::string>& kv,
                   const std::map<std::string, std::string>& labels) {
  return std::all_of(kv.begin(), kv.end(), [&labels](const std::string& one) {
    size_t eq = one.find('=');
    auto it = labels.find(one.substr(0, eq));
    if (it == labels.end()) return false;
    return eq == std::string::npos || it->second == one.substr(eq + 1);
  });
}

bool MatchesReferenceFilter(std::string_view pattern, const ImageSummary& image) {
  if (image.dangling || image.reference.empty()) return false;
  auto ref = Reference::Parse(image.reference);
  if (!ref.has_value()) return false;
  return PathMatch(pattern, ref->FamiliarString()) || PathMatch(pattern, ref->FamiliarName());
}

// ---------------------------------------------------------------------------------------
// ListImages

Result<std::vector<ImageSummary>> ListImages(const Store& store, const ImageFilter& filter) {
  IMGFS_ASSIGN_OR_RETURN(std::vector<LoadedRecord> all, LoadAll(store));
  // Repo digests per image ID, over every entry of the image.
  std::map<Digest, std::set<std::string>> repo_digests;
  for (const auto& lr : all) {
    std::string rd = RepoDigestOf(lr.record);
    if (!rd.empty()) repo_digests[lr.id].insert(rd);
  }
  std::vector<ImageSummary> out;
  for (const auto& lr : all) {
    ImageSummary s;
    EntryView v = ViewOf(lr.record);
    s.repository = v.repository;
    s.tag = v.tag;
    s.id = lr.id;
    s.manifest_digest = lr.record.manifest.digest;
    s.created = lr.config.has_value() ? lr.config->created : std::string();
    s.size_bytes = ImageSize(lr);
    if (auto it = repo_digests.find(lr.id); it != repo_digests.end()) {
      s.repo_digests.assign(it->second.begin(), it->second.end());
    }
    s.dangling = lr.record.dangling();
    s.reference = lr.record.reference;
    s.pulled = lr.record.pulled;
    if (lr.manifest.has_value()) {
      s.complete = std::all_of(lr.manifest->layers.begin(), lr.manifest->layers.end(),
                               [&store](const Descriptor& l) { return store.HasBlob(l.digest); });
    }
    if (filter.dangling.has_value() && *filter.dangling != s.dangling) continue;
    if (!filter.reference_globs.empty()) {
      bool any = false;
      for (const auto& g : filter.reference_globs) any = any || MatchesReferenceFilter(g, s);
      if (!any) continue;
    }
    out.push_back(std::move(s));
  }
  std::stable_sort(out.begin(), out.end(), [](const ImageSummary& a, const ImageSummary& b) {
    if (a.created != b.created) return a.created > b.created;
    return a.pulled > b.pulled;
  });
  return out;
}

// ---------------------------------------------------------------------------------------
// ResolveImage

Result<ResolvedImage> ResolveImage(const Store& store, std::string_view text) {
  if (text.empty()) return Status::InvalidArgument("empty image name");
  IMGFS_ASSIGN_OR_RETURN(std::vector<LoadedRecord> all, LoadAll(store));

  const LoadedRecord* chosen = nullptr;
  std::optional<ImageRecord> by_reference;

  // 1. A reference (not for "sha256:…" and not for a bare 64-hex ID, which Parse rejects).
  if (!StartsWith(text, "sha256:")) {
    auto ref = Reference::Parse(text);
    if (ref.has_value()) {
      std::string want = ref->String();
      for (const auto& lr : all) {
        if (lr.record.reference == want) chosen = &lr;
      }
      if (chosen == nullptr && ref->digest().has_value()) {
        // name@digest also names an image pulled by tag whose manifest or repo digest it is.
        for (const auto& lr : all) {
          if (lr.record.repository == ref->Name() && (lr.record.manifest.digest == *ref->digest() ||
                                                      lr.record.repo_digest == *ref->digest())) {
            chosen = &lr;
            break;
          }
        }
      } else if (chosen != nullptr) {
        by_reference = chosen->record;
      }
    }
  }

  // 2. An image ID (config digest) or manifest digest: full, "sha256:"-prefixed or a short
  //    unique prefix of at least 4 hex digits.
  if (chosen == nullptr) {
    std::string_view hex = text;
    bool prefixed = StartsWith(hex, "sha256:");
    if (prefixed) hex.remove_prefix(7);
    if (IsHex(hex) && hex.size() <= 64 && (hex.size() >= 4 || (prefixed && !hex.empty()))) {
      std::set<Digest> ids;
      for (const auto& lr : all) {
        if (StartsWith(lr.id.hex(), hex)) ids.insert(lr.id);
      }
      if (ids.empty() && hex.size() == 64) {
        for (const auto& lr : all) {
          if (lr.record.manifest.digest.hex() == hex) ids.insert(lr.id);
        }
      }
      if (ids.size() > 1) {
        return Status::InvalidArgument("image ID prefix '" + std::string(text) +
                                       "' is ambiguous (" + std::to_string(ids.size()) +
                                       " images match); give more digits");
      }
      if (ids.size() == 1) {
        for (const auto& lr : all) {
          if (lr.id == *ids.begin()) {
            // Prefer a named entry as the representative.
            if (chosen == nullptr || (chosen->record.dangling() && !lr.record.dangling())) {
              chosen = &lr;
            }
          }
        }
      }
    }
  }
  if (chosen == nullptr) return Status::NotFound(NoSuchImage(text));
  if (!chosen->manifest.has_value() || !chosen->config.has_value()) {
    // Load again to report why.
    auto m = LoadManifest(store, chosen->record.manifest.digest);
    if (!m.has_value()) return m.error().WithContext("image " + std::string(text));
    auto c = LoadConfig(store, m->config.digest);
    return c.error().WithContext("image " + std::string(text));
  }

  ResolvedImage out;
  out.id = chosen->id;
  out.manifest = chosen->record.manifest;
  out.decoded = *chosen->manifest;
  out.config = *chosen->config;
  for (const auto& lr : all) {
    if (lr.id == chosen->id) out.records.push_back(lr.record);
  }
  out.by_reference = std::move(by_reference);
  return out;
}

// ---------------------------------------------------------------------------------------
// InspectImage

Result<std::string> InspectImage(const Store& store, std::string_view text) {
  IMGFS_ASSIGN_OR_RETURN(ResolvedImage img, ResolveImage(store, text));
  std::set<std::string> tags;
  std::set<std::string> digests;
  for (const auto& r : img.records) {
    EntryView v = ViewOf(r);
    if (v.tagged) tags.insert(v.familiar_ref);
    std::string rd = RepoDigestOf(r);
    if (!rd.empty()) digests.insert(rd);
  }
  auto strings_or_null = [](const std::vector<std::string>& v) -> json {
    return v.empty() ? json(nullptr) : json(v);
  };
  const registry::ImageConfig& c = img.config;
  json config = json::object();
  config["User"] = c.user;
  config["Env"] = strings_or_null(c.env);
  config["Cmd"] = strings_or_null(c.cmd);
  config["Entrypoint"] = strings_or_null(c.entrypoint);
  config["WorkingDir"] = c.working_dir;
  config["Labels"] = c.labels.empty() ? json(nullptr) : json(c.labels);
  json diff_ids = json::array();
  for (const auto& d : c.diff_ids) diff_ids.push_back(d.String());
  json layers = json::array();
  int64_t size = img.decoded.config.size;
  for (const auto& l : img.decoded.layers) {
    layers.push_back(
        {{"MediaType", l.media_type}, {"Digest", l.digest.String()}, {"Size", l.size}});
    size += l.size;
  }
  json j = json::object();
  j["Id"] = img.id.String();
  j["RepoTags"] = json(std::vector<std::string>(tags.begin(), tags.end()));
  j["RepoDigests"] = json(std::vector<std::string>(digests.begin(), digests.end()));
  j["Created"] = c.created;
  j["Author"] = c.author;
  j["Config"] = std::move(config);
  j["Architecture"] = c.architecture;
  if (!c.variant.empty()) j["Variant"] = c.variant;
  j["Os"] = c.os;
  j["Size"] = size;
  j["RootFS"] = {{"Type", "layers"}, {"Layers", std::move(diff_ids)}};
  j["Manifest"] = img.manifest.digest.String();
  j["MediaType"] =
      img.decoded.media_type.empty() ? img.manifest.media_type : img.decoded.media_type;
  j["Layers"] = std::move(layers);
  return j.dump(4);
}

// ---------------------------------------------------------------------------------------
// RemoveImage

Result<RemoveReport> RemoveImage(Store& store, std::string_view text, bool force) {
  IMGFS_ASSIGN_OR_RETURN(ResolvedImage img, ResolveImage(store, text));
  std::set<Digest> manifests;  // every manifest of the image
  for (const auto& r : img.records) manifests.insert(r.manifest.digest);
  const bool by_reference = img.by_reference.has_value();
  const std::string short_id = img.id.Short();

  if (!by_reference && !force) {
    // docker's isSingleReference: at most one tag, and digest references only of that
    // repository; otherwise deleting by ID must be forced.
    std::set<std::string> names;
    int tag_count = 0;
    for (const auto& r : img.records) {
      if (r.dangling()) continue;
      auto ref = Reference::Parse(r.reference);
      if (!ref.has_value()) continue;
      names.insert(ref->Name());
      if (!ref->tag().empty()) ++tag_count;
    }
    if (tag_count > 1 || names.size() > 1) {
      return Status::InvalidArgument("conflict: unable to delete " + short_id +
                                     " (must be forced) - image is referenced in multiple "
                                     "repositories");
    }
  }

  RemoveReport report;
  std::vector<ImageRecord> removed;
  bool image_gone = false;
  Status st = store.UpdateRecords([&](std::vector<ImageRecord>& records) {
    std::vector<ImageRecord> kept;
    for (auto& r : records) {
      bool remove = by_reference ? r.reference == img.by_reference->reference &&
                                       r.manifest.digest == img.by_reference->manifest.digest
                                 : manifests.count(r.manifest.digest) > 0;
      (remove ? removed : kept).push_back(std::move(r));
    }
    if (removed.empty()) return Status::NotFound(NoSuchImage(text));
    image_gone = std::none_of(kept.begin(), kept.end(), [&](const ImageRecord& r) {
      return manifests.count(r.manifest.digest) > 0;
    });
    if (image_gone && !force) {
      int stale = 0;
      IMGFS_ASSIGN_OR_RETURN(std::vector<LeaseInfo> leases, ListLiveLeasesLocked(store, &stale));
      for (const auto& l : leases) {
        if (manifests.count(l.manifest) > 0) {
          removed.clear();
          return Status::InvalidArgument("conflict: unable to delete " + short_id +
                                         " (must be forced) - image is in use by the mount at " +
                                         l.mountpoint);
        }
      }
      for (const auto& [name, manifest] : ContainerImages(store)) {
        if (manifests.count(manifest) > 0) {
          removed.clear();
          return Status::InvalidArgument("conflict: unable to delete " + short_id +
                                         " (must be forced) - image is in use by container " +
                                         name);
        }
      }
    }
    records = std::move(kept);
    return Status::Ok();
  });
  IMGFS_RETURN_IF_ERROR(st);

  report.untagged = UntaggedLines(removed, img.records, image_gone);
  if (image_gone) report.deleted.push_back(img.id);
  IMGFS_ASSIGN_OR_RETURN(GcReport gc, CollectGarbage(store));
  report.freed_bytes = gc.bytes_freed;
  return report;
}

// ---------------------------------------------------------------------------------------
// TagImage

Result<ResolvedImage> TagImage(Store& store, std::string_view source, const Reference& target) {
  if (target.digest().has_value()) {
    return Status::InvalidArgument("refusing to create a tag with a digest reference");
  }
  IMGFS_ASSIGN_OR_RETURN(ResolvedImage img, ResolveImage(store, source));
  ImageRecord entry;
  entry.reference = target.String();
  entry.repository = target.Name();
  entry.manifest = img.manifest;
  for (const ImageRecord& r : img.records) {
    if (r.repository == entry.repository && !r.repo_digest.empty() &&
        r.manifest.digest == img.manifest.digest) {
      entry.repo_digest = r.repo_digest;
    }
  }
  Status st = store.UpdateRecords([&](std::vector<ImageRecord>& records) {
    bool present = std::any_of(records.begin(), records.end(), [&](const ImageRecord& r) {
      return r.manifest.digest == img.manifest.digest;
    });
    if (!present) return Status::NotFound(NoSuchImage(source));
    PlaceRecord(records, entry);
    return Status::Ok();
  });
  IMGFS_RETURN_IF_ERROR(st);
  return img;
}

// ---------------------------------------------------------------------------------------
// ImageHistory

std::vector<HistoryRow> ImageHistory(const ResolvedImage& image) {
  const std::vector<Descriptor>& layers = image.decoded.layers;
  std::vector<HistoryRow> rows;  // oldest first while building
  size_t next_layer = 0;
  for (const registry::HistoryEntry& h : image.config.history) {
    HistoryRow row;
    row.entry = h;
    if (!h.empty_layer && next_layer < layers.size()) row.layer = layers[next_layer++];
    rows.push_back(std::move(row));
  }
  for (; next_layer < layers.size(); ++next_layer) {
    HistoryRow row;
    row.entry.created = image.config.created;
    row.layer = layers[next_layer];
    rows.push_back(std::move(row));
  }
  std::reverse(rows.begin(), rows.end());
  return rows;
}

// ---------------------------------------------------------------------------------------
// PruneImages

Result<ImagePruneReport> PruneImages(Store& store, bool all, const UsageOptions& gc_options) {
  ImagePruneFilter filter;
  filter.all = all;
  return PruneImages(store, filter, gc_options);
}

Result<ImagePruneReport> PruneImages(Store& store, const ImagePruneFilter& filter,
                                     const UsageOptions& gc_options) {
  const bool all = filter.all;
  // Image IDs (config digests) by manifest, read before the lock; a manifest recorded in the
  // meantime is read under it. Configs by image ID, for the until and label filters.
  std::map<Digest, Digest> id_of;
  std::map<Digest, std::optional<registry::ImageConfig>> config_of;
  IMGFS_ASSIGN_OR_RETURN(std::vector<LoadedRecord> loaded, LoadAll(store));
  for (const LoadedRecord& lr : loaded) {
    id_of[lr.record.manifest.digest] = lr.id;
    config_of[lr.id] = lr.config;
  }
  auto id_for = [&](const Digest& manifest) -> Digest {
    if (auto it = id_of.find(manifest); it != id_of.end()) return it->second;
    Result<registry::Manifest> m = LoadManifest(store, manifest);
    Digest id = m.has_value() ? m->config.digest : manifest;
    id_of[manifest] = id;
    if (m.has_value()) {
      Result<registry::ImageConfig> c = LoadConfig(store, id);
      config_of[id] = c.has_value() ? std::optional(std::move(c).value()) : std::nullopt;
    }
    return id;
  };
  // docker's image prune: until compares the config's `created` (an image without one is
  // kept), labels are the config's Labels (matchLabels in daemon/images/image_prune.go).
  auto filtered_out = [&](const Digest& id) {
    const bool narrows =
        filter.until_unix_s.has_value() || !filter.labels.empty() || !filter.not_labels.empty();
    if (!narrows) return false;
    auto it = config_of.find(id);
    if (it == config_of.end() || !it->second.has_value()) return true;
    const registry::ImageConfig& config = *it->second;
    if (filter.until_unix_s.has_value()) {
      int64_t sec = 0;
      uint32_t nsec = 0;
      if (config.created.empty() || !ParseRfc3339(config.created, &sec, &nsec).ok() ||
          sec > *filter.until_unix_s || (sec == *filter.until_unix_s && nsec > 0)) {
        return true;
      }
    }
    if (!MatchesLabels(filter.labels, config.labels)) return true;
    return !filter.not_labels.empty() && MatchesLabels(filter.not_labels, config.labels);
  };

  ImagePruneReport report;
  Status st = store.UpdateRecords([&](std::vector<ImageRecord>& records) {
    report.images.clear();
    int stale = 0;
    IMGFS_ASSIGN_OR_RETURN(std::vector<LeaseInfo> leases, ListLiveLeasesLocked(store, &stale));
    std::set<Digest> pinned;
    for (const LeaseInfo& l : leases) pinned.insert(id_for(l.manifest));
    for (const auto& [name, manifest] : ContainerImages(store)) pinned.insert(id_for(manifest));

    // Every image's entries, in the order images first appear in index.json.
    std::vector<Digest> order;
    std::map<Digest, std::vector<ImageRecord>> by_id;
    for (const ImageRecord& r : records) {
      Digest id = id_for(r.manifest.digest);
      auto [it, inserted] = by_id.try_emplace(id);
      if (inserted) order.push_back(id);
      it->second.push_back(r);
    }
    std::set<Digest> doomed;
    for (const Digest& id : order) {
      if (pinned.count(id) > 0) continue;
      const std::vector<ImageRecord>& entries = by_id[id];
      bool tagged = std::any_of(entries.begin(), entries.end(),
                                [](const ImageRecord& r) { return ViewOf(r).tagged; });
      if (!all && tagged) continue;
      if (filtered_out(id)) continue;
      doomed.insert(id);
      report.images.push_back({id, UntaggedLines(entries, entries, /*image_gone=*/true)});
    }
    std::erase_if(
        records, [&](const ImageRecord& r) { return doomed.count(id_for(r.manifest.digest)) > 0; });
    return Status::Ok();
  });
  IMGFS_RETURN_IF_ERROR(st);
  IMGFS_ASSIGN_OR_RETURN(GcReport gc, CollectGarbage(store, gc_options));
  report.bytes_freed = gc.bytes_freed;
  return report;
}

// ---------------------------------------------------------------------------------------
// CollectGarbage

Result<GcReport> CollectGarbage(Store& store) { return CollectGarbage(store, UsageOptions{}); }

}  // namespace imgfs::cache
