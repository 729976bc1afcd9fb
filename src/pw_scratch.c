#include "pw_runtime.h"

#include <stdlib.h>

#if defined(_WIN32)
#include <malloc.h>
static void *aligned_new(size_t bytes) { return _aligned_malloc(bytes, 64); }
static void aligned_free(void *p) { _aligned_free(p); }
#else
static void *aligned_new(size_t bytes)
{
    void *p = NULL;
    return posix_memalign(&p, 64, bytes) == 0 ? p : NULL;
}
static void aligned_free(void *p) { free(p); }
#endif

#if defined(_WIN32)
/* No destructor hook: Windows threads keep their scratch until exit. */
static __declspec(thread) void *tls_buf;
static __declspec(thread) size_t tls_cap;

void *pw_scratch(size_t bytes)
{
    if (bytes <= tls_cap) return tls_buf;
    aligned_free(tls_buf);
    tls_buf = aligned_new(bytes);
    tls_cap = tls_buf ? bytes : 0;
    return tls_buf;
}
#else
#include <pthread.h>

/* A pthread key (not just __thread) so the buffer is freed when a thread
 * ends: Python threads come and go, each with its own OpenMP team. */
typedef struct { void *buf; size_t cap; } scratch_slot;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void slot_free(void *v)
{
    scratch_slot *s = (scratch_slot *)v;
    aligned_free(s->buf);
    free(s);
}

static void make_key(void) { pthread_key_create(&scratch_key, slot_free); }

void *pw_scratch(size_t bytes)
{
    pthread_once(&scratch_once, make_key);
    scratch_slot *s = (scratch_slot *)pthread_getspecific(scratch_key);
    if (!s) {
        s = (scratch_slot *)calloc(1, sizeof *s);
        if (!s || pthread_setspecific(scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (bytes <= s->cap) return s->buf;
    /* Grow by half again so a sequence of slightly larger layers does not
     * reallocate every call. */
    size_t want = bytes + bytes / 2;
    aligned_free(s->buf);
    s->buf = aligned_new(want);
    s->cap = s->buf ? want : 0;
    return s->buf;
}
#endif
