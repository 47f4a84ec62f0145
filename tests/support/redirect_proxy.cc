// imgfs tests — RedirectProxy implementation.
#include "tests/support/redirect_proxy.h"

#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

namespace imgfs::testing {
namespace {

constexpr std::string_view kSignedPrefix = "/signed/";

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A blob download: GET /v2/<name>/blobs/<digest> (not an upload session).
bool IsBlobGet(const HttpTestRequest& req) {
  return req.method == "GET" && req.path.starts_with("/v2/") &&
         req.path.find("/blobs/") != std::string::npos &&
         req.path.find("/blobs/uploads") == std::string::npos;
}

// The value of `key` in a query string "a=1&b=2" ("" when absent).
std::string QueryValue(std::string_view query, std::string_view key) {
  while (!query.empty()) {
    const size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    if (pair.size() > key.size() && pair.starts_with(key) && pair[key.size()] == '=') {
      return std::string(pair.substr(key.size() + 1));
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return "";
}

// RFC 4648 base64 with padding (for a Basic credential).
std::string Base64(std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const uint32_t v = (static_cast<uint8_t>(in[i]) << 16) |
                       (static_cast<uint8_t>(in[i + 1]) << 8) | static_cast<uint8_t>(in[i + 2]);
    for (int shift : {18, 12, 6, 0}) out.push_back(kAlphabet[(v >> shift) & 63]);
  }
  if (i < in.size()) {
    uint32_t v = static_cast<uint8_t>(in[i]) << 16;
    if (i + 1 < in.size()) v |= static_cast<uint8_t>(in[i + 1]) << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(i + 1 < in.size() ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

// S3's answer to an expired presigned URL.
constexpr std::string_view kExpiredBody =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>"
    "<Message>Request has expired</Message></Error>";
// S3's answer to a presigned URL that also carries an Authorization header.
constexpr std::string_view kTwoAuthBody =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InvalidArgument</Code>"
    "<Message>Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
    "Signature query string parameter or the Authorization header should be specified"
    "</Message></Error>";

}  // namespace

RedirectProxy::RedirectProxy(std::string upstream_url, std::chrono::milliseconds expiry,
                             const std::string& registry_credentials)
    : expiry_ms_(expiry.count()),
      storage_authorization_(
          registry_credentials.empty() ? std::string() : "Basic " + Base64(registry_credentials)),
      relay_stats_(std::make_shared<ProxyStats>()),
      relay_(ProxyHandler(std::move(upstream_url), relay_stats_)) {
  storage_ = std::make_unique<HttpTestServer>(
      [this](const HttpTestRequest& req, HttpTestConnection& conn) { HandleStorage(req, conn); });
  front_ = std::make_unique<HttpTestServer>(
      [this](const HttpTestRequest& req, HttpTestConnection& conn) { HandleFront(req, conn); });
}

RedirectProxy::~RedirectProxy() {
  front_.reset();
  storage_.reset();
}

std::string RedirectProxy::host_port() const { return front_->host_port(); }

std::string RedirectProxy::storage_host_port() const { return storage_->host_port(); }

void RedirectProxy::HandleFront(const HttpTestRequest& req, HttpTestConnection& conn) {
  if (!IsBlobGet(req) || (!storage_authorization_.empty() && !req.HasHeader("authorization"))) {
    relay_(req, conn);
    return;
  }
  ++redirects_issued_;
  const std::string location = storage_->url() + std::string(kSignedPrefix) +
                               req.path.substr(4) +  // after "/v2/"
                               "?expires=" + std::to_string(NowMs() + expiry_ms_.load()) +
                               "&sig=" + std::to_string(next_signature_++);
  conn.Respond(307, {{"Location", location}, {"Content-Type", "text/html"}},
               "<a href=\"" + location + "\">Temporary Redirect</a>.\n");
}

void RedirectProxy::HandleStorage(const HttpTestRequest& req, HttpTestConnection& conn) {
  const HeaderList xml = {{"Content-Type", "application/xml"}};
  if (req.HasHeader("authorization")) {
    ++auth_refusals_;
    conn.Respond(400, xml, kTwoAuthBody);
    return;
  }
  const std::string expires = QueryValue(req.query, "expires");
  int64_t expires_ms = 0;
  auto [end, ec] = std::from_chars(expires.data(), expires.data() + expires.size(), expires_ms);
  if ((req.method != "GET" && req.method != "HEAD") || !req.path.starts_with(kSignedPrefix) ||
      expires.empty() || ec != std::errc() || end != expires.data() + expires.size()) {
    conn.Respond(400, xml, "<Error><Code>InvalidRequest</Code></Error>");
    return;
  }
  if (NowMs() > expires_ms) {
    ++expired_refusals_;
    conn.Respond(403, xml, kExpiredBody);
    return;
  }
  ++signed_gets_;
  HttpTestRequest upstream = req;
  upstream.path = "/v2/" + req.path.substr(kSignedPrefix.size());
  upstream.target = upstream.path;
  upstream.query.clear();
  if (!storage_authorization_.empty()) upstream.headers["authorization"] = storage_authorization_;
  relay_(upstream, conn);
}

}  // namespace imgfs::testing
