// imgfs tests — TokenServer (see token_server.h).
#include "tests/support/token_server.h"

#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>
#include <utility>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

namespace imgfs::testing {
namespace {

using json = nlohmann::json;

struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct X509Deleter {
  void operator()(X509* p) const { X509_free(p); }
};
struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};

std::string Base64Std(std::string_view data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(data.data()),
                          static_cast<int>(data.size()));
  out.resize(static_cast<size_t>(std::max(n, 0)));
  return out;
}

std::string Base64Url(std::string_view data) {
  std::string s = Base64Std(data);
  while (!s.empty() && s.back() == '=') s.pop_back();
  for (char& c : s) {
    if (c == '+') c = '-';
    if (c == '/') c = '_';
  }
  return s;
}

std::string Base64UrlDecode(std::string s) {
  for (char& c : s) {
    if (c == '-') c = '+';
    if (c == '_') c = '/';
  }
  while (s.size() % 4 != 0) s.push_back('=');
  std::string out(s.size() / 4 * 3 + 1, '\0');
  int n =
      EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                      reinterpret_cast<const unsigned char*>(s.data()), static_cast<int>(s.size()));
  if (n < 0) return "";
  size_t len = static_cast<size_t>(n);
  if (!s.empty() && s[s.size() - 1] == '=') --len;
  if (s.size() >= 2 && s[s.size() - 2] == '=') --len;
  out.resize(len);
  return out;
}

std::string PercentDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out.push_back(' ');
    } else if (s[i] == '%' && i + 2 < s.size() &&
               std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
               std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out.push_back(
          static_cast<char>(std::strtol(std::string(s.substr(i + 1, 2)).c_str(), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// name → values of an application/x-www-form-urlencoded string (query or body).
std::multimap<std::string, std::string> ParseForm(std::string_view text) {
  std::multimap<std::string, std::string> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find('&', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view pair = text.substr(pos, end - pos);
    if (!pair.empty()) {
      size_t eq = pair.find('=');
      std::string name = PercentDecode(pair.substr(0, eq));
      std::string value = eq == std::string_view::npos ? "" : PercentDecode(pair.substr(eq + 1));
      out.emplace(std::move(name), std::move(value));
    }
    pos = end + 1;
  }
  return out;
}

std::string First(const std::multimap<std::string, std::string>& form, const std::string& name) {
  auto it = form.find(name);
  return it == form.end() ? "" : it->second;
}

// "repository:NAME:a,b" → (type, name, actions). NAME may contain ':' (host:port/...).
bool ParseScope(const std::string& scope, std::string* type, std::string* name,
                std::vector<std::string>* actions) {
  size_t first = scope.find(':');
  size_t last = scope.rfind(':');
  if (first == std::string::npos || first == last) return false;
  *type = scope.substr(0, first);
  *name = scope.substr(first + 1, last - first - 1);
  actions->clear();
  std::string list = scope.substr(last + 1);
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t end = list.find(',', pos);
    if (end == std::string::npos) end = list.size();
    if (end > pos) actions->push_back(list.substr(pos, end - pos));
    pos = end + 1;
  }
  return true;
}

std::string Rfc3339(std::time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void Check(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string("TokenServer: ") + what + " failed");
}

// One RSA key per process (with a new reference per caller): generating a 2048-bit key
// costs up to a second on a loaded machine, and tests start many servers.
EVP_PKEY* SharedKey() {
  static EVP_PKEY* const key = EVP_RSA_gen(2048);
  if (key == nullptr || EVP_PKEY_up_ref(key) != 1) return nullptr;
  return key;
}

}  // namespace

struct TokenServer::Key {
  std::unique_ptr<EVP_PKEY, PkeyDeleter> pkey;
  std::unique_ptr<X509, X509Deleter> cert;
  std::string cert_der_b64;
};

TokenServer::TokenServer(TokenServerOptions options) : options_(std::move(options)) {
  key_ = std::make_unique<Key>();
  key_->pkey.reset(SharedKey());
  Check(key_->pkey != nullptr, "RSA key generation");
  key_->cert.reset(X509_new());
  X509* cert = key_->cert.get();
  Check(cert != nullptr, "X509_new");
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), 7 * 24 * 3600);
  X509_set_pubkey(cert, key_->pkey.get());
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("imgfs test token issuer"), -1,
                             -1, 0);
  X509_set_issuer_name(cert, name);
  Check(X509_sign(cert, key_->pkey.get(), EVP_sha256()) > 0, "X509_sign");
  unsigned char* der = nullptr;
  int der_len = i2d_X509(cert, &der);
  Check(der_len > 0, "i2d_X509");
  key_->cert_der_b64 = Base64Std(std::string_view(reinterpret_cast<char*>(der), der_len));
  OPENSSL_free(der);

  std::string tmpl = (std::filesystem::temp_directory_path() / "imgfs-token-XXXXXX").string();
  Check(mkdtemp(tmpl.data()) != nullptr, "mkdtemp");
  temp_dir_ = tmpl;
  cert_path_ = temp_dir_ + "/token-ca.pem";
  FILE* f = std::fopen(cert_path_.c_str(), "w");
  Check(f != nullptr, "creating the certificate file");
  int written = PEM_write_X509(f, cert);
  std::fclose(f);
  Check(written == 1, "PEM_write_X509");

  http_ = std::make_unique<HttpTestServer>(
      [this](const HttpTestRequest& req, HttpTestConnection& conn) { Handle(req, conn); });
}

