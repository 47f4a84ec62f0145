// imgfs — UniqueFd: the one owner of a file descriptor.
//
// Move-only; closes the descriptor in its destructor. Thread-compatible (like an int).
#ifndef IMGFS_BASE_UNIQUE_FD_H_
#define IMGFS_BASE_UNIQUE_FD_H_

#include <unistd.h>

#include <utility>

namespace imgfs {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
      Close();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  ~UniqueFd() { Close(); }

  bool IsValid() const { return fd_ >= 0; }
  int get() const { return fd_; }
  // Gives up ownership without closing.
  int Release() { return std::exchange(fd_, -1); }
  // Closes now; returns close(2)'s result (0 when there was nothing to close).
  int Close() {
    if (fd_ < 0) return 0;
    return ::close(std::exchange(fd_, -1));
  }

 private:
  int fd_ = -1;
};

}  // namespace imgfs

#endif  // IMGFS_BASE_UNIQUE_FD_H_
