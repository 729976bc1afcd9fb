/* pwconv's own thread pool: runs a call's independent work items on the
 * calling thread and up to team - 1 workers, and returns as soon as every
 * item is done.
 *
 * Why not OpenMP's parallel-for: libgomp's end-of-region barrier waits for
 * every worker of the team, including one that has not yet run because
 * another process holds its core.  On a 2-vCPU host with one vCPU kept
 * busy, that made a 100 us layer take a scheduler slice (about 2 ms) on more
 * than one call in ten.  Here the caller takes items too, so a worker that
 * never starts costs nothing: the caller finishes its items and returns. */
#ifndef PW_POOL_H
#define PW_POOL_H

#include <stddef.h>

/* One work item: the items of a run must be independent of one another and
 * of which thread runs them. */
typedef void (*pw_task_fn)(void *ctx, ptrdiff_t item);

/* Runs fn(ctx, i) once for every i in [0, items), on the calling thread and
 * at most team - 1 workers of the calling thread's own pool (started on
 * first use, kept for later calls).  Serial where team <= 1, inside a
 * worker, or where this build has no threads. */
void pw_pool_run(int team, ptrdiff_t items, pw_task_fn fn, void *ctx);

/* How long an idle worker spins for the next run before it sleeps, in
 * microseconds (0: it sleeps at once).  Applies to every pool. */
void pw_pool_set_spin_us(long us);
long pw_pool_spin_us(void);

/* Name of what runs the workers: "pwconv pool (pthreads)", "OpenMP" or
 * "none". */
const char *pw_pool_kind(void);

#endif
