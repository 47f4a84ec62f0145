// imgfs — test helper: describe a directory tree file by file and compare two trees.
//
// ListTree walks a tree without following symlinks and records, per path: type, mode
// (07777), uid, gid, size, content (sha256 of regular files, symlink target, major:minor of
// devices), mtime with nanoseconds, nlink, hardlink group (the sorted names sharing an inode)
// and xattrs. The text form of an entry is the tab-separated line format of
// tests/fixtures/list-tree.py, so a listing can be diffed against tiny.expected.txt.
//
// CompareTrees reports every difference in a readable list (empty = equal). It is the oracle
// helper of the mount tests: the mounted tree against `umoci unpack` of the same image.
#ifndef IMGFS_TESTS_SUPPORT_TREE_COMPARE_H_
#define IMGFS_TESTS_SUPPORT_TREE_COMPARE_H_

#include <climits>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace imgfs::testing {

struct TreeEntry {
  char type = '?';  // d f l c b p s
  uint32_t mode = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::string size;     // "-" unless f or l
  std::string content;  // sha256 / target / major:minor / "-"
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
  std::string nlink;       // f only
  std::string link_group;  // f: other names of the same inode, sorted, ","-joined; "" if none
  std::string xattrs;      // name=0xHEX,... sorted; "-" when none

  // The list-tree.py line (without the path column's leading part handled by the caller).
  std::string Line(const std::string& path) const;
};

struct TreeOptions {
  bool compare_root_mtime = true;
  bool compare_xattrs = true;
  // Paths (as "/a/b") left out of the listing entirely, e.g. the eStargz metadata files.
  std::set<std::string> ignore_paths;
  // xattr names left out (e.g. "security.selinux" that a host may add).
  std::set<std::string> ignore_xattrs;
};

// Lists `root` ("/" is the root itself). Returns an empty map and sets *error on failure.
std::map<std::string, TreeEntry> ListTree(const std::string& root, const TreeOptions& options,
                                          std::string* error);

// Every difference between `actual` and `expected`, one line each; empty when equal.
std::vector<std::string> CompareTrees(const std::map<std::string, TreeEntry>& actual,
                                      const std::map<std::string, TreeEntry>& expected,
                                      const TreeOptions& options);

// Parses a list-tree.py listing (such as fixtures/tiny.expected.txt). Hardlink groups are
// derived from equal content + nlink > 1 is NOT assumed: link_group stays "" (the file format
// has no inode column); compare with options that tolerate it (see CompareWithListing).
std::map<std::string, TreeEntry> ParseListing(const std::string& text);

// Compares a live tree with a listing: like CompareTrees but ignoring link_group.
std::vector<std::string> CompareWithListing(const std::map<std::string, TreeEntry>& actual,
                                            const std::map<std::string, TreeEntry>& listing,
                                            const TreeOptions& options);

}  // namespace imgfs::testing

#endif  // IMGFS_TESTS_SUPPORT_TREE_COMPARE_H_
