# C declarations shared by the compiled drivers.

from libc.stddef cimport ptrdiff_t

cdef extern from "pw_kernels.h" nogil:
    ctypedef struct pw_gemm_params:
        size_t kc
        size_t panel_stride
        Py_ssize_t a_rs
        Py_ssize_t a_ks
        Py_ssize_t c_rs
        Py_ssize_t r_rs
        Py_ssize_t b_ks
        int clamp
        double lo
        double hi
        int stream
        const void *ahead
        size_t ahead_rows
        size_t ahead_row_bytes
        Py_ssize_t ahead_rs
        void *b_copy
        size_t b_copy_ps

    ctypedef void (*pw_gemm_f32_fn)(size_t, size_t, const float *, const float *,
                                    float *, const float *, const float *,
                                    const pw_gemm_params *) noexcept nogil
    ctypedef void (*pw_gemm_f64_fn)(size_t, size_t, const double *, const double *,
                                    double *, const double *, const double *,
                                    const pw_gemm_params *) noexcept nogil

    ctypedef struct pw_isa:
        const char *name
        size_t mr_f32
        size_t nr_f32
        pw_gemm_f32_fn gemm_f32
        size_t mr_f64
        size_t nr_f64
        pw_gemm_f64_fn gemm_f64
        int copies_b

cdef extern from "pw_runtime.h" nogil:
    const pw_isa *pw_isa_by_name(const char *name)
    const pw_isa *pw_isa_best()
    const char *pw_isa_available()
    void *pw_scratch(size_t nbytes)
    size_t pw_llc_bytes()
    void pw_store_fence()

cdef extern from "pw_pack.h" nogil:
    size_t pw_panel_stride(size_t kc, size_t nr)
    void pw_prefetch_rows_l2(const void *base, size_t rows, size_t row_bytes,
                             Py_ssize_t stride_bytes)
    void pw_pack_f32(float *dst, size_t nr, size_t panel_stride, size_t kc,
                     size_t ncols, const float *src, Py_ssize_t k_stride,
                     Py_ssize_t j_stride, const Py_ssize_t *k_off,
                     const Py_ssize_t *j_off, const float *head,
                     const float *mask, double lo, double hi)
    void pw_pack_f64(double *dst, size_t nr, size_t panel_stride, size_t kc,
                     size_t ncols, const double *src, Py_ssize_t k_stride,
                     Py_ssize_t j_stride, const Py_ssize_t *k_off,
                     const Py_ssize_t *j_off, const double *head,
                     const double *mask, double lo, double hi)
    void pw_mask_rows_f32(float *dst, Py_ssize_t dst_rs, const float *src,
                          Py_ssize_t src_rs, size_t rows, size_t cols,
                          const float *mask, double lo, double hi,
                          double *col_sums, double *row_sums)
    void pw_mask_rows_f64(double *dst, Py_ssize_t dst_rs, const double *src,
                          Py_ssize_t src_rs, size_t rows, size_t cols,
                          const double *mask, double lo, double hi,
                          double *col_sums, double *row_sums)

    void pw_pack_a_f32(float *dst, size_t mr, const float *src, Py_ssize_t src_ps,
                       size_t kq, size_t nch, const float *mask, double lo,
                       double hi, double *col_sums)
    void pw_pack_a_f64(double *dst, size_t mr, const double *src, Py_ssize_t src_ps,
                       size_t kq, size_t nch, const double *mask, double lo,
                       double hi, double *col_sums)

    void pw_gather_tiles_f32(float *dst, size_t mr, const float *src,
                             Py_ssize_t src_rs, size_t kc, size_t npix,
                             const float *mask, double lo, double hi)
    void pw_gather_tiles_f64(double *dst, size_t mr, const double *src,
                             Py_ssize_t src_rs, size_t kc, size_t npix,
                             const double *mask, double lo, double hi)
    void pw_gather_f32(float *dst, const float *src, size_t row0, size_t row1,
                       size_t h, size_t w, size_t inner, size_t sh, size_t sw,
                       size_t ho, size_t wo)
    void pw_gather_f64(double *dst, const double *src, size_t row0, size_t row1,
                       size_t h, size_t w, size_t inner, size_t sh, size_t sw,
                       size_t ho, size_t wo)
    void pw_transpose_f32(float *dst, Py_ssize_t dst_rs, const float *src,
                          Py_ssize_t src_rs, size_t rows, size_t cols,
                          const float *r, Py_ssize_t r_rs, int clamp,
                          double lo, double hi)
    void pw_transpose_f64(double *dst, Py_ssize_t dst_rs, const double *src,
                          Py_ssize_t src_rs, size_t rows, size_t cols,
                          const double *r, Py_ssize_t r_rs, int clamp,
                          double lo, double hi)

cdef extern from "pw_omp.h" nogil:
    int pw_omp_enabled()
    int pw_omp_max_threads()

cdef extern from "pw_pool.h" nogil:
    ctypedef void (*pw_task_fn)(void *ctx, ptrdiff_t item) noexcept nogil
    void pw_pool_run(int team, ptrdiff_t items, pw_task_fn fn, void *ctx)
    const char *pw_pool_kind()
    int pw_pool_use(int pool)
    void pw_pool_set_spin_us(long us)
    long pw_pool_spin_us()
