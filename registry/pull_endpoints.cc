// imgfs — registries.conf resolution: prefixes, mirrors, short names (see pull_endpoints.h).
#include "registry/pull_endpoints.h"

#include <utility>

#include "base/strings.h"

namespace imgfs::registry {
namespace {

// refMatchingSubdomainPrefix: "*.example.com" against the host part of `ref_text`.
int SubdomainMatchLength(std::string_view ref_text, std::string_view prefix) {
  const std::string_view suffix = prefix.substr(1);  // ".example.com"
  const size_t index = ref_text.find(suffix);
  if (index == std::string_view::npos) return -1;
  if (ref_text.substr(0, index).find('/') != std::string_view::npos) return -1;
  const size_t end = index + suffix.size();
  if (end == ref_text.size()) return static_cast<int>(end);
  const char c = ref_text[end];
  return c == ':' || c == '/' || c == '@' ? static_cast<int>(end) : -1;
}

// `location` + the part of the reference after the match, parsed.
Result<Reference> Rewrite(const Reference& ref, const std::string& ref_text, int match_length,
                          const std::string& location, const std::string& prefix) {
  if (location.empty()) return ref;  // a wildcard registry's own location: the host itself
  const std::string text = location + ref_text.substr(static_cast<size_t>(match_length));
  Result<Reference> out = Reference::Parse(text);
  if (!out.has_value()) {
    return out.error().WithContext("registries.conf: rewriting " + ref_text + " by prefix " +
                                   prefix + " to " + location);
  }
  return out;
}

// The name part of a short name: without "@digest" and ":tag".
std::string_view ShortNameWithoutTag(std::string_view text) {
  std::string_view name = text.substr(0, text.find('@'));
  const size_t colon = name.rfind(':');
  if (colon != std::string_view::npos && name.find('/', colon) == std::string_view::npos) {
    name = name.substr(0, colon);
  }
  return name;
}

}  // namespace

int PrefixMatchLength(std::string_view ref_text, std::string_view prefix) {
  if (prefix.starts_with("*.")) return SubdomainMatchLength(ref_text, prefix);
  if (prefix.empty() || !ref_text.starts_with(prefix)) return -1;
  if (ref_text.size() == prefix.size()) return static_cast<int>(prefix.size());
  const char c = ref_text[prefix.size()];
  return c == ':' || c == '/' || c == '@' ? static_cast<int>(prefix.size()) : -1;
}

const RegistryConf* FindRegistryConf(const RegistriesConf& conf, const Reference& ref) {
  const std::string text = ref.String();
  const RegistryConf* best = nullptr;
  int best_length = -1;
  for (const RegistryConf& reg : conf.registries) {
    const int length = PrefixMatchLength(text, reg.prefix);
    if (length > best_length) {
      best = &reg;
      best_length = length;
    }
  }
  return best;
}

Result<std::vector<PullEndpoint>> PullEndpoints(const RegistriesConf& conf, const Reference& ref) {
  const RegistryConf* reg = FindRegistryConf(conf, ref);
  std::vector<PullEndpoint> out;
  if (reg == nullptr) {
    out.push_back(PullEndpoint{ref, false, false});
    return out;
  }
  const std::string text = ref.String();
  if (reg->blocked) {
    return Status::PermissionDenied("registry " + reg->prefix + " is blocked in registries.conf" +
                                    (reg->file.empty() ? "" : " (" + reg->file + ")") +
                                    "; not pulling " + text);
  }
  const int length = PrefixMatchLength(text, reg->prefix);
  const bool by_digest = ref.digest().has_value();
  for (const MirrorConf& mirror : reg->mirrors) {
    bool use = true;
    if (reg->mirror_by_digest_only) {
      use = by_digest;
    } else if (mirror.pull_from_mirror == PullFromMirror::kDigestOnly) {
      use = by_digest;
    } else if (mirror.pull_from_mirror == PullFromMirror::kTagOnly) {
      use = !by_digest;
    }
    if (!use) continue;
    IMGFS_ASSIGN_OR_RETURN(Reference rewritten,
                           Rewrite(ref, text, length, mirror.location, reg->prefix));
    out.push_back(PullEndpoint{std::move(rewritten), mirror.insecure, true});
  }
  IMGFS_ASSIGN_OR_RETURN(Reference location,
                         Rewrite(ref, text, length, reg->location, reg->prefix));
  out.push_back(PullEndpoint{std::move(location), reg->insecure, false});
  return out;
}

bool IsShortName(std::string_view text) {
  const size_t slash = text.find('/');
  if (slash == std::string_view::npos) return true;
  const std::string_view first = text.substr(0, slash);
  if (first == "localhost" || first.find_first_of(".:") != std::string_view::npos) return false;
  for (char c : first) {
    if (c >= 'A' && c <= 'Z') return false;
  }
  return true;
}

Result<std::vector<Reference>> ResolveShortName(const RegistriesConf& conf, std::string_view text) {
  std::vector<Reference> out;
  if (!IsShortName(text)) {
    IMGFS_ASSIGN_OR_RETURN(Reference ref, Reference::Parse(text));
    out.push_back(std::move(ref));
    return out;
  }
  // The short name must be valid on its own before it is combined with anything.
  IMGFS_ASSIGN_OR_RETURN(Reference as_docker, Reference::Parse(text));
  const std::string_view name = ShortNameWithoutTag(text);
  const std::string_view tail = text.substr(name.size());  // ":tag", "@digest" or ""
  if (auto alias = conf.aliases.find(std::string(name)); alias != conf.aliases.end()) {
    if (IsShortName(alias->second)) {
      return Status::InvalidArgument("registries.conf: alias " + QuoteForMessage(name) + " = " +
                                     QuoteForMessage(alias->second) +
                                     " is not a fully qualified image name");
    }
    Result<Reference> ref = Reference::Parse(alias->second + std::string(tail));
    if (!ref.has_value()) return ref.error().WithContext("registries.conf alias " + alias->first);
    out.push_back(std::move(ref).value());
    return out;
  }
  if (!conf.unqualified_search_registries) {
    out.push_back(std::move(as_docker));
    return out;
  }
  if (conf.unqualified_search_registries->empty()) {
    return Status::InvalidArgument("short name " + QuoteForMessage(text) +
                                   ": registries.conf lists no unqualified-search-registries; "
                                   "use a fully qualified name (HOST/REPOSITORY)");
  }
  for (const std::string& registry : *conf.unqualified_search_registries) {
    Result<Reference> ref = Reference::Parse(registry + "/" + std::string(text));
    if (!ref.has_value()) {
      return ref.error().WithContext("registries.conf unqualified-search-registries");
    }
    out.push_back(std::move(ref).value());
  }
  return out;
}

}  // namespace imgfs::registry