TokenServer::~TokenServer() {
  http_.reset();
  std::error_code ec;
  std::filesystem::remove_all(temp_dir_, ec);
}

std::string TokenServer::realm() const { return http_->url() + "/token"; }

std::string TokenServer::RegistryAuthConfig() const {
  std::scoped_lock lock(mu_);
  return "auth:\n  token:\n    realm: " + realm() + "\n    service: " + options_.service +
         "\n    issuer: " + options_.issuer + "\n    rootcertbundle: " + cert_path_ + "\n";
}

void TokenServer::SetExpiresIn(int seconds) {
  std::scoped_lock lock(mu_);
  options_.expires_in_s = seconds;
}

void TokenServer::SetAnonymous(bool allowed, std::vector<std::string> actions) {
  std::scoped_lock lock(mu_);
  options_.anonymous_allowed = allowed;
  options_.anonymous_actions = std::move(actions);
}

std::string TokenServer::MintToken(const std::vector<std::string>& scopes) {
  std::vector<std::string> allowed;
  int expires_in_s = 0;
  std::string user;
  {
    std::scoped_lock lock(mu_);
    allowed = options_.user_actions;
    expires_in_s = options_.expires_in_s;
    user = options_.username;
  }
  return Sign(user, scopes, allowed, expires_in_s);
}

std::string TokenServer::Sign(const std::string& subject, const std::vector<std::string>& scopes,
                              const std::vector<std::string>& allowed, int expires_in_s) {
  std::time_t now = std::time(nullptr);
  json access = json::array();
  for (const std::string& scope : scopes) {
    std::string type, name;
    std::vector<std::string> actions;
    if (!ParseScope(scope, &type, &name, &actions)) continue;
    json granted = json::array();
    for (const std::string& a : actions) {
      bool ok = std::find(allowed.begin(), allowed.end(), a) != allowed.end() ||
                std::find(allowed.begin(), allowed.end(), "*") != allowed.end();
      if (ok) granted.push_back(a);
    }
    access.push_back({{"type", type}, {"name", name}, {"actions", granted}});
  }
  json header = {{"typ", "JWT"}, {"alg", "RS256"}, {"x5c", json::array({key_->cert_der_b64})}};
  json claims = {{"iss", options_.issuer},
                 {"sub", subject},
                 {"aud", options_.service},
                 {"exp", static_cast<int64_t>(now) + expires_in_s},
                 {"nbf", static_cast<int64_t>(now) - 1},
                 {"iat", static_cast<int64_t>(now)},
                 {"jti", "imgfs-test-" + std::to_string(next_jti_.fetch_add(1))},
                 {"access", access}};
  std::string signing_input = Base64Url(header.dump()) + "." + Base64Url(claims.dump());

  std::unique_ptr<EVP_MD_CTX, MdCtxDeleter> ctx(EVP_MD_CTX_new());
  Check(ctx != nullptr, "EVP_MD_CTX_new");
  std::scoped_lock lock(mu_);  // EVP_PKEY is not documented as safe for concurrent signing
  Check(EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key_->pkey.get()) == 1,
        "EVP_DigestSignInit");
  size_t sig_len = 0;
  const auto* in = reinterpret_cast<const unsigned char*>(signing_input.data());
  Check(EVP_DigestSign(ctx.get(), nullptr, &sig_len, in, signing_input.size()) == 1,
        "EVP_DigestSign (size)");
  std::string sig(sig_len, '\0');
  Check(EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &sig_len, in,
                       signing_input.size()) == 1,
        "EVP_DigestSign");
  sig.resize(sig_len);
  return signing_input + "." + Base64Url(sig);
}

