/* The hand-written baseline of the shuffle in benches/dataframes.rs: ranks 2.. of the job
 * move BYTES in total with one MPI_Alltoallv, as a program written for the job would
 * (built by the bench with `mpicc -O3 -march=native`). It shares no code with mpidask.
 *
 *     mpirun -np N alltoallv BYTES
 *
 * Each of the R moving ranks holds BYTES / R as 64-bit words; word i of rank r goes to rank
 * i * R / words and its value is r * words + i. Its buffers ask for transparent huge pages
 * (as mpidask's allocator does for every large allocation), so the comparison is of the
 * transfers, not of the page size. Two rounds, each timed from a barrier to a barrier and
 * checked word by word:
 *   `MEASURE seconds=`      into a new receive buffer (the kernel faults its pages in, as
 *                           it does for every new value of a shuffle);
 *   `MEASURE warm_seconds=` again into the same buffer (the raw bandwidth of the call).
 * Ranks 0 and 1 wait on a non-blocking barrier without spinning. */

#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static void *huge_alloc(size_t bytes) {
    const uintptr_t huge = 2u << 20;
    void *p = malloc(bytes);
    if (!p) {
        fprintf(stderr, "alltoallv: cannot allocate %zu bytes\n", bytes);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    uintptr_t start = ((uintptr_t)p + huge - 1) / huge * huge;
    uintptr_t end = ((uintptr_t)p + bytes) / huge * huge;
    if (end > start) madvise((void *)start, end - start, MADV_HUGEPAGE);
    return p;
}

static void wait_without_spinning(MPI_Comm comm) {
    MPI_Request request;
    int done = 0;
    struct timespec nap = {0, 10 * 1000 * 1000};
    MPI_Ibarrier(comm, &request);
    while (!done) {
        MPI_Test(&request, &done, MPI_STATUS_IGNORE);
        if (!done) nanosleep(&nap, NULL);
    }
}

static double timed_alltoallv(MPI_Comm comm, const uint64_t *send, const int *counts,
                              const int *displs, uint64_t *recv, const int *recv_counts,
                              const int *recv_displs) {
    MPI_Barrier(comm);
    double started = MPI_Wtime();
    MPI_Alltoallv(send, counts, displs, MPI_UINT64_T, recv, recv_counts, recv_displs,
                  MPI_UINT64_T, comm);
    MPI_Barrier(comm);
    return MPI_Wtime() - started;
}

/* 1 if every block of `recv` is the words the rank it came from had for this one. */
static int checked(const uint64_t *recv, uint64_t ranks, uint64_t words, uint64_t lo,
                   uint64_t block) {
    for (uint64_t from = 0; from < ranks; from++)
        for (uint64_t i = 0; i < block; i++)
            if (recv[from * block + i] != from * words + lo + i) return 0;
    return 1;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    if (argc != 2) {
        fprintf(stderr, "usage: alltoallv BYTES\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    uint64_t bytes = strtoull(argv[1], NULL, 10);
    int world_rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    int movers = world_rank >= 2;
    MPI_Comm comm;
    MPI_Comm_split(MPI_COMM_WORLD, movers, world_rank, &comm);
    if (!movers) {
        wait_without_spinning(MPI_COMM_WORLD);
        MPI_Finalize();
        return 0;
    }
    int rank_i, ranks_i;
    MPI_Comm_rank(comm, &rank_i);
    MPI_Comm_size(comm, &ranks_i);
    uint64_t rank = (uint64_t)rank_i, ranks = (uint64_t)ranks_i;
    uint64_t words = bytes / 8 / ranks;
    uint64_t *send = huge_alloc(words * 8);
    for (uint64_t i = 0; i < words; i++) send[i] = rank * words + i;
    int *counts = malloc(ranks * sizeof(int)), *displs = malloc(ranks * sizeof(int));
    int *recv_counts = malloc(ranks * sizeof(int)), *recv_displs = malloc(ranks * sizeof(int));
    uint64_t lo = rank * words / ranks, hi = (rank + 1) * words / ranks, block = hi - lo;
    for (uint64_t to = 0; to < ranks; to++) {
        counts[to] = (int)((to + 1) * words / ranks - to * words / ranks);
        displs[to] = (int)(to * words / ranks);
        recv_counts[to] = (int)block;
        recv_displs[to] = (int)(to * block);
    }
    uint64_t *recv = huge_alloc(ranks * block * 8);
    double cold = timed_alltoallv(comm, send, counts, displs, recv, recv_counts, recv_displs);
    int ok = checked(recv, ranks, words, lo, block);
    memset(recv, 0, ranks * block * 8);
    double warm = timed_alltoallv(comm, send, counts, displs, recv, recv_counts, recv_displs);
    ok = ok && checked(recv, ranks, words, lo, block);
    int all_ok;
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_LAND, comm);
    if (rank == 0) {
        if (!all_ok) fprintf(stderr, "alltoallv: a received word is wrong\n");
        else printf("MEASURE seconds=%.9f\nMEASURE warm_seconds=%.9f\n", cold, warm);
        fflush(stdout);
    }
    wait_without_spinning(MPI_COMM_WORLD);
    MPI_Finalize();
    return all_ok ? 0 : 1;
}
