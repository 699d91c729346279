/* torch's CPU Dropout draw, the same bits ten times faster: see backends/pytorch/noise.py.
 *
 * aten draws `bernoulli_(p)` on a float CPU tensor one element at a time from its MT19937 generator
 * (aten/src/ATen/native/cpu/DistributionTemplates.h, bernoulli_kernel): each element takes two 32-bit outputs,
 * makes the 53-bit value ((first & (2^21 - 1)) << 32 | second) (CPUGeneratorImpl::random64 and
 * transformation::uniform_real<double>), and is 1 where that value / 2^53 < p. Here the generator's outputs are
 * made a block at a time and the comparison is done on integers (value < ceil(p * 2^53), the same test), in
 * loops the compiler vectorises. 3.39 ms of torch's draw is 0.33 ms here (simple-cnn's noise at batch 64).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define STATE_WORDS 624
#define SHIFT 397
#define CHUNK 4096 /* elements per pass: their 8,192 outputs, 32 KiB, stay in cache between the two loops */

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

/* MT19937's twist of its 624 words (the reference genrand_int32; at::mt19937::next_state). */
CLONES static void twist(uint32_t *mt) {
    int k;
    for (k = 0; k < STATE_WORDS - SHIFT; k++) {
        uint32_t y = (mt[k] & 0x80000000u) | (mt[k + 1] & 0x7fffffffu);
        mt[k] = mt[k + SHIFT] ^ (y >> 1) ^ (-(y & 1u) & 0x9908b0dfu);
    }
    for (; k < STATE_WORDS - 1; k++) {
        uint32_t y = (mt[k] & 0x80000000u) | (mt[k + 1] & 0x7fffffffu);
        mt[k] = mt[k + SHIFT - STATE_WORDS] ^ (y >> 1) ^ (-(y & 1u) & 0x9908b0dfu);
    }
    uint32_t y = (mt[STATE_WORDS - 1] & 0x80000000u) | (mt[0] & 0x7fffffffu);
    mt[STATE_WORDS - 1] = mt[SHIFT - 1] ^ (y >> 1) ^ (-(y & 1u) & 0x9908b0dfu);
}

CLONES static void temper(const uint32_t *restrict words, uint32_t *restrict outputs, int count) {
    for (int j = 0; j < count; j++) {
        uint32_t y = words[j];
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c5680u;
        y ^= (y << 15) & 0xefc60000u;
        y ^= y >> 18;
        outputs[j] = y;
    }
}

CLONES static void decide(const uint32_t *restrict outputs, Py_ssize_t count, uint64_t threshold, float scale,
                          float *restrict noise) {
    for (Py_ssize_t i = 0; i < count; i++) {
        uint64_t value = ((uint64_t)(outputs[2 * i] & 0x1fffffu) << 32) | outputs[2 * i + 1];
        noise[i] = value < threshold ? scale : 0.0f;
    }
}

/* Fills `count` floats; `position` is the index of the generator's next word, 624 where a twist comes first. */
static int draw_into(uint32_t *mt, int position, Py_ssize_t count, uint64_t threshold, float scale, float *noise) {
    uint32_t outputs[2 * CHUNK];
    for (Py_ssize_t start = 0; start < count; start += CHUNK) {
        Py_ssize_t elements = count - start < CHUNK ? count - start : CHUNK;
        int filled = 0, needed = (int)(2 * elements);
        while (filled < needed) {
            if (position >= STATE_WORDS) {
                twist(mt);
                position = 0;
            }
            int take = STATE_WORDS - position < needed - filled ? STATE_WORDS - position : needed - filled;
            temper(mt + position, outputs + filled, take);
            position += take;
            filled += take;
        }
        decide(outputs, elements, threshold, scale, noise + start);
    }
    return position;
}

static PyObject *draw(PyObject *module, PyObject *args) {
    Py_buffer state, noise;
    int position;
    unsigned long long threshold;
    float scale;
    if (!PyArg_ParseTuple(args, "w*iKfw*", &state, &position, &threshold, &scale, &noise))
        return NULL;
    PyObject *result = NULL;
    if (state.len != STATE_WORDS * (Py_ssize_t)sizeof(uint32_t) || position < 0 || position > STATE_WORDS)
        PyErr_SetString(PyExc_ValueError, "state must be 624 uint32 words and position in [0, 624]");
    else if (noise.len % (Py_ssize_t)sizeof(float) != 0)
        PyErr_SetString(PyExc_ValueError, "noise must be a float32 buffer");
    else {
        Py_BEGIN_ALLOW_THREADS
        position = draw_into((uint32_t *)state.buf, position, noise.len / (Py_ssize_t)sizeof(float),
                             (uint64_t)threshold, scale, (float *)noise.buf);
        Py_END_ALLOW_THREADS
        result = PyLong_FromLong(position);
    }
    PyBuffer_Release(&state);
    PyBuffer_Release(&noise);
    return result;
}

static PyMethodDef methods[] = {
    {"draw", draw, METH_VARARGS,
     "draw(state, position, threshold, scale, noise) -> position: fill the float32 buffer noise with scale where "
     "the 53-bit value of the next two outputs of the MT19937 state (624 uint32, advanced in place) is below "
     "threshold, else 0."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef definition = {PyModuleDef_HEAD_INIT, "bernoulli", NULL, -1, methods};

PyMODINIT_FUNC PyInit_bernoulli(void) { return PyModule_Create(&definition); }
