// imgfs — proxy settings from the environment (see proxy_env.h).
#include "registry/proxy_env.h"

#include <cstdlib>
#include <initializer_list>

#include "base/strings.h"

namespace imgfs::registry {
namespace {

// The first of `names` set to a non-empty value, or "".
std::string FirstSet(std::initializer_list<const char*> names) {
  for (const char* name : names) {
    // NOLINTNEXTLINE(concurrency-mt-unsafe): read once per client; imgfs sets no proxy vars.
    const char* value = std::getenv(name);
    if (value != nullptr && *value != '\0') return value;
  }
  return "";
}

}  // namespace

ProxyConfig ProxyConfigFromEnvironment() {
  ProxyConfig config;
  const std::string all = FirstSet({"all_proxy", "ALL_PROXY"});
  config.http_proxy = FirstSet({"http_proxy", "HTTP_PROXY"});
  if (config.http_proxy.empty()) config.http_proxy = all;
  config.https_proxy = FirstSet({"https_proxy", "HTTPS_PROXY"});
  if (config.https_proxy.empty()) config.https_proxy = all;
  config.no_proxy = FirstSet({"no_proxy", "NO_PROXY"});
  return config;
}

std::string ProxyFor(const ProxyConfig& config, std::string_view url) {
  const std::string lower = ToLower(url.substr(0, 8));
  if (lower.starts_with("https://")) return config.https_proxy;
  if (lower.starts_with("http://")) return config.http_proxy;
  return "";
}

std::string NoProxyList(const ProxyConfig& config) {
  std::string out(Trim(config.no_proxy));
  if (out == "*") return out;
  if (!out.empty()) out += ",";
  return out + std::string(kLoopbackNoProxy);
}

}  // namespace imgfs::registry
