// imgfs — the one temporary directory of the tests: made fresh under $TMPDIR (or /tmp),
// removed with its contents (without following links) in the destructor.
//
// Thread-safety: an instance is used by one test; distinct instances are independent.
#ifndef IMGFS_TESTS_SUPPORT_TEMP_DIR_H_
#define IMGFS_TESTS_SUPPORT_TEMP_DIR_H_

#include <string>
#include <string_view>

namespace imgfs::testing {

class TempDir {
 public:
  TempDir();  // path() is empty when the directory could not be made
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Sub(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

}  // namespace imgfs::testing

#endif  // IMGFS_TESTS_SUPPORT_TEMP_DIR_H_
