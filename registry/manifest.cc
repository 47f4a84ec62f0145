// imgfs — manifests, indexes and image configs (see manifest.h).
//
// Each document is parsed once with nlohmann's non-throwing parser; the typed accessors below
// check every field's JSON type before reading it and name the offending field
// ("layers[1].size must be a non-negative integer") in a Corrupt status. One try/catch per
// public decode function contains whatever nlohmann could still throw.
#include "registry/manifest.h"

#include <sys/utsname.h>

#include <algorithm>
#include <cctype>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "registry/media_types.h"

namespace imgfs::registry {
namespace {

using json = nlohmann::json;

constexpr std::string_view kDockerReferenceTypeAnnotation = "vnd.docker.reference.type";
constexpr std::string_view kSchema1Message =
    "schema 1 manifests are not supported; re-push the image with a current tool";

// "application/json; charset=utf-8" -> "application/json".
std::string_view Essence(std::string_view media_type) {
  media_type = media_type.substr(0, media_type.find(';'));
  while (!media_type.empty() && (media_type.back() == ' ' || media_type.back() == '\t')) {
    media_type.remove_suffix(1);
  }
  while (!media_type.empty() && (media_type.front() == ' ' || media_type.front() == '\t')) {
    media_type.remove_prefix(1);
  }
  return media_type;
}

bool IsIndexType(std::string_view t) {
  return t == media::kOciIndex || t == media::kDockerManifestList;
}
bool IsManifestType(std::string_view t) {
  return t == media::kOciManifest || t == media::kDockerManifest;
}
bool IsSchema1Type(std::string_view t) {
  return t == media::kDockerManifestV1 || t == media::kDockerManifestV1Signed;
}

// Parses `bytes` as a JSON object; Corrupt naming `what` otherwise.
Result<json> ParseObject(std::string_view bytes, std::string_view what) {
  json doc = json::parse(bytes.begin(), bytes.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    return Status::Corrupt(std::string(what) + " is not valid JSON (" +
                           std::to_string(bytes.size()) + " bytes)");
  }
  if (!doc.is_object()) return Status::Corrupt(std::string(what) + " is not a JSON object");
  return doc;
}

Status TypeError(std::string_view field, std::string_view want) {
  return Status::Corrupt("field \"" + std::string(field) + "\" must be " + std::string(want));
}

std::string Join(std::string_view prefix, std::string_view key) {
  return prefix.empty() ? std::string(key) : std::string(prefix) + "." + std::string(key);
}

// Typed field readers. A missing (or null) optional field leaves `out` untouched.
Status GetString(const json& obj, std::string_view key, std::string_view prefix, bool required,
                 std::string* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    if (required) return Status::Corrupt("missing field \"" + Join(prefix, key) + "\"");
    return Status();
  }
  if (!it->is_string()) return TypeError(Join(prefix, key), "a string");
  *out = it->get<std::string>();
  return Status();
}

Status GetStringList(const json& obj, std::string_view key, std::string_view prefix,
                     std::vector<std::string>* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return Status();
  if (!it->is_array()) return TypeError(Join(prefix, key), "an array of strings");
  out->clear();
  for (const json& v : *it) {
    if (!v.is_string()) return TypeError(Join(prefix, key), "an array of strings");
    out->push_back(v.get<std::string>());
  }
  return Status();
}

Status GetStringMap(const json& obj, std::string_view key, std::string_view prefix,
                    std::map<std::string, std::string>* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return Status();
  if (!it->is_object()) return TypeError(Join(prefix, key), "an object of strings");
  out->clear();
  for (auto kv = it->begin(); kv != it->end(); ++kv) {
    if (!kv.value().is_string()) {
      return TypeError(Join(prefix, key) + "." + kv.key(), "a string");
    }
    (*out)[kv.key()] = kv.value().get<std::string>();
  }
  return Status();
}

Status GetSchemaVersion(const json& obj, int* out) {
  auto it = obj.find("schemaVersion");
  if (it == obj.end()) return Status::Corrupt("missing field \"schemaVersion\"");
  if (!it->is_number_integer()) return TypeError("schemaVersion", "an integer");
  int64_t v = it->get<int64_t>();
  if (v == 1) return Status::Unsupported(std::string(kSchema1Message));
  if (v != 2) return Status::Unsupported("unsupported schemaVersion " + std::to_string(v));
  *out = 2;
  return Status();
}

Status DecodePlatform(const json& obj, std::string_view prefix, Platform* out) {
  if (!obj.is_object()) return TypeError(prefix, "an object");
  IMGFS_RETURN_IF_ERROR(GetString(obj, "architecture", prefix, true, &out->architecture));
  IMGFS_RETURN_IF_ERROR(GetString(obj, "os", prefix, true, &out->os));
  IMGFS_RETURN_IF_ERROR(GetString(obj, "variant", prefix, false, &out->variant));
  IMGFS_RETURN_IF_ERROR(GetString(obj, "os.version", prefix, false, &out->os_version));
  return Status();
}

Status DecodeDescriptor(const json& obj, const std::string& prefix, Descriptor* out) {
  if (!obj.is_object()) return TypeError(prefix, "an object");
  IMGFS_RETURN_IF_ERROR(GetString(obj, "mediaType", prefix, true, &out->media_type));
  std::string digest;
  IMGFS_RETURN_IF_ERROR(GetString(obj, "digest", prefix, true, &digest));
  Result<Digest> d = Digest::Parse(digest);
  if (!d.has_value()) {
    return Status::Corrupt("field \"" + Join(prefix, "digest") + "\": " + d.error().message());
  }
  out->digest = *d;
  auto size = obj.find("size");
  if (size == obj.end()) return Status::Corrupt("missing field \"" + Join(prefix, "size") + "\"");
  if (!size->is_number_integer() || size->get<int64_t>() < 0) {
    return TypeError(Join(prefix, "size"), "a non-negative integer");
  }
  out->size = size->get<int64_t>();
  IMGFS_RETURN_IF_ERROR(GetStringMap(obj, "annotations", prefix, &out->annotations));
  IMGFS_RETURN_IF_ERROR(GetStringList(obj, "urls", prefix, &out->urls));
  IMGFS_RETURN_IF_ERROR(GetString(obj, "artifactType", prefix, false, &out->artifact_type));
  auto platform = obj.find("platform");
  if (platform != obj.end() && !platform->is_null()) {
    Platform p;
    IMGFS_RETURN_IF_ERROR(DecodePlatform(*platform, Join(prefix, "platform"), &p));
    out->platform = std::move(p);
  }
  return Status();
}

Status DecodeDescriptorList(const json& obj, std::string_view key, bool required,
                            std::vector<Descriptor>* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    if (required) return Status::Corrupt("missing field \"" + std::string(key) + "\"");
    return Status();
  }
  if (!it->is_array()) return TypeError(key, "an array of descriptors");
  out->clear();
  out->reserve(it->size());
  for (size_t i = 0; i < it->size(); ++i) {
    Descriptor d;
    IMGFS_RETURN_IF_ERROR(
        DecodeDescriptor((*it)[i], std::string(key) + "[" + std::to_string(i) + "]", &d));
    out->push_back(std::move(d));
  }
  return Status();
}

