// imgfs tests — image contents several end-to-end tests build on, so that a change to the
// shared base happens once.
//
// Thread-safety: the functions only build values.
#ifndef IMGFS_TESTS_SUPPORT_TEST_IMAGES_H_
#define IMGFS_TESTS_SUPPORT_TEST_IMAGES_H_

#include <vector>

#include "tests/support/image_builder.h"

namespace imgfs::testing {

// The tree the commit and run/commit/push workflow tests change: a documentation tree under
// /usr/share/doc (deleted as a whole), /opt with an executable tool and a private (0750) data
// directory (renamed to /opt2). Directories come before their entries.
inline std::vector<TestFile> ChangeableBaseTree() {
  using K = TestFile::Kind;
  return {{"usr", "", K::kDir, 0755},
          {"usr/share", "", K::kDir, 0755},
          {"usr/share/doc", "", K::kDir, 0755},
          {"usr/share/doc/a.txt", "doc a\n"},
          {"usr/share/doc/sub", "", K::kDir, 0755},
          {"usr/share/doc/sub/b.txt", "doc b\n"},
          {"opt", "", K::kDir, 0755},
          {"opt/tool", "#!/bin/sh\necho tool\n", K::kFile, 0755},
          {"opt/data", "", K::kDir, 0750},
          {"opt/data/x", "x\n"}};
}

}  // namespace imgfs::testing

#endif  // IMGFS_TESTS_SUPPORT_TEST_IMAGES_H_
