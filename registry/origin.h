// imgfs — where registry credentials and TLS material may go: the one statement of that
// policy, shared by pull (RemoteSource), push (Pusher), login and index publishing (both go
// through RemoteSource) and the token flow (Authenticator).
//
// An origin is (scheme, host, effective port) as RFC 6454 defines it: https://reg and
// https://reg:443 are one origin, https://reg and http://reg are two (ports 443 and 80).
// The rules:
//  - Plain HTTP is allowed for a registry only when it is loopback (IsLoopbackHost: an IP
//    literal in 127.0.0.0/8 or ::1, or exactly `localhost`) or listed with
//    --insecure-registry (PlainHttpAllowed).
//  - The registry's Authorization header goes only to the registry's own origin
//    (MayCarryCredentials). A URL on the same host and port but the other scheme — an https →
//    http downgrade in a redirect or an upload Location, the classic TLS proxy without
//    X-Forwarded-Proto — gets it only when plain HTTP is allowed for the registry anyway.
//    Another host or port never gets it.
//  - certs.d material (CAs, client certificate) goes only to the registry's own host and
//    port (IsRegistryHostPort); other hosts (blob storage, token servers) get only the CAs the
//    user named explicitly with --ca-cert.
//  - A plain-http token realm is used only when the registry itself is spoken to over plain
//    HTTP and the realm's host is loopback or the registry's own host name
//    (CheckPlainHttpRealm). A registry reached over TLS can never make imgfs send Basic
//    credentials in clear text.
//
// `*.localhost` names are NOT loopback here: RFC 6761 asks resolvers to answer them with
// loopback addresses, but glibc's resolver sends them to DNS, so such a name can point
// anywhere. Use --insecure-registry for them.
//
// Thread-safety: pure functions.
#ifndef IMGFS_REGISTRY_ORIGIN_H_
#define IMGFS_REGISTRY_ORIGIN_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "registry/http_client.h"
#include "registry/reference.h"

namespace imgfs::registry {

struct Origin {
  std::string scheme;  // "http" or "https", lower case
  std::string host;    // lower case; IPv6 literals keep their brackets
  int port = 0;        // the effective port (80/443 when the URL names none)

  bool operator==(const Origin&) const = default;
};

// The origin of an absolute http(s) URL; nullopt for anything else.
std::optional<Origin> ParseOrigin(std::string_view url);

// The loopback check is registry::IsLoopbackHost (reference.h): `localhost`, 127.0.0.0/8,
// ::1, ::ffff:127.x as IP literals, with or without a port. Nothing else — in particular no
// name that merely starts with "127." and no `*.localhost`.

// Loopback, or named (case-insensitively) in `insecure_registries`.
bool PlainHttpAllowed(std::string_view registry_host_port,
                      const std::vector<std::string>& insecure_registries);

// Whether a request to `url` may carry the registry's Authorization header, the registry
// being spoken to at `registry_base_url` ("https://host[:port]"). See the rules above.
bool MayCarryCredentials(std::string_view url, std::string_view registry_base_url,
                         bool plain_http_allowed);

// True when `to` is plain http and `from` is https (a downgrade, whatever the hosts).
bool IsSchemeDowngrade(std::string_view from, std::string_view to);

// Whether `url` names the registry's own host and effective port (any scheme);
// `registry_base_url` as for MayCarryCredentials.
bool IsRegistryHostPort(std::string_view url, std::string_view registry_base_url);

// OK when a Bearer realm URL may be used for `registry_host_port`'s credentials:
// https always; plain http only when the registry itself is spoken to over plain HTTP and
// the realm's host is loopback or the registry's own host name. PermissionDenied naming the
// realm's host otherwise; Corrupt when the realm is not an absolute http(s) URL.
Status CheckTokenRealm(std::string_view realm_url, std::string_view registry_host_port,
                       bool registry_over_plain_http);

// `base` with docker's per-registry material from <certs_dir>/<host[:port]>/ added:
// *.crt are CAs, <name>.cert + <name>.key a client pair (used unless `base` names one).
// certs_dir "" = `base` unchanged.
TlsOptions WithCertsDir(TlsOptions base, const std::string& certs_dir,
                        const std::string& registry_host_port);

// What a host other than the registry gets from `registry_tls`: the explicitly given CAs
// (--ca-cert), no certs.d CAs, no client certificate.
TlsOptions OtherHostTls(const TlsOptions& explicit_tls);

}  // namespace imgfs::registry

#endif  // IMGFS_REGISTRY_ORIGIN_H_
