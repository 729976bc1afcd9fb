/* The checkers' inputs: a fixed xorshift64 stream, so every run sees the same
 * values, mapped to uniform doubles in [-1, 1). */
#ifndef CHECK_RAND_H
#define CHECK_RAND_H

static unsigned long long rng = 88172645463325252ULL;

static double urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

#endif