json TokenServer::DecodeClaims(const std::string& jwt) {
  size_t a = jwt.find('.');
  size_t b = jwt.find('.', a == std::string::npos ? a : a + 1);
  if (a == std::string::npos || b == std::string::npos) return json();
  return json::parse(Base64UrlDecode(jwt.substr(a + 1, b - a - 1)), nullptr, false);
}

void TokenServer::Handle(const HttpTestRequest& req, HttpTestConnection& conn) {
  if (req.path != "/token") {
    conn.Respond(404, {{"Content-Type", "text/plain"}}, "not found\n");
    return;
  }
  token_requests_.fetch_add(1);
  TokenServerOptions opts;
  {
    std::scoped_lock lock(mu_);
    opts = options_;
  }
  auto unauthorized = [&](const std::string& why) {
    conn.Respond(401,
                 {{"Content-Type", "application/json"},
                  {"WWW-Authenticate", "Basic realm=\"imgfs-test-token-server\""}},
                 json({{"details", why}}).dump());
  };

  std::multimap<std::string, std::string> form;
  bool oauth = false;
  if (req.method == "GET") {
    form = ParseForm(req.query);
  } else if (req.method == "POST") {
    if (!opts.oauth_enabled) {
      conn.Respond(404, {{"Content-Type", "text/plain"}}, "404 page not found\n");
      return;
    }
    form = ParseForm(req.body);
    oauth = true;
  } else {
    conn.Respond(405, {{"Allow", "GET, POST"}}, "");
    return;
  }
  if (First(form, "service") != opts.service) {
    conn.Respond(400, {{"Content-Type", "application/json"}},
                 json({{"details", "unknown service"}}).dump());
    return;
  }
  std::vector<std::string> scopes;
  for (auto [it, end] = form.equal_range("scope"); it != end; ++it) {
    // OAuth2 joins scopes with spaces; the GET form repeats the parameter.
    std::string_view v = it->second;
    size_t pos = 0;
    while (pos <= v.size()) {
      size_t sp = v.find(' ', pos);
      if (sp == std::string_view::npos) sp = v.size();
      if (sp > pos) scopes.emplace_back(v.substr(pos, sp - pos));
      pos = sp + 1;
    }
  }

  std::string subject;
  std::vector<std::string> allowed;
  if (oauth) {
    std::string grant = First(form, "grant_type");
    bool ok = false;
    if (grant == "refresh_token") {
      ok = !opts.identity_token.empty() && First(form, "refresh_token") == opts.identity_token;
    } else if (grant == "password") {
      ok = First(form, "username") == opts.username && First(form, "password") == opts.password;
    }
    if (!ok) return unauthorized("invalid grant");
    subject = opts.username;
    allowed = opts.user_actions;
  } else if (req.HasHeader("authorization")) {
    std::string value = req.Header("authorization");
    std::string expected = "Basic " + Base64Std(opts.username + ":" + opts.password);
    if (value != expected) return unauthorized("incorrect username or password");
    subject = opts.username;
    allowed = opts.user_actions;
  } else {
    if (!opts.anonymous_allowed) return unauthorized("authentication required");
    allowed = opts.anonymous_actions;
  }

  std::string token = Sign(subject, scopes, allowed, opts.expires_in_s);
  json body = {{"expires_in", opts.expires_in_s}, {"issued_at", Rfc3339(std::time(nullptr))}};
  if (oauth) {
    body["access_token"] = token;
    body["scope"] = First(form, "scope");
  } else {
    body["token"] = token;
    body["access_token"] = token;
  }
  conn.Respond(200, {{"Content-Type", "application/json"}}, body.dump());
}

}  // namespace imgfs::testing
