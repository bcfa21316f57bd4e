/* The seed's Monte-Carlo Pi written by hand in C with MPI: the physical reference for
 * benches/pi.rs (built by the bench with `mpicc -O3 -march=native`). It shares no code with
 * mpidask.
 *
 *     mpirun -np N pi_handwritten BYTES CHUNK_BYTES SEED
 *
 * BYTES / 8 doubles in chunks of CHUNK_BYTES / 8, as points (x, y); chunks are dealt
 * round-robin to all ranks. Each chunk has its own eight xoshiro256+ generators (seeded with
 * SplitMix64 from the seed and the chunk), stepped together so the compiler can keep all
 * eight in one vector register; a double is the top 53 bits times 2^-53. Prints
 * `MEASURE seconds=<compute time>` and `MEASURE pi=<estimate>` on rank 0. */

#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define LANES 8

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* Points inside the unit circle among `points` points of chunk `chunk`. */
static uint64_t chunk_hits(uint64_t seed, uint64_t chunk, uint64_t points) {
    uint64_t s0[LANES], s1[LANES], s2[LANES], s3[LANES];
    uint64_t state = seed ^ (chunk * 0xD1B54A32D192ED03ULL);
    for (int l = 0; l < LANES; l++) {
        s0[l] = splitmix64(&state);
        s1[l] = splitmix64(&state);
        s2[l] = splitmix64(&state);
        s3[l] = splitmix64(&state);
    }
    const double scale = 1.0 / 9007199254740992.0; /* 2^-53 */
    uint64_t hits = 0;
    uint64_t done = 0;
    /* Each step gives LANES values: LANES / 2 points (x from lane 2k, y from lane 2k+1). */
    for (; done + LANES / 2 <= points; done += LANES / 2) {
        double v[LANES];
        for (int l = 0; l < LANES; l++) {
            uint64_t r = s0[l] + s3[l];
            uint64_t t = s1[l] << 17;
            s2[l] ^= s0[l];
            s3[l] ^= s1[l];
            s1[l] ^= s2[l];
            s0[l] ^= s3[l];
            s2[l] ^= t;
            s3[l] = rotl(s3[l], 45);
            v[l] = (double)(r >> 11) * scale;
        }
        for (int p = 0; p < LANES / 2; p++) {
            double x = v[2 * p], y = v[2 * p + 1];
            hits += (x * x + y * y < 1.0);
        }
    }
    /* The last few points come from lane 0 alone. */
    for (; done < points; done++) {
        double xy[2];
        for (int k = 0; k < 2; k++) {
            uint64_t r = s0[0] + s3[0];
            uint64_t t = s1[0] << 17;
            s2[0] ^= s0[0];
            s3[0] ^= s1[0];
            s1[0] ^= s2[0];
            s0[0] ^= s3[0];
            s2[0] ^= t;
            s3[0] = rotl(s3[0], 45);
            xy[k] = (double)(r >> 11) * scale;
        }
        hits += (xy[0] * xy[0] + xy[1] * xy[1] < 1.0);
    }
    return hits;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc != 4) {
        if (rank == 0) fprintf(stderr, "usage: pi_handwritten BYTES CHUNK_BYTES SEED\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    uint64_t bytes = strtoull(argv[1], NULL, 10);
    uint64_t chunk_bytes = strtoull(argv[2], NULL, 10);
    uint64_t seed = strtoull(argv[3], NULL, 10);
    uint64_t points = bytes / 16, chunk_points = chunk_bytes / 16;
    uint64_t chunks = (points + chunk_points - 1) / chunk_points;

    MPI_Barrier(MPI_COMM_WORLD);
    double started = MPI_Wtime();
    uint64_t local[2] = {0, 0};
    for (uint64_t c = (uint64_t)rank; c < chunks; c += (uint64_t)size) {
        uint64_t n = points - c * chunk_points < chunk_points ? points - c * chunk_points
                                                              : chunk_points;
        local[0] += chunk_hits(seed, c, n);
        local[1] += n;
    }
    uint64_t total[2] = {0, 0};
    MPI_Reduce(local, total, 2, MPI_UINT64_T, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        double seconds = MPI_Wtime() - started;
        double pi = 4.0 * (double)total[0] / (double)total[1];
        printf("MEASURE seconds=%.9f\nMEASURE pi=%.12f\nMEASURE points=%llu\n", seconds, pi,
               (unsigned long long)total[1]);
    }
    MPI_Finalize();
    return 0;
}
