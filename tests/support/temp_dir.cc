// imgfs — see temp_dir.h.
#include "tests/support/temp_dir.h"

#include <stdlib.h>

#include <cstdlib>

#include "base/file_util.h"

namespace imgfs::testing {

TempDir::TempDir() {
  // NOLINTNEXTLINE(concurrency-mt-unsafe): tests read TMPDIR once per directory
  const char* base = std::getenv("TMPDIR");
  std::string tmpl =
      std::string(base != nullptr && base[0] != '\0' ? base : "/tmp") + "/imgfs-test-XXXXXX";
  if (mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
}

TempDir::~TempDir() {
  if (!path_.empty()) (void)RemoveTree(path_);
}

}  // namespace imgfs::testing
