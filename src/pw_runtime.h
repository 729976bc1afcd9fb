/* Process-wide runtime pieces: which kernels run, what the machine's caches
 * hold, and per-thread scratch. */
#ifndef PW_RUNTIME_H
#define PW_RUNTIME_H

#include <stddef.h>
#include "pw_kernels.h"

/* The table entry with this name, or NULL when this build or this CPU
 * cannot run it. */
const pw_isa *pw_isa_by_name(const char *name);
/* The fastest entry this CPU can run. */
const pw_isa *pw_isa_best(void);
/* Space-separated names of every entry this CPU can run, best last. */
const char *pw_isa_available(void);

/* Bytes of the last-level cache as sysconf reports it, 0 when unknown
 * (the Python side prefers Linux sysfs: see llc_bytes in _core.pyx). */
size_t pw_llc_bytes(void);
/* Orders non-temporal stores (pw_gemm_params.stream) before later stores,
 * so another thread that sees those sees C; nothing where they do not
 * exist. */
void pw_store_fence(void);

/* A 64-byte aligned buffer of at least `bytes`, owned by the calling thread
 * and reused across calls (OpenMP worker threads persist, so steady-state
 * calls allocate nothing).  NULL when memory runs out.  The previous contents
 * are not kept when it grows. */
void *pw_scratch(size_t bytes);

#endif
