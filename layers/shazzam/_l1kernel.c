/*
 * Manhattan (L1) distances between uint8 codes: the inner loop of shard search.
 *
 * l1_u8(codes, queries, dim, out): codes is n x dim, queries m x dim (both uint8, C order), out is
 * m x n uint32. Rows are walked in blocks small enough to stay in L1/L2 cache while every query
 * is compared with them, so each code byte is read from memory once per call however many
 * queries there are. On x86-64 the sum of absolute differences is one instruction per 16 (SSE2,
 * always present) or 32 bytes (AVX2, chosen at run time); elsewhere a plain loop the compiler
 * vectorises. The GIL is released, so parts of a shard can be searched from several threads.
 */
#define PY_SSIZE_T_CLEAN
/* The stable ABI of Python 3.11 (the buffer protocol joined it then): one build, named
 * _l1kernel.abi3.so, loads on 3.11, 3.12 (Lambda's runtime) and later. */
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x030B0000
#endif
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define SHAZZAM_X86 1
#endif

#define BLOCK_ROWS 64

typedef uint32_t (*sad_fn)(const uint8_t *a, const uint8_t *b, Py_ssize_t dim);

static uint32_t sad_scalar(const uint8_t *a, const uint8_t *b, Py_ssize_t dim) {
    uint32_t total = 0;
    for (Py_ssize_t i = 0; i < dim; i++) {
        int diff = (int)a[i] - (int)b[i];
        total += (uint32_t)(diff < 0 ? -diff : diff);
    }
    return total;
}

#ifdef SHAZZAM_X86
static uint32_t sad_sse2(const uint8_t *a, const uint8_t *b, Py_ssize_t dim) {
    __m128i acc = _mm_setzero_si128();
    Py_ssize_t i = 0;
    for (; i + 16 <= dim; i += 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(a + i));
        __m128i y = _mm_loadu_si128((const __m128i *)(b + i));
        acc = _mm_add_epi64(acc, _mm_sad_epu8(x, y));
    }
    uint32_t total = (uint32_t)(_mm_cvtsi128_si64(acc) + _mm_cvtsi128_si64(_mm_unpackhi_epi64(acc, acc)));
    return total + sad_scalar(a + i, b + i, dim - i);
}

__attribute__((target("avx2"))) static uint32_t sad_avx2(const uint8_t *a, const uint8_t *b, Py_ssize_t dim) {
    __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
    Py_ssize_t i = 0;
    for (; i + 64 <= dim; i += 64) {
        acc0 = _mm256_add_epi64(acc0, _mm256_sad_epu8(_mm256_loadu_si256((const __m256i *)(a + i)),
                                                      _mm256_loadu_si256((const __m256i *)(b + i))));
        acc1 = _mm256_add_epi64(acc1, _mm256_sad_epu8(_mm256_loadu_si256((const __m256i *)(a + i + 32)),
                                                      _mm256_loadu_si256((const __m256i *)(b + i + 32))));
    }
    for (; i + 32 <= dim; i += 32) {
        acc0 = _mm256_add_epi64(acc0, _mm256_sad_epu8(_mm256_loadu_si256((const __m256i *)(a + i)),
                                                      _mm256_loadu_si256((const __m256i *)(b + i))));
    }
    __m256i acc = _mm256_add_epi64(acc0, acc1);
    __m128i half = _mm_add_epi64(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    uint32_t total = (uint32_t)(_mm_cvtsi128_si64(half) + _mm_cvtsi128_si64(_mm_unpackhi_epi64(half, half)));
    return total + sad_sse2(a + i, b + i, dim - i);
}
#endif

static sad_fn choose_sad(const char **name) {
#ifdef SHAZZAM_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) {
        *name = "avx2";
        return sad_avx2;
    }
    *name = "sse2";
    return sad_sse2;
#else
    *name = "scalar";
    return sad_scalar;
#endif
}

static sad_fn SAD = NULL;
static const char *SAD_NAME = "none";

static PyObject *l1_u8(PyObject *self, PyObject *args) {
    Py_buffer codes, queries, out;
    Py_ssize_t dim;
    if (!PyArg_ParseTuple(args, "y*y*nw*", &codes, &queries, &dim, &out)) return NULL;
    PyObject *result = NULL;
    if (dim <= 0 || codes.len % dim || queries.len % dim) {
        PyErr_SetString(PyExc_ValueError, "codes and queries must be whole rows of dim bytes");
        goto done;
    }
    Py_ssize_t n = codes.len / dim, m = queries.len / dim;
    if (out.len != (Py_ssize_t)(n * m * sizeof(uint32_t))) {
        PyErr_SetString(PyExc_ValueError, "out must hold len(queries) x len(codes) uint32 values");
        goto done;
    }
    const uint8_t *c = (const uint8_t *)codes.buf, *q = (const uint8_t *)queries.buf;
    uint32_t *o = (uint32_t *)out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t start = 0; start < n; start += BLOCK_ROWS) {
        Py_ssize_t stop = start + BLOCK_ROWS < n ? start + BLOCK_ROWS : n;
        for (Py_ssize_t j = 0; j < m; j++) {
            const uint8_t *query = q + j * dim;
            uint32_t *row_out = o + j * n;
            for (Py_ssize_t i = start; i < stop; i++) row_out[i] = SAD(c + i * dim, query, dim);
        }
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&codes);
    PyBuffer_Release(&queries);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"l1_u8", l1_u8, METH_VARARGS, "l1_u8(codes, queries, dim, out): uint32 L1 distances, queries x codes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_l1kernel", "uint8 L1 distance kernel", -1, methods};

PyMODINIT_FUNC PyInit__l1kernel(void) {
    SAD = choose_sad(&SAD_NAME);
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddStringConstant(m, "INSTRUCTIONS", SAD_NAME) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
