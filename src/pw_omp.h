/* The only place that touches omp_*: stand-ins keep a build without OpenMP
 * working (serial, one thread). */
#ifndef PW_OMP_H
#define PW_OMP_H

#ifdef _OPENMP
#include <omp.h>
static inline int pw_omp_enabled(void) { return 1; }
static inline int pw_omp_max_threads(void) { return omp_get_max_threads(); }
#else
static inline int pw_omp_enabled(void) { return 0; }
static inline int pw_omp_max_threads(void) { return 1; }
#endif

#endif
