// Must not compile: fs/layer/ may not see the mount code above it (fs/CMakeLists.txt test
// unit.layering_refused compiles this with imgfs_layer's include directories).
#include "fs/mount/mount.h"
