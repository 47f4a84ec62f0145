// imgfs — clang thread-safety annotations (no-ops elsewhere).
#ifndef IMGFS_BASE_THREAD_ANNOTATIONS_H_
#define IMGFS_BASE_THREAD_ANNOTATIONS_H_

#if defined(__clang__)
#define IMGFS_THREAD_ANNOTATION_(x) __attribute__((x))
#else
#define IMGFS_THREAD_ANNOTATION_(x)
#endif

#define IMGFS_GUARDED_BY(x) IMGFS_THREAD_ANNOTATION_(guarded_by(x))
#define IMGFS_PT_GUARDED_BY(x) IMGFS_THREAD_ANNOTATION_(pt_guarded_by(x))
#define IMGFS_REQUIRES(...) IMGFS_THREAD_ANNOTATION_(requires_capability(__VA_ARGS__))
#define IMGFS_EXCLUDES(...) IMGFS_THREAD_ANNOTATION_(locks_excluded(__VA_ARGS__))

#endif  // IMGFS_BASE_THREAD_ANNOTATIONS_H_
