/* Checks pw_pool_run (src/pw_pool.c): every item of every run runs exactly
 * once and is finished when the run returns, for team sizes below, at and
 * far above the item count; from several caller threads at once, each with
 * its own pool; from an item (a nested run, serial); from callers that end
 * (their pools' workers are joined); and in forked children, where the
 * parent's workers do not exist; and that a second thread really takes
 * items.  With the argument "emulated" (for
 * qemu-user, which cannot start threads in a forked child of a threaded
 * process): fewer rounds and no fork.  Prints "check_pool: OK, N cases" or the
 * first failure and exits 1. */
#define _GNU_SOURCE
#include "pw_pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_ITEMS 700

typedef struct {
    _Atomic int hits[MAX_ITEMS];
    /* Plain stores from items, read by the caller after the run: they must
     * be visible without any other synchronisation. */
    long value[MAX_ITEMS];
    int nested;  /* items also run a nested run of this many items */
    _Atomic int nested_hits;
} run_state;

static _Atomic long cases;

static void fail(const char *what, int team, long items, long item, int got)
{
    printf("check_pool: FAIL %s: team %d, %ld items, item %ld, got %d\n", what, team,
           items, item, got);
    fflush(stdout);
    exit(1);
}

static void nested_item(void *ctx, ptrdiff_t item)
{
    (void)item;
    atomic_fetch_add(&((run_state *)ctx)->nested_hits, 1);
}

static void item_fn(void *ctx, ptrdiff_t item)
{
    run_state *s = (run_state *)ctx;
    atomic_fetch_add(&s->hits[item], 1);
    /* Uneven work, so items finish out of order. */
    volatile long acc = 0;
    for (long i = 0; i < (item * 7919) % 600; i++) acc += i;
    s->value[item] = item * 3 + 1;
    if (s->nested) pw_pool_run(4, s->nested, nested_item, s);
}

static void one_run(run_state *s, int team, long items, int nested)
{
    memset(s, 0, sizeof *s);
    s->nested = nested;
    pw_pool_run(team, items, item_fn, s);
    for (long i = 0; i < items; i++) {
        int h = atomic_load(&s->hits[i]);
        if (h != 1) fail("item ran other than once", team, items, i, h);
        if (s->value[i] != i * 3 + 1) fail("item's store not seen", team, items, i, 0);
    }
    for (long i = items; i < MAX_ITEMS; i++)
        if (atomic_load(&s->hits[i])) fail("item past the end ran", team, items, i, 1);
    if (atomic_load(&s->nested_hits) != items * nested)
        fail("nested runs", team, items, -1, atomic_load(&s->nested_hits));
    atomic_fetch_add(&cases, 1);
}

static const int teams[] = {1, 2, 3, 4, 8, 300};
static const long item_counts[] = {0, 1, 2, 3, 5, 16, 64, 699};

static void sweep(int rounds)
{
    run_state *s = malloc(sizeof *s);
    if (!s) fail("out of memory", 0, 0, 0, 0);
    for (int r = 0; r < rounds; r++)
        for (size_t t = 0; t < sizeof teams / sizeof *teams; t++)
            for (size_t n = 0; n < sizeof item_counts / sizeof *item_counts; n++)
                one_run(s, teams[t], item_counts[n], (r % 4 == 0 && n < 4) ? 3 : 0);
    free(s);
}

static void *sweep_thread(void *arg)
{
    sweep((int)(long)arg);
    return NULL;
}

static void concurrent_callers(int callers, int rounds)
{
    pthread_t th[8];
    for (int i = 0; i < callers; i++)
        if (pthread_create(&th[i], NULL, sweep_thread, (void *)(long)rounds) != 0)
            fail("pthread_create", 0, 0, i, 0);
    for (int i = 0; i < callers; i++) pthread_join(th[i], NULL);
}

static void in_child(int depth)
{
    pid_t pid = fork();
    if (pid < 0) fail("fork", 0, 0, 0, 0);
    if (pid == 0) {
        sweep(2);
        if (depth > 1) in_child(depth - 1);
        fflush(stdout);
        _exit(0);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail("forked child", 0, 0, depth, status);
}

/* A run of two items whose item 0 waits until item 1 has run.  Items are
 * claimed in order, so whichever thread takes item 0 blocks, and only
 * another thread can run item 1: a pool that ran every item on the caller
 * would never finish. */
static void meet_item(void *ctx, ptrdiff_t item)
{
    _Atomic int *one_ran = (_Atomic int *)ctx;
    if (item == 1) {
        atomic_store(one_ran, 1);
        return;
    }
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!atomic_load(one_ran)) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec > 30) fail("no second thread ran an item in 30 s", 2, 2, 1, 0);
    }
}

static void workers_take_items(void)
{
    for (int r = 0; r < 20; r++) {
        _Atomic int one_ran = 0;
        pw_pool_run(2, 2, meet_item, (void *)&one_ran);
        atomic_fetch_add(&cases, 1);
    }
}

int main(int argc, char **argv)
{
    int emulated = argc > 1 && strcmp(argv[1], "emulated") == 0;
    /* Both ways a worker waits for the next run: spinning through back-to-
     * back runs (the default), and asleep (spin 0) so that every run wakes it. */
    for (int spin = 0; spin < 2; spin++) {
        if (spin) pw_pool_set_spin_us(0);
        workers_take_items();
        sweep(emulated ? 4 : 20);
        concurrent_callers(4, emulated ? 1 : 5);
        /* Callers that end: each joins its own workers on the way out. */
        for (int i = 0; i < (emulated ? 2 : 10); i++) concurrent_callers(2, 1);
        if (!emulated) in_child(2);
    }
    printf("check_pool: OK, %ld cases\n", atomic_load(&cases));
    return 0;
}
