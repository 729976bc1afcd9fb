/* What runs a call's work items on several threads: OpenMP's parallel-for
 * (the default where the build has OpenMP), or pwconv's own pool
 * (PWCONV_THREADS=pool, and builds without OpenMP), which returns as soon
 * as every item is done.
 *
 * Why the pool: libgomp's end-of-region barrier waits for every worker of
 * the team, including one that has not yet run because another process
 * holds its core.  On a 2-vCPU host with one vCPU kept busy, stalls of
 * milliseconds put the mean 2-thread call at about six times its median
 * (benchmarks/threads.py).  In the pool the caller takes items too, so a
 * worker that never starts costs nothing: the caller finishes its items
 * and returns.
 *
 * Why not the pool by default: beside PyTorch in one process it loses (see
 * use_pool in pw_pool.c). */
#ifndef PW_POOL_H
#define PW_POOL_H

#include <stddef.h>

/* One work item: the items of a run must be independent of one another and
 * of which thread runs them. */
typedef void (*pw_task_fn)(void *ctx, ptrdiff_t item);

/* Runs fn(ctx, i) once for every i in [0, items), on at most team threads:
 * by default an OpenMP parallel-for; after pw_pool_use(1), the calling
 * thread and at most team - 1 workers of that thread's own pool (started on
 * first use, kept for later calls).  Serial where team <= 1, inside a pool
 * worker, or where this build has no threads. */
void pw_pool_run(int team, ptrdiff_t items, pw_task_fn fn, void *ctx);

/* 1: runs go to pwconv's pool; 0: to OpenMP.  Returns 0 (and changes
 * nothing) where this build cannot: no OpenMP, or no pthreads (Windows). */
int pw_pool_use(int pool);

/* How long an idle worker spins for the next run before it sleeps, in
 * microseconds (0: it sleeps at once).  Applies to every pool. */
void pw_pool_set_spin_us(long us);
long pw_pool_spin_us(void);

/* Name of what runs a call's threads now: "pwconv pool (pthreads)",
 * "OpenMP" or "none". */
const char *pw_pool_kind(void);

#endif
