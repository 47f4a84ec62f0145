// imgfs — content digests and streaming SHA-256 (see digest.h).
#include "registry/digest.h"

#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include <openssl/evp.h>

#include "base/log.h"
#include "base/strings.h"

namespace imgfs::registry {
namespace {

struct EvpMdCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
using EvpMdCtxPtr = std::unique_ptr<EVP_MD_CTX, EvpMdCtxDeleter>;

constexpr std::string_view kHexDigits = "0123456789abcdef";
// The OCI grammar's minimum for encoded digests of algorithms we do not know.
constexpr size_t kMinEncodedLength = 32;

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool IsLowerHex(char c) { return (c >= 'a' && c <= 'f') || (c >= '0' && c <= '9'); }

// algorithm ::= component (separator component)*; component [a-z0-9]+; separator [+._-].
bool ValidAlgorithm(std::string_view alg) {
  if (alg.empty()) return false;
  bool prev_sep = true;  // the first character must start a component
  for (char c : alg) {
    if (IsLowerAlnum(c)) {
      prev_sep = false;
    } else if (c == '+' || c == '.' || c == '_' || c == '-') {
      if (prev_sep) return false;
      prev_sep = true;
    } else {
      return false;
    }
  }
  return !prev_sep;
}

// Hex length required for the algorithms whose encoding is fixed; 0 for others.
size_t FixedHexLength(std::string_view alg) {
  if (alg == "sha256") return 64;
  if (alg == "sha384") return 96;
  if (alg == "sha512") return 128;
  return 0;
}

Digest MakeSha256(const unsigned char* bytes) {
  std::string hex;
  hex.reserve(64);
  for (int i = 0; i < 32; ++i) {
    hex.push_back(kHexDigits[bytes[i] >> 4]);
    hex.push_back(kHexDigits[bytes[i] & 0xf]);
  }
  // Valid by construction.
  Result<Digest> d = Digest::Parse("sha256:" + hex);
  return *d;
}

void Check(int openssl_ok, const char* what) {
  if (openssl_ok != 1) {
    IMGFS_LOG(kError) << "OpenSSL " << what << " failed";
    std::abort();
  }
}

}  // namespace

Result<Digest> Digest::Parse(std::string_view text) {
  size_t colon = text.find(':');
  if (colon == std::string_view::npos) {
    return Status::InvalidArgument("invalid digest " + QuoteForMessage(text) +
                                   ": expected \"alg:hex\"");
  }
  std::string_view alg = text.substr(0, colon);
  std::string_view hex = text.substr(colon + 1);
  if (!ValidAlgorithm(alg)) {
    return Status::InvalidArgument("invalid digest " + QuoteForMessage(text) +
                                   ": bad algorithm name");
  }
  size_t fixed = FixedHexLength(alg);
  if (fixed != 0) {
    if (hex.size() != fixed) {
      return Status::InvalidArgument("invalid digest " + QuoteForMessage(text) + ": " +
                                     std::string(alg) + " needs " + std::to_string(fixed) +
                                     " hex digits, got " + std::to_string(hex.size()));
    }
    for (char c : hex) {
      if (!IsLowerHex(c)) {
        return Status::InvalidArgument("invalid digest " + QuoteForMessage(text) +
                                       ": hex digits must be lower-case [0-9a-f]");
      }
    }
  } else {
    if (hex.size() < kMinEncodedLength) {
      return Status::InvalidArgument("invalid digest " + QuoteForMessage(text) +
                                     ": encoded part too short");
    }
    for (char c : hex) {
      bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '=' || c == '_' || c == '-';
      if (!ok) {
        return Status::InvalidArgument("invalid digest " + QuoteForMessage(text) +
                                       ": invalid character in encoded part");
      }
    }
  }
  Digest d;
  d.algorithm_ = std::string(alg);
  d.hex_ = std::string(hex);
  return d;
}

Digest Digest::Sha256Of(std::string_view data) {
  Sha256 h;
  h.Update(data);
  return h.Finish();
}

Digest Digest::FromSha256Bytes(const unsigned char bytes[32]) { return MakeSha256(bytes); }

Status Digest::Verify(std::string_view data) const {
  if (empty()) return Status::InvalidArgument("cannot verify against an empty digest");
  if (algorithm_ != "sha256") {
    return Status::Unsupported("digest algorithm " + algorithm_ + " is not supported (" + String() +
                               "); only sha256 is verified");
  }
  Digest actual = Sha256Of(data);
  if (actual != *this) {
    return Status::Corrupt("digest mismatch: expected " + String() + ", got " + actual.String());
  }
  return Status();
}

struct Sha256::Impl {
  EvpMdCtxPtr ctx;
};

Sha256::Sha256() : impl_(std::make_unique<Impl>()) { Reset(); }
Sha256::~Sha256() = default;
Sha256::Sha256(Sha256&&) noexcept = default;
Sha256& Sha256::operator=(Sha256&&) noexcept = default;

void Sha256::Update(std::string_view data) {
  Check(EVP_DigestUpdate(impl_->ctx.get(), data.data(), data.size()), "EVP_DigestUpdate");
}

Digest Sha256::Finish() {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  Check(EVP_DigestFinal_ex(impl_->ctx.get(), out, &len), "EVP_DigestFinal_ex");
  if (len != 32) {
    IMGFS_LOG(kError) << "sha256 produced " << len << " bytes";
    std::abort();
  }
  return MakeSha256(out);
}

void Sha256::Reset() {
  if (!impl_) impl_ = std::make_unique<Impl>();
  if (!impl_->ctx) {
    impl_->ctx.reset(EVP_MD_CTX_new());
    if (!impl_->ctx) {
      IMGFS_LOG(kError) << "EVP_MD_CTX_new failed";
      std::abort();
    }
  }
  Check(EVP_DigestInit_ex(impl_->ctx.get(), EVP_sha256(), nullptr), "EVP_DigestInit_ex");
}

}  // namespace imgfs::registry
