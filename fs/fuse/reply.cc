// imgfs — reply helpers shared by both FUSE operations tables.
#include "fs/fuse/reply.h"

#include <cerrno>
#include <cstring>

#include "base/log.h"

namespace imgfs::fs {

void ReplyErrno(fuse_req_t req, const char* op, uint64_t ino, int err) {
  if (err == EIO) IMGFS_LOG(kError) << op << " ino " << ino << ": EIO";
  fuse_reply_err(req, err);
}

void ReplyStatus(fuse_req_t req, const char* op, uint64_t ino, const Status& status) {
  int err = StatusToErrno(status);
  if (err == EIO) {
    IMGFS_LOG(kError) << op << " ino " << ino << ": EIO: " << status.ToString();
  } else {
    IMGFS_LOG(kDebug) << op << " ino " << ino << ": " << strerror(err) << ": " << status.ToString();
  }
  fuse_reply_err(req, err);
}

void ReplyNegativeEntry(fuse_req_t req) {
  fuse_entry_param e{};
  e.ino = 0;
  e.entry_timeout = kImmutableTimeoutSeconds;
  fuse_reply_entry(req, &e);
}

fuse_entry_param EntryParam(uint64_t id, const struct stat& attr, double attr_timeout_s) {
  fuse_entry_param e{};
  e.ino = id;
  e.generation = 1;
  e.attr = attr;
  e.attr_timeout = attr_timeout_s;
  e.entry_timeout = kImmutableTimeoutSeconds;
  return e;
}

int ReplyEntry(fuse_req_t req, uint64_t id, const struct stat& attr, double attr_timeout_s) {
  const fuse_entry_param e = EntryParam(id, attr, attr_timeout_s);
  return fuse_reply_entry(req, &e);
}

void ReplyXattr(fuse_req_t req, std::string_view value, size_t size) {
  if (size == 0) {
    fuse_reply_xattr(req, value.size());
  } else if (size < value.size()) {
    fuse_reply_err(req, ERANGE);
  } else {
    fuse_reply_buf(req, value.data(), value.size());
  }
}

}  // namespace imgfs::fs
