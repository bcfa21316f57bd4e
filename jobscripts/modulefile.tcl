#%Module1.0
## mpidask @VERSION@: Dask's programming model over MPI (installed by `make install`).
## Works with Environment Modules (Tcl) and Lmod.
proc ModulesHelp { } {
    puts stderr "mpidask @VERSION@: the mpidask command (jobscript, submit, info, exit-codes)."
    puts stderr "Programs built with the mpidask crate run under srun/mpirun; see `mpidask --help`."
}
module-whatis "mpidask @VERSION@: Dask-style task graphs, arrays and futures over MPI"
set prefix @PREFIX@
prepend-path PATH $prefix/bin
setenv MPIDASK_HOME $prefix
