/* The netcdf_read bench's baseline: one process reads a 2-D double variable of a netCDF
 * file with the C library, in slabs of whole rows of about 200 MB, and sums it.
 *
 *     netcdf_read FILE VARIABLE
 *
 * prints `MEASURE seconds=<s>` (open to last byte summed) and `MEASURE sum=<sum>`. */
#include <netcdf.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void check(int status, const char *what) {
    if (status != NC_NOERR) {
        fprintf(stderr, "netcdf_read: %s: %s\n", what, nc_strerror(status));
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: netcdf_read FILE VARIABLE\n");
        return 2;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int ncid, varid, ndims, dimids[NC_MAX_VAR_DIMS];
    size_t len[2];
    check(nc_open(argv[1], NC_NOWRITE, &ncid), argv[1]);
    check(nc_inq_varid(ncid, argv[2], &varid), argv[2]);
    check(nc_inq_varndims(ncid, varid, &ndims), "ndims");
    if (ndims != 2) {
        fprintf(stderr, "netcdf_read: %s is not 2-D\n", argv[2]);
        return 1;
    }
    check(nc_inq_vardimid(ncid, varid, dimids), "dims");
    check(nc_inq_dimlen(ncid, dimids[0], &len[0]), "rows");
    check(nc_inq_dimlen(ncid, dimids[1], &len[1]), "cols");
    size_t rows = (200u << 20) / (len[1] * sizeof(double));
    if (rows < 1) rows = 1;
    double *slab = malloc(rows * len[1] * sizeof(double));
    double sum = 0.0;
    for (size_t r = 0; r < len[0]; r += rows) {
        size_t start[2] = {r, 0}, count[2] = {rows, len[1]};
        if (r + rows > len[0]) count[0] = len[0] - r;
        check(nc_get_vara_double(ncid, varid, start, count, slab), "read");
        for (size_t i = 0; i < count[0] * len[1]; i++) sum += slab[i];
    }
    check(nc_close(ncid), "close");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("MEASURE seconds=%.6f\nMEASURE sum=%.17g\n",
           (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec), sum);
    free(slab);
    return 0;
}
