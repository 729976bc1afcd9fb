/* Under -std=c11, clock_gettime, pthread_atfork and syscall are only
 * declared on request. */
#define _GNU_SOURCE
#include "pw_pool.h"

/* OpenMP's parallel-for, dynamic as the Cython prange loops it replaced
 * were; serial in a build without OpenMP.  The loop variable is an int,
 * the only kind MSVC's OpenMP 2.0 takes; a count past INT_MAX (never a
 * real call's) runs serially rather than wrapping. */
static void omp_run(int team, ptrdiff_t items, pw_task_fn fn, void *ctx)
{
#ifdef _OPENMP
    int i, n = (int)items;
    if (team > 1 && items > 1 && items == (ptrdiff_t)n) {
#pragma omp parallel for schedule(dynamic) num_threads(team)
        for (i = 0; i < n; i++) fn(ctx, i);
        return;
    }
#else
    (void)team;
#endif
    for (ptrdiff_t j = 0; j < items; j++) fn(ctx, j);
}

#if defined(_WIN32)
/* No pthreads: OpenMP's parallel-for where the build has it. */
const char *pw_pool_kind(void)
{
#ifdef _OPENMP
    return "OpenMP";
#else
    return "none";
#endif
}

int pw_pool_use(int pool)
{
#ifdef _OPENMP
    return !pool;
#else
    (void)pool;
    return 0;
#endif
}

void pw_pool_set_spin_us(long us) { (void)us; }
long pw_pool_spin_us(void) { return 0; }

void pw_pool_run(int team, ptrdiff_t items, pw_task_fn fn, void *ctx)
{
    omp_run(team, items, fn, ctx);
}

#else

#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

/* A woken worker spins this long for the next run before it sleeps: back-
 * to-back layers of a network then start without a system call, and an idle
 * pool stops taking a core soon after.  500 us is about what libgomp spun
 * with GOMP_SPINCOUNT=20000 on this project's EPYC (20000 pauses: 520 us),
 * which the benchmark sets for PyTorch's libgomp; libgomp's own default
 * spins 15 times as long.  Shorter measured worse: at 100 us a 2-thread
 * call after a few 1-thread ones often found its worker asleep (2-thread
 * p90 over six 50-150 us layers, averaged: 117 us, against 89 us at 1 ms).
 * pw_pool_set_spin_us changes it. */
static _Atomic long long spin_ns = 500000;

void pw_pool_set_spin_us(long us) { atomic_store(&spin_ns, 1000LL * (us < 0 ? 0 : us)); }
long pw_pool_spin_us(void) { return (long)(atomic_load(&spin_ns) / 1000); }
/* Workers beyond this are not started; their items go to the others. */
#define MAX_WORKERS 255

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
static inline void relax(void) { _mm_pause(); }
#elif defined(__aarch64__)
static inline void relax(void) { __asm__ __volatile__("yield"); }
#else
static inline void relax(void) {}
#endif

/* OpenMP's parallel-for unless asked otherwise (PWCONV_THREADS=pool): in a
 * process that also runs PyTorch, pwconv then shares one libgomp, and so
 * one set of workers, with it.  With its own pool, PyTorch's workers, which
 * spin after each op (for milliseconds by default), held the cores the
 * pool's worker needed: rounds of PyTorch depthwise 3x3 then pwconv 1x1,
 * 2 threads each, over five MobileNetV2 shapes took 1.07-1.18 ms against
 * 0.70-0.71 ms, and 1.22-1.28 against 0.86-0.91 in a later run
 * (benchmarks/threads.py; README, Threads).  Without OpenMP
 * in the build, the pool. */
#ifdef _OPENMP
static _Atomic int use_pool = 0;
#else
static _Atomic int use_pool = 1;
#endif

int pw_pool_use(int pool)
{
#ifndef _OPENMP
    if (!pool) return 0;
#endif
    atomic_store(&use_pool, pool != 0);
    return 1;
}

const char *pw_pool_kind(void)
{
    return atomic_load(&use_pool) ? "pwconv pool (pthreads)" : "OpenMP";
}

typedef struct pool {
    /* items << 32 | next unclaimed item.  A claim is a CAS on the whole
     * word, so a worker can only take an item that the current run still
     * has; it reads fn and ctx after its claim, when they cannot change
     * (the next run is published only after every item is done). */
    _Atomic uint64_t claim;
    _Atomic uint32_t done;
    /* Workers still allowed into this run: a pool grown for a large team
     * wakes only as many as the run asked for. */
    _Atomic int tickets;
    /* Bumped once per run; workers sleep on it (a futex word on Linux). */
    _Atomic uint32_t wake;
    _Atomic int sleepers;
    _Atomic int stop;
    pw_task_fn fn;
    void *ctx;
    unsigned long fork_epoch;
    int nworkers;
    pthread_t workers[MAX_WORKERS];
#if !defined(__linux__)
    pthread_mutex_t lock;
    pthread_cond_t cond;
#endif
} pool;

static pthread_key_t pool_key;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
/* Bumped in a forked child, where no worker of any pool exists any more. */
static _Atomic unsigned long fork_epoch;
/* Set on workers, and on a caller while its run is in flight, so an item
 * that itself asks for a run gets a serial one instead of re-entering a
 * pool that is busy. */
