// imgfs — content digests ("sha256:<64 hex>") and streaming SHA-256 (OpenSSL EVP).
//
// Digest is a value type: algorithm + lower-case hex. Only sha256 is computed; sha512
// digests parse (the OCI grammar allows them) but Verify reports them as Unsupported.
// A sha256 digest is held as its 32 raw bytes, without heap memory (a mounted image keeps one
// per file chunk: ~75 000 for a large image); other algorithms keep their text.
// Thread-safety: Digest is a value; a Sha256 hasher belongs to one thread at a time.
#ifndef IMGFS_REGISTRY_DIGEST_H_
#define IMGFS_REGISTRY_DIGEST_H_

#include <array>
#include <compare>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "base/status.h"

namespace imgfs::registry {

class Digest {
 public:
  Digest() = default;

  // Parses "alg:hex". sha256 needs exactly 64 lower-case hex digits, sha512 128; other
  // algorithms follow the OCI grammar ([a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}).
  static Result<Digest> Parse(std::string_view text);
  // sha256 of `data`.
  static Digest Sha256Of(std::string_view data);
  // From 32 raw sha256 bytes.
  static Digest FromSha256Bytes(const unsigned char bytes[32]);

  bool empty() const { return kind_ == Kind::kEmpty; }
  // "" when empty.
  const std::string& algorithm() const;
  // The encoded part: lower-case hex for sha256 ("" when empty). A new string each call.
  std::string hex() const;
  std::string String() const { return empty() ? std::string() : algorithm() + ":" + hex(); }
  // First 12 hex digits, as `docker images` shows image IDs.
  std::string Short() const { return hex().substr(0, 12); }

  // A sha256 digest's 32 raw bytes; nullptr for other algorithms and the empty digest.
  const unsigned char* sha256_bytes() const {
    return kind_ == Kind::kSha256 ? sha256_.data() : nullptr;
  }

  // OK if sha256(data) equals this digest; Corrupt otherwise (message names both digests).
  Status Verify(std::string_view data) const;

  // Equality and order of the text: algorithm, then encoded part (bytewise).
  bool operator==(const Digest& other) const;
  std::strong_ordering operator<=>(const Digest& other) const;

  // For std::hash: equal digests hash equally.
  size_t Hash() const;

 private:
  enum class Kind : uint8_t { kEmpty, kSha256, kOther };
  struct Other {
    std::string algorithm;
    std::string encoded;
  };

  std::array<unsigned char, 32> sha256_{};  // kSha256
  std::shared_ptr<const Other> other_;      // kOther (immutable, so copies share it)
  Kind kind_ = Kind::kEmpty;
};

// Streaming SHA-256.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;

  void Update(std::string_view data);
  // Finishes the hash. The hasher must not be used afterwards (except Reset).
  Digest Finish();
  void Reset();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace imgfs::registry

template <>
struct std::hash<imgfs::registry::Digest> {
  size_t operator()(const imgfs::registry::Digest& d) const noexcept { return d.Hash(); }
};

#endif  // IMGFS_REGISTRY_DIGEST_H_
