// imgfs — clang thread-safety annotations (no-ops elsewhere). Use them with base/mutex.h;
// std::mutex carries no capability attribute in libstdc++, so annotations naming one are
// not checked.
#ifndef IMGFS_BASE_THREAD_ANNOTATIONS_H_
#define IMGFS_BASE_THREAD_ANNOTATIONS_H_

#if defined(__clang__)
#define IMGFS_THREAD_ANNOTATION_(x) __attribute__((x))
#else
#define IMGFS_THREAD_ANNOTATION_(x)
#endif

#define IMGFS_CAPABILITY(x) IMGFS_THREAD_ANNOTATION_(capability(x))
#define IMGFS_SCOPED_CAPABILITY IMGFS_THREAD_ANNOTATION_(scoped_lockable)
#define IMGFS_GUARDED_BY(x) IMGFS_THREAD_ANNOTATION_(guarded_by(x))
#define IMGFS_PT_GUARDED_BY(x) IMGFS_THREAD_ANNOTATION_(pt_guarded_by(x))
#define IMGFS_ACQUIRE(...) IMGFS_THREAD_ANNOTATION_(acquire_capability(__VA_ARGS__))
#define IMGFS_RELEASE(...) IMGFS_THREAD_ANNOTATION_(release_capability(__VA_ARGS__))
#define IMGFS_REQUIRES(...) IMGFS_THREAD_ANNOTATION_(requires_capability(__VA_ARGS__))
#define IMGFS_EXCLUDES(...) IMGFS_THREAD_ANNOTATION_(locks_excluded(__VA_ARGS__))
#define IMGFS_ASSERT_CAPABILITY(x) IMGFS_THREAD_ANNOTATION_(assert_capability(x))
#define IMGFS_NO_THREAD_SAFETY_ANALYSIS IMGFS_THREAD_ANNOTATION_(no_thread_safety_analysis)

#endif  // IMGFS_BASE_THREAD_ANNOTATIONS_H_
