// imgfs — proxies for registry traffic, from the environment as curl, Go and podman read it:
// https_proxy / HTTPS_PROXY for https:// URLs, http_proxy / HTTP_PROXY for http:// URLs,
// all_proxy / ALL_PROXY for either when the specific one is unset (lower case first, as curl
// does), and no_proxy / NO_PROXY: a comma-separated list of host names (a suffix match:
// "example.com" also covers "a.example.com"), IP addresses or CIDR ranges, or "*".
//
// Loopback is never proxied, whatever the environment says: localhost, 127.0.0.0/8 and ::1
// are always added to the no-proxy list (a local registry or pull-through cache is on this
// machine; a proxy somewhere else cannot reach it). curl ignores upper-case HTTP_PROXY (the
// CGI "httpoxy" issue); imgfs is no CGI program, so it honours it like Go and podman do.
//
// HttpClient applies the result to every request explicitly (CURLOPT_PROXY,
// CURLOPT_NOPROXY), so libcurl's own reading of the environment never decides anything.
//
// Thread-safety: values and pure functions; ProxyConfigFromEnvironment reads the environment.
#ifndef IMGFS_REGISTRY_PROXY_ENV_H_
#define IMGFS_REGISTRY_PROXY_ENV_H_

#include <string>
#include <string_view>

namespace imgfs::registry {

struct ProxyConfig {
  std::string http_proxy;   // for http:// URLs; "" = none
  std::string https_proxy;  // for https:// URLs; "" = none
  std::string no_proxy;     // as given in the environment
};

// The always-excluded loopback hosts, in CURLOPT_NOPROXY syntax.
inline constexpr std::string_view kLoopbackNoProxy = "localhost,127.0.0.0/8,::1";

ProxyConfig ProxyConfigFromEnvironment();

// The proxy URL for a request to `url` ("" = connect directly; the no-proxy list is applied
// separately by curl).
std::string ProxyFor(const ProxyConfig& config, std::string_view url);

// CURLOPT_NOPROXY: the environment's list plus kLoopbackNoProxy.
std::string NoProxyList(const ProxyConfig& config);

}  // namespace imgfs::registry

#endif  // IMGFS_REGISTRY_PROXY_ENV_H_
