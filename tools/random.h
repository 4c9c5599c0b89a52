/* tools/random.h — the one random sequence kiln's tools draw from:
 * splitmix64, so that a --seed gives the same weights, order and samples on
 * every machine. */
#ifndef KILN_TOOLS_RANDOM_H
#define KILN_TOOLS_RANDOM_H

#include <stdint.h>

/* The next value of the sequence, advancing *state. */
static inline uint64_t next_random(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z          = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z          = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

#endif /* KILN_TOOLS_RANDOM_H */
