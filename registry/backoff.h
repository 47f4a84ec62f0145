// imgfs — the retry delay shared by pull (RemoteSource) and push (Pusher).
//
// Exponential backoff: base·2^(retry-1), at most `max`. A 429 or 503 answer carrying
// `Retry-After: N` (seconds; the HTTP-date form is ignored) replaces the exponential delay,
// still capped by `max` so a registry cannot park a pull for hours.
//
// Thread-safety: a pure function.
#ifndef IMGFS_REGISTRY_BACKOFF_H_
#define IMGFS_REGISTRY_BACKOFF_H_

#include <chrono>

#include "registry/http_client.h"

namespace imgfs::registry {

// The wait before retry number `retry` (1 = the first retry). `response` is the answer that
// failed (nullptr after a transport error).
std::chrono::milliseconds RetryDelay(int retry, std::chrono::milliseconds base,
                                     std::chrono::milliseconds max, const HttpResponse* response);

}  // namespace imgfs::registry

#endif  // IMGFS_REGISTRY_BACKOFF_H_