Status DecodeManifestImpl(std::string_view bytes, Manifest* m) {
  IMGFS_ASSIGN_OR_RETURN(json doc, ParseObject(bytes, "manifest"));
  if (doc.contains("fsLayers") || doc.contains("signatures")) {
    return Status::Unsupported(std::string(kSchema1Message));
  }
  IMGFS_RETURN_IF_ERROR(GetSchemaVersion(doc, &m->schema_version));
  IMGFS_RETURN_IF_ERROR(GetString(doc, "mediaType", "", false, &m->media_type));
  if (!m->media_type.empty() && !IsManifestType(m->media_type)) {
    if (IsIndexType(m->media_type)) {
      return Status::Corrupt("expected an image manifest, got an index (" + m->media_type + ")");
    }
    return Status::Unsupported("unsupported manifest media type " + m->media_type);
  }
  if (doc.contains("manifests") && !doc.contains("layers")) {
    return Status::Corrupt("expected an image manifest, got an index (has \"manifests\")");
  }
  IMGFS_RETURN_IF_ERROR(GetString(doc, "artifactType", "", false, &m->artifact_type));
  auto config = doc.find("config");
  if (config == doc.end()) return Status::Corrupt("missing field \"config\"");
  IMGFS_RETURN_IF_ERROR(DecodeDescriptor(*config, "config", &m->config));
  IMGFS_RETURN_IF_ERROR(DecodeDescriptorList(doc, "layers", true, &m->layers));
  if (m->layers.size() > kMaxImageLayers) {
    return Status::Unsupported("manifest lists " + std::to_string(m->layers.size()) +
                               " layers, more than " + std::to_string(kMaxImageLayers) +
                               " (kMaxImageLayers, as docker allows)");
  }
  // Sizes bound every download of these blobs: none may be missing, zero or negative.
  if (m->config.size <= 0) {
    return Status::Corrupt("config " + m->config.digest.String() + " has size " +
                           std::to_string(m->config.size) + " (must be > 0)");
  }
  if (m->config.size > kMaxConfigBytes) {
    return Status::Corrupt("config " + m->config.digest.String() + " has size " +
                           std::to_string(m->config.size) + ", above the limit of " +
                           std::to_string(kMaxConfigBytes) + " bytes (kMaxConfigBytes)");
  }
  for (const Descriptor& layer : m->layers) {
    if (layer.size <= 0) {
      return Status::Corrupt("layer " + layer.digest.String() + " has size " +
                             std::to_string(layer.size) + " (must be > 0)");
    }
  }
  auto subject = doc.find("subject");
  if (subject != doc.end() && !subject->is_null()) {
    Descriptor s;
    IMGFS_RETURN_IF_ERROR(DecodeDescriptor(*subject, "subject", &s));
    m->subject = std::move(s);
  }
  IMGFS_RETURN_IF_ERROR(GetStringMap(doc, "annotations", "", &m->annotations));
  return Status();
}

