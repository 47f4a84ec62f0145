// imgfs — random names (temporary files, lease, container and layer ids).
//
// Thread-safety: safe from any thread.
#ifndef IMGFS_BASE_RANDOM_H_
#define IMGFS_BASE_RANDOM_H_

#include <cstddef>
#include <string>

namespace imgfs {

// 2 * `bytes` lowercase hex digits from getrandom(2): unlike a PRNG seeded once, they differ
// in processes forked from one parent. Should getrandom fail (it does not on Linux >= 3.17),
// the bytes come from the time and the pid instead: still distinct, never an error.
std::string RandomHex(size_t bytes);

}  // namespace imgfs

#endif  // IMGFS_BASE_RANDOM_H_
