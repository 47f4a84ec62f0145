// imgfs — content digests ("sha256:<64 hex>") and streaming SHA-256 (OpenSSL EVP).
//
// Digest is a value type: algorithm + lower-case hex. Only sha256 is computed; sha512
// digests parse (the OCI grammar allows them) but Verify reports them as Unsupported.
// Thread-safety: Digest is a value; a Sha256 hasher belongs to one thread at a time.
#ifndef IMGFS_REGISTRY_DIGEST_H_
#define IMGFS_REGISTRY_DIGEST_H_

#include <cstdint>
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

  bool empty() const { return hex_.empty(); }
  const std::string& algorithm() const { return algorithm_; }
  const std::string& hex() const { return hex_; }
  std::string String() const { return empty() ? std::string() : algorithm_ + ":" + hex_; }
  // First 12 hex digits, as `docker images` shows image IDs.
  std::string Short() const { return hex_.substr(0, 12); }

  // OK if sha256(data) equals this digest; Corrupt otherwise (message names both digests).
  Status Verify(std::string_view data) const;

  bool operator==(const Digest&) const = default;
  auto operator<=>(const Digest&) const = default;

 private:
  std::string algorithm_;
  std::string hex_;
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
  size_t operator()(const imgfs::registry::Digest& d) const noexcept {
    return std::hash<std::string>()(d.hex());
  }
};

#endif  // IMGFS_REGISTRY_DIGEST_H_