Status DecodeIndexImpl(std::string_view bytes, Index* idx) {
  IMGFS_ASSIGN_OR_RETURN(json doc, ParseObject(bytes, "index"));
  if (doc.contains("fsLayers") || doc.contains("signatures")) {
    return Status::Unsupported(std::string(kSchema1Message));
  }
  IMGFS_RETURN_IF_ERROR(GetSchemaVersion(doc, &idx->schema_version));
  IMGFS_RETURN_IF_ERROR(GetString(doc, "mediaType", "", false, &idx->media_type));
  if (!idx->media_type.empty() && !IsIndexType(idx->media_type)) {
    if (IsManifestType(idx->media_type)) {
      return Status::Corrupt("expected an index, got an image manifest (" + idx->media_type + ")");
    }
    return Status::Unsupported("unsupported index media type " + idx->media_type);
  }
  IMGFS_RETURN_IF_ERROR(DecodeDescriptorList(doc, "manifests", true, &idx->manifests));
  IMGFS_RETURN_IF_ERROR(GetStringMap(doc, "annotations", "", &idx->annotations));
  return Status();
}

Status DecodeImageConfigImpl(std::string_view bytes, ImageConfig* c) {
  IMGFS_ASSIGN_OR_RETURN(json doc, ParseObject(bytes, "image config"));
  IMGFS_RETURN_IF_ERROR(GetString(doc, "created", "", false, &c->created));
  IMGFS_RETURN_IF_ERROR(GetString(doc, "author", "", false, &c->author));
  IMGFS_RETURN_IF_ERROR(GetString(doc, "architecture", "", false, &c->architecture));
  IMGFS_RETURN_IF_ERROR(GetString(doc, "os", "", false, &c->os));
  IMGFS_RETURN_IF_ERROR(GetString(doc, "variant", "", false, &c->variant));
  auto config = doc.find("config");
  if (config != doc.end() && !config->is_null()) {
    if (!config->is_object()) return TypeError("config", "an object");
    IMGFS_RETURN_IF_ERROR(GetStringList(*config, "Env", "config", &c->env));
    IMGFS_RETURN_IF_ERROR(GetStringList(*config, "Entrypoint", "config", &c->entrypoint));
    IMGFS_RETURN_IF_ERROR(GetStringList(*config, "Cmd", "config", &c->cmd));
    IMGFS_RETURN_IF_ERROR(GetString(*config, "WorkingDir", "config", false, &c->working_dir));
    IMGFS_RETURN_IF_ERROR(GetString(*config, "User", "config", false, &c->user));
    IMGFS_RETURN_IF_ERROR(GetStringMap(*config, "Labels", "config", &c->labels));
  }
  auto rootfs = doc.find("rootfs");
  if (rootfs != doc.end() && !rootfs->is_null()) {
    if (!rootfs->is_object()) return TypeError("rootfs", "an object");
    std::vector<std::string> ids;
    IMGFS_RETURN_IF_ERROR(GetStringList(*rootfs, "diff_ids", "rootfs", &ids));
    c->diff_ids.clear();
    for (size_t i = 0; i < ids.size(); ++i) {
      Result<Digest> d = Digest::Parse(ids[i]);
      if (!d.has_value()) {
        return Status::Corrupt("field \"rootfs.diff_ids[" + std::to_string(i) +
                               "]\": " + d.error().message());
      }
      c->diff_ids.push_back(*d);
    }
  }
  if (auto history = doc.find("history"); history != doc.end() && history->is_array()) {
    auto text = [](const json& entry, const char* key) {
      auto it = entry.find(key);
      return it != entry.end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    for (const json& entry : *history) {
      if (!entry.is_object()) continue;
      HistoryEntry h;
      h.created = text(entry, "created");
      h.created_by = text(entry, "created_by");
      h.author = text(entry, "author");
      h.comment = text(entry, "comment");
      auto empty = entry.find("empty_layer");
      h.empty_layer = empty != entry.end() && empty->is_boolean() && empty->get<bool>();
      c->history.push_back(std::move(h));
    }
  }
  c->raw = std::string(bytes);
  return Status();
}

json EncodePlatform(const Platform& p) {
  json j = json::object();
  j["architecture"] = p.architecture;
  j["os"] = p.os;
  if (!p.variant.empty()) j["variant"] = p.variant;
  if (!p.os_version.empty()) j["os.version"] = p.os_version;
  return j;
}

json EncodeDescriptor(const Descriptor& d) {
  json j = json::object();
  j["mediaType"] = d.media_type;
  j["digest"] = d.digest.String();
  j["size"] = d.size;
  if (!d.urls.empty()) j["urls"] = d.urls;
  if (!d.annotations.empty()) j["annotations"] = d.annotations;
  if (d.platform) j["platform"] = EncodePlatform(*d.platform);
  if (!d.artifact_type.empty()) j["artifactType"] = d.artifact_type;
  return j;
}

std::string Dump(const json& j) {
  // Replace (never throw on) invalid UTF-8 that a caller may have put into a string field.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// GOARCH name and default variant for a uname machine or a common alias.
std::pair<std::string, std::string> NormalizeArch(std::string arch, std::string variant) {
  std::transform(arch.begin(), arch.end(), arch.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  if (arch == "x86_64" || arch == "x86-64" || arch == "amd64") return {"amd64", variant};
  if (arch == "aarch64" || arch == "arm64") return {"arm64", variant};
  if (arch == "armhf") return {"arm", variant.empty() ? "v7" : variant};
  if (arch == "armel") return {"arm", variant.empty() ? "v6" : variant};
  if (arch == "armv7l" || arch == "armv7") return {"arm", "v7"};
  if (arch == "armv6l" || arch == "armv6") return {"arm", "v6"};
  if (arch == "armv5tel" || arch == "armv5") return {"arm", "v5"};
  if (arch == "i386" || arch == "i486" || arch == "i586" || arch == "i686" || arch == "x86") {
    return {"386", variant};
  }
  return {arch, variant};
}

// The variant a platform without one means for `arch` (containerd's defaults).
std::string_view DefaultVariant(std::string_view arch) {
  if (arch == "arm64") return "v8";
  if (arch == "arm") return "v7";
  return "";
}

bool IsAttestation(const Descriptor& d) {
  if (d.annotations.contains(std::string(kDockerReferenceTypeAnnotation))) return true;
  return d.platform && d.platform->os == "unknown" && d.platform->architecture == "unknown";
}

// Rank of a candidate's variant for `want` (lower is better), or -1 if it cannot run there.
int VariantRank(std::string_view arch, std::string_view want, std::string_view have) {
  std::string_view def = DefaultVariant(arch);
  std::string_view w = want.empty() ? def : want;
  std::string_view h = have.empty() ? def : have;
  if (w == h) return have == want ? 0 : 1;
  if (want.empty() && def.empty()) return 2;  // no preference: any variant will do
  // Older 32-bit arm variants run on newer cores: v7 runs v6 and v5 images.
  if (arch == "arm" && w.size() == 2 && h.size() == 2 && w[0] == 'v' && h[0] == 'v' &&
      h[1] >= '5' && h[1] < w[1]) {
    return 3 + (w[1] - h[1]);
  }
  return -1;
}

}  // namespace

std::string Platform::String() const {
  std::string s = os + "/" + architecture;
  if (!variant.empty()) s += "/" + variant;
  return s;
}

Result<Platform> Platform::Parse(std::string_view text) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t slash = text.find('/', start);
    parts.emplace_back(text.substr(start, slash == std::string_view::npos ? slash : slash - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  bool empty_part =
      std::any_of(parts.begin(), parts.end(), [](const std::string& p) { return p.empty(); });
  if (parts.size() < 2 || parts.size() > 3 || empty_part) {
    return Status::InvalidArgument("invalid platform \"" + std::string(text) +
                                   "\": expected os/arch[/variant], e.g. linux/arm64");
  }
  Platform p;
  p.os = parts[0];
  std::transform(p.os.begin(), p.os.end(), p.os.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  auto [arch, variant] = NormalizeArch(parts[1], parts.size() == 3 ? parts[2] : "");
  p.architecture = std::move(arch);
  p.variant = std::move(variant);
  return p;
}

Platform Platform::Host() {
  Platform p;
  p.os = "linux";
#if defined(__x86_64__)
  p.architecture = "amd64";
#elif defined(__aarch64__)
  p.architecture = "arm64";
#elif defined(__arm__) && defined(__ARM_ARCH) && __ARM_ARCH >= 7
  p.architecture = "arm";
  p.variant = "v7";
#elif defined(__arm__) && defined(__ARM_ARCH) && __ARM_ARCH == 6
  p.architecture = "arm";
  p.variant = "v6";
#elif defined(__i386__)
  p.architecture = "386";
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  p.architecture = "ppc64le";
#elif defined(__s390x__)
  p.architecture = "s390x";
#elif defined(__riscv) && __riscv_xlen == 64
  p.architecture = "riscv64";
#else
  utsname u{};
  if (uname(&u) == 0) {
    auto [arch, variant] = NormalizeArch(u.machine, "");
    p.architecture = std::move(arch);
    p.variant = std::move(variant);
  }
#endif
  return p;
}

Result<DocumentKind> ClassifyDocument(std::string_view bytes, std::string_view content_type) {
  try {
    IMGFS_ASSIGN_OR_RETURN(json doc, ParseObject(bytes, "manifest"));
    auto sv = doc.find("schemaVersion");
    if (sv != doc.end() && sv->is_number_integer() && sv->get<int64_t>() == 1) {
      return Status::Unsupported(std::string(kSchema1Message));
    }
    if (doc.contains("fsLayers")) return Status::Unsupported(std::string(kSchema1Message));
    auto mt = doc.find("mediaType");
    std::string declared;
    if (mt != doc.end() && !mt->is_null()) {
      if (!mt->is_string()) return TypeError("mediaType", "a string");
      declared = mt->get<std::string>();
    }
    for (std::string_view t : {std::string_view(declared), Essence(content_type)}) {
      if (IsIndexType(t)) return DocumentKind::kIndex;
      if (IsManifestType(t)) return DocumentKind::kManifest;
      if (IsSchema1Type(t)) return Status::Unsupported(std::string(kSchema1Message));
    }
    if (!declared.empty()) {
      return Status::Unsupported("unsupported manifest media type " + declared);
    }
    // No usable media type (umoci omits it; some servers send application/json): the shape.
    if (doc.contains("manifests")) return DocumentKind::kIndex;
    if (doc.contains("layers") || doc.contains("config")) return DocumentKind::kManifest;
    return Status::Corrupt("document is neither an image manifest nor an index");
  } catch (const json::exception& e) {
    return Status::Corrupt(std::string("manifest: ") + e.what());
  }
}

Result<Manifest> DecodeManifest(std::string_view bytes) {
  try {
    Manifest m;
    Status s = DecodeManifestImpl(bytes, &m);
    if (!s.ok()) return s.WithContext("invalid image manifest");
    return m;
  } catch (const json::exception& e) {
    return Status::Corrupt(std::string("invalid image manifest: ") + e.what());
  }
}

Result<Index> DecodeIndex(std::string_view bytes) {
  try {
    Index idx;
    Status s = DecodeIndexImpl(bytes, &idx);
    if (!s.ok()) return s.WithContext("invalid image index");
    return idx;
  } catch (const json::exception& e) {
    return Status::Corrupt(std::string("invalid image index: ") + e.what());
  }
}

std::string EncodeManifest(const Manifest& m) {
  json j = json::object();
  j["schemaVersion"] = m.schema_version;
  if (!m.media_type.empty()) j["mediaType"] = m.media_type;
  if (!m.artifact_type.empty()) j["artifactType"] = m.artifact_type;
  j["config"] = EncodeDescriptor(m.config);
  j["layers"] = json::array();
  for (const Descriptor& d : m.layers) j["layers"].push_back(EncodeDescriptor(d));
  if (m.subject) j["subject"] = EncodeDescriptor(*m.subject);
  if (!m.annotations.empty()) j["annotations"] = m.annotations;
  return Dump(j);
}

std::string EncodeIndex(const Index& idx) {
  json j = json::object();
  j["schemaVersion"] = idx.schema_version;
  if (!idx.media_type.empty()) j["mediaType"] = idx.media_type;
  j["manifests"] = json::array();
  for (const Descriptor& d : idx.manifests) j["manifests"].push_back(EncodeDescriptor(d));
  if (!idx.annotations.empty()) j["annotations"] = idx.annotations;
  return Dump(j);
}

Result<Descriptor> SelectPlatform(const Index& index, const Platform& want) {
  auto [want_arch, want_variant] = NormalizeArch(want.architecture, want.variant);
  std::string want_os = want.os;
  std::transform(want_os.begin(), want_os.end(), want_os.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  const Descriptor* best = nullptr;
  int best_rank = -1;
  std::vector<std::string> available;
  for (const Descriptor& d : index.manifests) {
    if (IsAttestation(d)) continue;
    if (!d.platform) {
      available.push_back("(no platform)");
      continue;
    }
    available.push_back(d.platform->String());
    auto [arch, variant] = NormalizeArch(d.platform->architecture, d.platform->variant);
    std::string os = d.platform->os;
    std::transform(os.begin(), os.end(), os.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    if (os != want_os || arch != want_arch) continue;
    int rank = VariantRank(arch, want_variant, variant);
    if (rank < 0) continue;
    if (best == nullptr || rank < best_rank) {
      best = &d;
      best_rank = rank;
    }
  }
  if (best != nullptr) return *best;
  std::string list;
  for (const std::string& a : available) list += (list.empty() ? "" : ", ") + a;
  if (list.empty()) list = "none";
  return Status::NotFound("no image for platform " + want.String() +
                          " in the index; available: " + list);
}

Result<ImageConfig> DecodeImageConfig(std::string_view bytes) {
  try {
    ImageConfig c;
    Status s = DecodeImageConfigImpl(bytes, &c);
    if (!s.ok()) return s.WithContext("invalid image config");
    return c;
  } catch (const json::exception& e) {
    return Status::Corrupt(std::string("invalid image config: ") + e.what());
  }
}

}  // namespace imgfs::registry
