// imgfs — image references (see reference.h). The grammar and the normalisation follow
// distribution/reference (regexp.go, reference.go, normalize.go) step by step:
//
//   1. a bare 64-hex string is refused (it would be an image ID);
//   2. splitDockerDomain: the first "/"-component is a registry host iff it is "localhost",
//      contains "." or ":", or has an upper-case letter; else the host is docker.io;
//      index.docker.io becomes docker.io; a one-component path on docker.io gets "library/";
//   3. the repository part before the first ":" must be lower-case;
//   4. the result must match  host[:port]/path[:tag][@digest]  (regexp.go) where
//      path components are [a-z0-9]+ joined by "." "_" "__" or "-"+, the tag is
//      [\w][\w.-]{0,127}, and the digest an available algorithm with its exact hex length;
//   5. the repository path is at most 255 characters.
//
// The one deliberate difference: a host that is not a valid host name (say "a_b.com/x"),
// which Docker silently turns into a domain-less path, is refused here.
#include "registry/reference.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <string>
#include <string_view>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "base/strings.h"

namespace imgfs::registry {
namespace {

constexpr std::string_view kDefaultDomain = "docker.io";
constexpr std::string_view kLegacyDefaultDomain = "index.docker.io";
constexpr std::string_view kOfficialRepoPrefix = "library/";
constexpr std::string_view kDockerHubEndpoint = "registry-1.docker.io";
constexpr std::string_view kDefaultTag = "latest";
// distribution/reference RepositoryNameTotalLengthMax.
constexpr size_t kMaxPathLength = 255;
// Tag grammar [\w][\w.-]{0,127}.
constexpr size_t kMaxTagLength = 128;

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool IsAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsHex(char c) {
  return (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || (c >= '0' && c <= '9');
}
bool IsWordChar(char c) { return IsAlnum(c) || c == '_'; }
bool HasUpper(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
}

Status Invalid(std::string_view input, std::string_view why) {
  return Status::InvalidArgument("invalid reference " + QuoteForMessage(input, 300) + ": " +
                                 std::string(why));
}

// domainNameComponent: [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]
bool ValidDomainComponent(std::string_view c) {
  if (c.empty() || !IsAlnum(c.front()) || !IsAlnum(c.back())) return false;
  return std::all_of(c.begin(), c.end(), [](char ch) { return IsAlnum(ch) || ch == '-'; });
}

// host[:port] where host = domainName | "[" [a-fA-F0-9:]+ "]" and port = [0-9]+.
bool ValidDomainAndPort(std::string_view d) {
  std::string_view host = d;
  std::string_view port;
  bool has_port = false;
  if (!d.empty() && d.front() == '[') {
    size_t close = d.find(']');
    if (close == std::string_view::npos || close < 2) return false;
    std::string_view inner = d.substr(1, close - 1);
    if (!std::all_of(inner.begin(), inner.end(), [](char c) { return IsHex(c) || c == ':'; })) {
      return false;
    }
    std::string_view rest = d.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return false;
      has_port = true;
      port = rest.substr(1);
    }
  } else {
    size_t colon = d.find(':');
    if (colon != std::string_view::npos) {
      has_port = true;
      host = d.substr(0, colon);
      port = d.substr(colon + 1);
    }
    size_t start = 0;
    while (true) {
      size_t dot = host.find('.', start);
      std::string_view comp = host.substr(start, dot == std::string_view::npos ? dot : dot - start);
      if (!ValidDomainComponent(comp)) return false;
      if (dot == std::string_view::npos) break;
      start = dot + 1;
    }
  }
  if (has_port) {
    if (port.empty() || !std::all_of(port.begin(), port.end(), IsDigit)) return false;
  }
  return true;
}

// pathComponent = [a-z0-9]+ ((?:[._]|__|[-]+) [a-z0-9]+)*, joined by "/". Returns "" when
// valid, else why not.
std::string PathProblem(std::string_view path) {
  if (path.empty()) return "repository name must have at least one component";
  size_t start = 0;
  while (true) {
    size_t slash = path.find('/', start);
    std::string_view comp =
        path.substr(start, slash == std::string_view::npos ? slash : slash - start);
    if (comp.empty()) return "repository name has an empty path component";
    if (!IsLowerAlnum(comp.front()) || !IsLowerAlnum(comp.back())) {
      return "path component \"" + std::string(comp) +
             "\" must start and end with a lower-case letter or digit";
    }
    size_t i = 0;
    while (i < comp.size()) {
      if (IsLowerAlnum(comp[i])) {
        ++i;
        continue;
      }
      size_t j = i;
      while (j < comp.size() && !IsLowerAlnum(comp[j])) ++j;
      std::string_view sep = comp.substr(i, j - i);
      bool ok = sep == "." || sep == "_" || sep == "__" ||
                std::all_of(sep.begin(), sep.end(), [](char c) { return c == '-'; });
      if (!ok) {
        return "path component \"" + std::string(comp) +
               "\" has an invalid separator or character \"" + std::string(sep) +
               "\" (allowed: [a-z0-9] joined by '.', '_', '__' or '-')";
      }
      i = j;
    }
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return "";
}

bool ValidTag(std::string_view tag) {
  if (tag.empty() || tag.size() > kMaxTagLength || !IsWordChar(tag.front())) return false;
  return std::all_of(tag.begin(), tag.end(),
                     [](char c) { return IsWordChar(c) || c == '.' || c == '-'; });
}

// digestPat in regexp.go: [A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[[:xdigit:]]{32,}
bool MatchesReferenceDigestPattern(std::string_view d) {
  size_t colon = d.find(':');
  if (colon == std::string_view::npos) return false;
  std::string_view alg = d.substr(0, colon);
  std::string_view hex = d.substr(colon + 1);
  if (hex.size() < 32 || !std::all_of(hex.begin(), hex.end(), IsHex)) return false;
  bool need_alpha = true;
  for (char c : alg) {
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (need_alpha) {
      if (!alpha) return false;
      need_alpha = false;
    } else if (c == '-' || c == '_' || c == '+' || c == '.') {
      need_alpha = true;
    } else if (!IsAlnum(c)) {
      return false;
    }
  }
  return !alg.empty() && !need_alpha;
}

bool IsBareImageId(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(),
                                       [](char c) { return IsDigit(c) || (c >= 'a' && c <= 'f'); });
}

}  // namespace

Result<Reference> Reference::Parse(std::string_view text) {
  if (text.empty()) return Invalid(text, "empty reference");
  if (IsBareImageId(text)) {
    return Invalid(text, "cannot specify 64-byte hexadecimal strings as a repository name");
  }
  // splitDockerDomain (normalize.go).
  std::string domain;
  std::string_view remainder;
  size_t slash = text.find('/');
  if (slash == std::string_view::npos) {
    domain = kDefaultDomain;
    remainder = text;
  } else {
    std::string_view first = text.substr(0, slash);
    if (first == "localhost" || first.find_first_of(".:") != std::string_view::npos ||
        HasUpper(first)) {
      domain = first;
      remainder = text.substr(slash + 1);
    } else {
      domain = kDefaultDomain;
      remainder = text;
    }
  }
  if (domain == kLegacyDefaultDomain) domain = kDefaultDomain;

  // Split name[:tag][@digest]. Path characters never include ':' or '@'.
  std::string_view name = remainder;
  std::string_view tag;
  std::string_view digest_text;
  bool has_tag = false;
  bool has_digest = false;
  size_t at = remainder.find('@');
  if (at != std::string_view::npos) {
    has_digest = true;
    digest_text = remainder.substr(at + 1);
    name = remainder.substr(0, at);
  }
  size_t colon = name.find(':');
  if (colon != std::string_view::npos) {
    has_tag = true;
    tag = name.substr(colon + 1);
    name = name.substr(0, colon);
  }

  // The lowercase check of ParseNormalizedNamed runs on everything before the first ':'.
  std::string_view before_colon = remainder.substr(0, remainder.find(':'));
  if (HasUpper(before_colon)) {
    if (!HasUpper(name)) return Invalid(text, "digest algorithm must be lowercase");
    return Invalid(text, "repository name \"" + std::string(name) + "\" must be lowercase");
  }
  if (!ValidDomainAndPort(domain)) {
    return Invalid(text, "invalid registry host \"" + domain + "\"");
  }
  std::string path(name);
  if (domain == kDefaultDomain && path.find('/') == std::string::npos) {
    path = std::string(kOfficialRepoPrefix) + path;
  }
  if (name.empty()) return Invalid(text, "repository name must have at least one component");
  std::string problem = PathProblem(path);
  if (!problem.empty()) return Invalid(text, problem);
  if (has_tag && !ValidTag(tag)) {
    return Invalid(text, "invalid tag \"" + std::string(tag) +
                             "\" (allowed: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127})");
  }
  Reference ref;
  if (has_digest) {
    if (!MatchesReferenceDigestPattern(digest_text)) {
      return Invalid(text, "invalid digest \"" + std::string(digest_text) + "\"");
    }
    std::string_view alg = digest_text.substr(0, digest_text.find(':'));
    if (alg != "sha256" && alg != "sha384" && alg != "sha512") {
      return Invalid(text, "unsupported digest algorithm \"" + std::string(alg) + "\"");
    }
    Result<Digest> d = Digest::Parse(digest_text);
    if (!d.has_value()) return Invalid(text, d.error().message());
    ref.digest_ = *d;
  }
  if (path.size() > kMaxPathLength) {
    return Invalid(text, "repository name must not be more than 255 characters");
  }
  ref.domain_ = std::move(domain);
  ref.path_ = std::move(path);
  if (has_tag) {
    ref.tag_ = std::string(tag);
  } else if (!has_digest) {
    ref.tag_ = kDefaultTag;
  }
  return ref;
}

std::string Reference::String() const {
  std::string s = Name();
  if (!tag_.empty()) s += ":" + tag_;
  if (digest_) s += "@" + digest_->String();
  return s;
}

std::string Reference::FamiliarName() const {
  if (domain_ != kDefaultDomain) return Name();
  std::string_view p = path_;
  if (p.starts_with(kOfficialRepoPrefix)) {
    std::string_view rest = p.substr(kOfficialRepoPrefix.size());
    if (rest.find('/') == std::string_view::npos) return std::string(rest);
  }
  return path_;
}

std::string Reference::FamiliarString() const {
  std::string s = FamiliarName();
  if (!tag_.empty()) s += ":" + tag_;
  if (digest_) s += "@" + digest_->String();
  return s;
}

std::string Reference::TagOrDigest() const { return digest_ ? digest_->String() : tag_; }

std::string Reference::Endpoint() const {
  return domain_ == kDefaultDomain ? std::string(kDockerHubEndpoint) : domain_;
}

Result<Reference> Reference::WithTag(std::string tag) const {
  if (!ValidTag(tag)) return Invalid(FamiliarName() + ":" + tag, "invalid tag");
  Reference r = *this;
  r.tag_ = std::move(tag);
  r.digest_.reset();
  return r;
}

Reference Reference::WithDigest(Digest digest) const {
  Reference r = *this;
  r.digest_ = std::move(digest);
  return r;
}

bool IsValidTag(std::string_view tag) { return ValidTag(tag); }

bool IsLoopbackHost(std::string_view host_port) {
  std::string host;
  if (!host_port.empty() && host_port.front() == '[') {
    size_t close = host_port.find(']');
    if (close == std::string_view::npos) return false;
    std::string_view rest = host_port.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') return false;
    host = host_port.substr(1, close - 1);
  } else if (std::count(host_port.begin(), host_port.end(), ':') > 1) {
    host = host_port;  // bare IPv6 address without a port
  } else {
    host = host_port.substr(0, host_port.find(':'));
  }
  std::string lower = host;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  // Not `*.localhost`: glibc resolves those through DNS (see registry/origin.h).
  if (lower == "localhost") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    if (memcmp(&v6, &in6addr_loopback, sizeof(v6)) == 0) return true;
    // IPv4-mapped loopback ::ffff:127.x.y.z
    static constexpr unsigned char kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return memcmp(v6.s6_addr, kMappedPrefix, 12) == 0 && v6.s6_addr[12] == 127;
  }
  return false;
}

}  // namespace imgfs::registry