static _Thread_local int running_items;

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void sleep_while_unchanged(pool *p, uint32_t seen)
{
    atomic_fetch_add(&p->sleepers, 1);
#if defined(__linux__)
    while (atomic_load(&p->wake) == seen && !atomic_load(&p->stop))
        syscall(SYS_futex, (uint32_t *)&p->wake, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
#else
    pthread_mutex_lock(&p->lock);
    while (atomic_load(&p->wake) == seen && !atomic_load(&p->stop))
        pthread_cond_wait(&p->cond, &p->lock);
    pthread_mutex_unlock(&p->lock);
#endif
    atomic_fetch_sub(&p->sleepers, 1);
}

static void wake_sleepers(pool *p, int count)
{
    if (atomic_load(&p->sleepers) == 0) return;
#if defined(__linux__)
    syscall(SYS_futex, (uint32_t *)&p->wake, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0);
#else
    (void)count;  /* no way to wake only some: all look for a ticket */
    pthread_mutex_lock(&p->lock);
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
#endif
}

/* Takes and runs items of the current run until none is left. */
static void work(pool *p)
{
    uint64_t s = atomic_load_explicit(&p->claim, memory_order_relaxed);
    for (;;) {
        uint64_t next = s & 0xffffffffu;
        if (next >= s >> 32) return;
        if (atomic_compare_exchange_weak_explicit(&p->claim, &s, s + 1,
                                                  memory_order_acquire,
                                                  memory_order_relaxed)) {
            p->fn(p->ctx, (ptrdiff_t)next);
            atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
            s = atomic_load_explicit(&p->claim, memory_order_relaxed);
        }
    }
}

static void *worker_main(void *arg)
{
    pool *p = (pool *)arg;
    running_items = 1;
    uint32_t seen = 0;
    /* Only a worker that took part in the last run spins for the next: the
     * rest of a pool grown for a larger team sleep through smaller runs. */
    int took_part = 0;
    for (;;) {
        long long until = now_ns() + atomic_load(&spin_ns);
        for (int i = 0; atomic_load(&p->wake) == seen && !atomic_load(&p->stop); i++) {
            relax();
            if (!took_part || ((i & 63) == 63 && now_ns() > until)) {
                sleep_while_unchanged(p, seen);
                break;
            }
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = atomic_load(&p->wake);
        took_part = atomic_fetch_sub(&p->tickets, 1) > 0;
        if (took_part) work(p);
    }
}

static void pool_free(void *v)
{
    pool *p = (pool *)v;
    /* A forked child's copy has no workers here, and its lock may be held
     * by a thread that is gone: only its memory is let go. */
    if (p->fork_epoch == atomic_load(&fork_epoch)) {
        atomic_store(&p->stop, 1);
        atomic_fetch_add(&p->wake, 1);
        wake_sleepers(p, INT_MAX);
        for (int i = 0; i < p->nworkers; i++) pthread_join(p->workers[i], NULL);
#if !defined(__linux__)
        pthread_cond_destroy(&p->cond);
        pthread_mutex_destroy(&p->lock);
#endif
    }
    free(p);
}

static void in_child(void) { atomic_fetch_add(&fork_epoch, 1); }

static void make_key(void)
{
    pthread_key_create(&pool_key, pool_free);
    pthread_atfork(NULL, NULL, in_child);
}

/* The calling thread's pool, NULL when none can be made. */
static pool *own_pool(void)
{
    pthread_once(&pool_once, make_key);
    pool *p = (pool *)pthread_getspecific(pool_key);
    if (p && p->fork_epoch == atomic_load(&fork_epoch)) return p;
    /* None yet, or inherited through fork without its workers: start over
     * (the inherited one is leaked; freeing it could block on its lock). */
    p = (pool *)calloc(1, sizeof *p);
    if (!p) return NULL;
    p->fork_epoch = atomic_load(&fork_epoch);
#if !defined(__linux__)
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
#endif
    if (pthread_setspecific(pool_key, p) != 0) {
        pool_free(p);
        return NULL;
    }
    return p;
}

static void grow(pool *p, int want)
{
    if (want > MAX_WORKERS) want = MAX_WORKERS;
    while (p->nworkers < want &&
           pthread_create(&p->workers[p->nworkers], NULL, worker_main, p) == 0)
        p->nworkers++;
}

static void pool_run(int team, ptrdiff_t items, pw_task_fn fn, void *ctx)
{
    pool *p = NULL;
    if (items < INT32_MAX && !running_items) p = own_pool();
    if (p) grow(p, team - 1);
    if (!p || p->nworkers == 0) {
        for (ptrdiff_t i = 0; i < items; i++) fn(ctx, i);
        return;
    }
    running_items = 1;
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_store_explicit(&p->tickets, team - 1, memory_order_relaxed);
    atomic_store_explicit(&p->claim, (uint64_t)items << 32, memory_order_release);
    atomic_fetch_add(&p->wake, 1);
    wake_sleepers(p, team - 1);
    work(p);
    /* Only items a worker has already claimed are left: wait for those,
     * never for a worker that has not started. */
    long long until = 0;
    for (int i = 0; atomic_load_explicit(&p->done, memory_order_acquire) < (uint32_t)items; i++) {
        relax();
        if ((i & 63) != 63) continue;
        if (!until) until = now_ns() + atomic_load(&spin_ns);
        else if (now_ns() > until) sched_yield();
    }
    running_items = 0;
}

void pw_pool_run(int team, ptrdiff_t items, pw_task_fn fn, void *ctx)
{
    if (team > 1 && items > 1 && atomic_load_explicit(&use_pool, memory_order_relaxed)) {
        pool_run(team, items, fn, ctx);
        return;
    }
    omp_run(team, items, fn, ctx);
}

#endif
