// imgfs — content digests and streaming SHA-256 (see digest.h).
#include "registry/digest.h"

#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
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

// The value of each byte as a lower-case hex digit, 0xff for any other byte.
constexpr std::array<uint8_t, 256> MakeHexValues() {
  std::array<uint8_t, 256> t{};
  for (size_t c = 0; c < t.size(); ++c) t[c] = 0xff;
  for (int c = '0'; c <= '9'; ++c) t[static_cast<size_t>(c)] = static_cast<uint8_t>(c - '0');
  for (int c = 'a'; c <= 'f'; ++c) t[static_cast<size_t>(c)] = static_cast<uint8_t>(c - 'a' + 10);
  return t;
}
constexpr std::array<uint8_t, 256> kHexValues = MakeHexValues();

void Check(int openssl_ok, const char* what) {
  if (openssl_ok != 1) {
    IMGFS_LOG(kError) << "OpenSSL " << what << " failed";
    std::abort();
  }
}

Status NotLowerHex(std::string_view text) {
  return Status::InvalidArgument("invalid digest " + QuoteForMessage(text) +
                                 ": hex digits must be lower-case [0-9a-f]");
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
    Digest d;
    if (alg == "sha256") {
      // Checked and decoded in one pass: TOCs parse one digest per chunk.
      d.kind_ = Kind::kSha256;
      for (size_t i = 0; i < 32; ++i) {
        const unsigned hi = kHexValues[static_cast<unsigned char>(hex[2 * i])];
        const unsigned lo = kHexValues[static_cast<unsigned char>(hex[2 * i + 1])];
        if ((hi | lo) > 0xf) return NotLowerHex(text);
        d.sha256_[i] = static_cast<unsigned char>(hi << 4 | lo);
      }
      return d;
    }
    for (char c : hex) {
      if (kHexValues[static_cast<unsigned char>(c)] > 0xf) return NotLowerHex(text);
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
  d.kind_ = Kind::kOther;
  d.other_ = std::make_shared<const Other>(Other{std::string(alg), std::string(hex)});
  return d;
}

const std::string& Digest::algorithm() const {
  static const std::string* const kNone = new std::string();
  static const std::string* const kSha256 = new std::string("sha256");
  switch (kind_) {
    case Kind::kEmpty:
      return *kNone;
    case Kind::kSha256:
      return *kSha256;
    case Kind::kOther:
      return other_->algorithm;
  }
  return *kNone;
}

std::string Digest::hex() const {
  switch (kind_) {
    case Kind::kEmpty:
      return std::string();
    case Kind::kSha256: {
      std::string out(64, '\0');
      for (size_t i = 0; i < 32; ++i) {
        out[2 * i] = kHexDigits[sha256_[i] >> 4];
        out[2 * i + 1] = kHexDigits[sha256_[i] & 0xf];
      }
      return out;
    }
    case Kind::kOther:
      return other_->encoded;
  }
  return std::string();
}

bool Digest::operator==(const Digest& other) const {
  if (kind_ != other.kind_) return false;
  switch (kind_) {
    case Kind::kEmpty:
      return true;
    case Kind::kSha256:
      return sha256_ == other.sha256_;
    case Kind::kOther:
      return other_->algorithm == other.other_->algorithm &&
             other_->encoded == other.other_->encoded;
  }
  return false;
}

std::strong_ordering Digest::operator<=>(const Digest& other) const {
  if (kind_ == Kind::kSha256 && other.kind_ == Kind::kSha256) {
    // Lower-case hex sorts as the bytes it encodes.
    int c = std::memcmp(sha256_.data(), other.sha256_.data(), sha256_.size());
    return c <=> 0;
  }
  if (auto c = algorithm() <=> other.algorithm(); c != 0) return c;
  return hex() <=> other.hex();
}

size_t Digest::Hash() const {
  switch (kind_) {
    case Kind::kEmpty:
      return 0;
    case Kind::kSha256: {
      size_t h;  // the bytes of a sha256 are as good a hash as any
      std::memcpy(&h, sha256_.data(), sizeof(h));
      return h;
    }
    case Kind::kOther:
      return std::hash<std::string>()(other_->encoded);
  }
  return 0;
}

Digest Digest::Sha256Of(std::string_view data) {
  Sha256 h;
  h.Update(data);
  return h.Finish();
}

Digest Digest::FromSha256Bytes(const unsigned char bytes[32]) {
  Digest d;
  d.kind_ = Kind::kSha256;
  std::memcpy(d.sha256_.data(), bytes, d.sha256_.size());
  return d;
}

Status Digest::Verify(std::string_view data) const {
  if (empty()) return Status::InvalidArgument("cannot verify against an empty digest");
  if (kind_ != Kind::kSha256) {
    return Status::Unsupported("digest algorithm " + algorithm() + " is not supported (" +
                               String() + "); only sha256 is verified");
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
  return Digest::FromSha256Bytes(out);
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
