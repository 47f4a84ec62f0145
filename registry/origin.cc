// imgfs — origins and the credential / TLS placement rules (see origin.h).
#include "registry/origin.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <filesystem>
#include <memory>
#include <system_error>

#include <curl/curl.h>

#include "base/strings.h"

namespace imgfs::registry {
namespace {

struct CurlUrlDeleter {
  void operator()(CURLU* url) const { curl_url_cleanup(url); }
};

// The host of "host[:port]" / "[v6]:port", lower case, brackets kept (as curl spells it).
std::string HostName(std::string_view host_port) {
  if (!host_port.empty() && host_port.front() == '[') {
    const size_t close = host_port.find(']');
    return ToLower(host_port.substr(0, close == std::string_view::npos ? 0 : close + 1));
  }
  if (std::count(host_port.begin(), host_port.end(), ':') > 1) {
    return "[" + ToLower(host_port) + "]";  // a bare IPv6 literal
  }
  return ToLower(host_port.substr(0, host_port.find(':')));
}

}  // namespace

std::optional<Origin> ParseOrigin(std::string_view url) {
  std::unique_ptr<CURLU, CurlUrlDeleter> u(curl_url());
  if (!u) return std::nullopt;
  if (curl_url_set(u.get(), CURLUPART_URL, std::string(url).c_str(), 0) != CURLUE_OK) {
    return std::nullopt;
  }
  Origin out;
  char* part = nullptr;
  if (curl_url_get(u.get(), CURLUPART_SCHEME, &part, 0) != CURLUE_OK) return std::nullopt;
  out.scheme = ToLower(part);
  curl_free(part);
  if (out.scheme != "http" && out.scheme != "https") return std::nullopt;
  if (curl_url_get(u.get(), CURLUPART_HOST, &part, 0) != CURLUE_OK) return std::nullopt;
  out.host = ToLower(part);
  curl_free(part);
  if (curl_url_get(u.get(), CURLUPART_PORT, &part, CURLU_DEFAULT_PORT) != CURLUE_OK) {
    return std::nullopt;
  }
  const std::string_view port(part);
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), out.port);
  const bool port_ok = ec == std::errc() && end == port.data() + port.size();
  curl_free(part);
  if (!port_ok || out.host.empty()) return std::nullopt;
  return out;
}

bool PlainHttpAllowed(std::string_view registry_host_port,
                      const std::vector<std::string>& insecure_registries) {
  if (IsLoopbackHost(registry_host_port)) return true;
  const std::string host = ToLower(registry_host_port);
  return std::any_of(insecure_registries.begin(), insecure_registries.end(),
                     [&](const std::string& h) { return ToLower(h) == host; });
}

bool MayCarryCredentials(std::string_view url, std::string_view registry_base_url,
                         bool plain_http_allowed) {
  const std::optional<Origin> to = ParseOrigin(url);
  const std::optional<Origin> registry = ParseOrigin(registry_base_url);
  if (!to || !registry) return false;
  if (*to == *registry) return true;
  // Same host and port under the other scheme: only where clear text is allowed anyway.
  return plain_http_allowed && to->host == registry->host && to->port == registry->port;
}

bool IsSchemeDowngrade(std::string_view from, std::string_view to) {
  const std::optional<Origin> a = ParseOrigin(from);
  const std::optional<Origin> b = ParseOrigin(to);
  return a && b && a->scheme == "https" && b->scheme == "http";
}

bool IsRegistryHostPort(std::string_view url, std::string_view registry_base_url) {
  const std::optional<Origin> to = ParseOrigin(url);
  const std::optional<Origin> registry = ParseOrigin(registry_base_url);
  return to && registry && to->host == registry->host && to->port == registry->port;
}

Status CheckTokenRealm(std::string_view realm_url, std::string_view registry_host_port,
                       bool registry_over_plain_http) {
  const std::optional<Origin> realm = ParseOrigin(realm_url);
  if (!realm) return Status::Corrupt("the token realm is not an absolute http(s) URL");
  if (realm->scheme == "https") return Status::Ok();
  const std::string realm_host_port =
      realm->host + ":" + std::to_string(realm->port);  // for the message
  if (!registry_over_plain_http) {
    return Status::PermissionDenied(
        "the registry is spoken to over TLS but points to a plain-http token server on " +
        realm_host_port + "; refusing to send credentials there in clear text");
  }
  if (!IsLoopbackHost(realm_host_port) && realm->host != HostName(registry_host_port)) {
    return Status::PermissionDenied("the registry points to a plain-http token server on " +
                                    realm_host_port +
                                    ", neither loopback nor the registry's own host; refusing "
                                    "to send credentials there in clear text");
  }
  return Status::Ok();
}

TlsOptions WithCertsDir(TlsOptions base, const std::string& certs_dir,
                        const std::string& registry_host_port) {
  if (certs_dir.empty() || registry_host_port.empty()) return base;
  // A host with '/' or ".." would leave certs_dir; such a name is not a registry anyway.
  if (registry_host_port.find('/') != std::string::npos || registry_host_port == "." ||
      registry_host_port == "..") {
    return base;
  }
  std::error_code ec;
  const std::filesystem::path dir = std::filesystem::path(certs_dir) / ToLower(registry_host_port);
  std::vector<std::string> cas;
  std::string cert;
  std::string key;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::filesystem::path& p = entry.path();
    if (p.extension() == ".crt") cas.push_back(p.string());
    if (p.extension() == ".cert" && cert.empty()) {
      std::filesystem::path k = p;
      k.replace_extension(".key");
      if (std::filesystem::exists(k, ec)) {
        cert = p.string();
        key = k.string();
      }
    }
  }
  std::sort(cas.begin(), cas.end());
  base.ca_files.insert(base.ca_files.end(), cas.begin(), cas.end());
  if (base.client_cert_file.empty() && !cert.empty()) {
    base.client_cert_file = cert;
    base.client_key_file = key;
  }
  return base;
}

TlsOptions OtherHostTls(const TlsOptions& explicit_tls) {
  TlsOptions out;
  out.ca_files = explicit_tls.ca_files;
  return out;
}

}  // namespace imgfs::registry
