/* dcformat._kernels: the compiled decoding and encoding loops (issue 12).
 *
 * Everything here runs over plans the Python validation path (format/encodings.py,
 * codecs/streams.py, codecs/huffman.py) has already checked; nothing here validates a
 * file. Still, a kernel trusts no count or offset it is given: every buffer's length is
 * checked against the counts before the loop, every payload read is clamped (bytes past
 * the end read as zero, as in the numpy kernels), every table index is masked or bounded,
 * and every write index is below a length checked up front. Misuse from Python raises
 * ValueError; bad data gives the same symbols and lane ends as the numpy kernels, so the
 * Python checks that follow a decode raise the same errors.
 *
 * Loops run without the GIL, so threads decoding different lanes or tensors scale.
 * The numpy kernels stay the reference: tests compare the two bit for bit.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/mman.h>
#include <unistd.h>
#endif

/* Lanes decoded side by side: independent dependency chains for the CPU to overlap, each
 * step writing a run of LANE_GROUP values, and few passes over the output's rows (each row
 * of a large stream is on its own page). */
#define LANE_GROUP 256
/* The same for the vector loop where its decode table is the widest (2**12 entries of 8 bytes,
 * the whole L1 cache): a group's lanes each keep a line of the payload in use beside it, and
 * 256 lines made them evict each other. One core: bfloat16 MiniLM loads 7-8% faster, the
 * Huffman kernel alone on its heads 1058-1098 -> 1216-1253 M symbols/s and on 8-bit codes
 * 925-956 -> 1030-1048; on narrower tables (5-bit codes, float16's 11-bit heads) 128 lanes
 * were slower (by a quarter on 16M 5-bit codes in 8192 lanes, where each row of the output is
 * on a page of its own). */
#define VECTOR_LANE_GROUP 128
/* Bits a 64-bit load holds after shifting out the partial first byte. */
#define WINDOW_BITS 57
#define MAX_CODE_BITS 20
#define MAX_PRIMARY_BITS 12

static uint16_t reverse10[1 << 10];

/* Little-endian 64-bit load of payload bytes at..at+7; bytes past len read as zero. */
static inline uint64_t load64(const uint8_t *data, size_t len, uint64_t at)
{
    uint64_t word = 0;
    if (at < len && len - at >= 8) {
        memcpy(&word, data + at, 8);
        return word;
    }
    for (unsigned k = 0; k < 8 && at + k < len; k++)
        word |= (uint64_t)data[at + k] << (8 * k);
    return word;
}

static inline void copy_value(uint8_t *dst, const uint8_t *src, size_t size)
{
    switch (size) {
    case 1: *dst = *src; break;
    case 2: memcpy(dst, src, 2); break;
    case 4: memcpy(dst, src, 4); break;
    default: memcpy(dst, src, 8); break;
    }
}

static int valid_item_size(Py_ssize_t size) { return size == 1 || size == 2 || size == 4 || size == 8; }

/* Releases the buffers PyArg_ParseTuple filled, in one statement at a function's end:
 * RELEASE_BUFFERS(&a, &b, ...). */
static void release_buffers(Py_buffer *const buffers[], size_t count)
{
    for (size_t k = 0; k < count; k++)
        PyBuffer_Release(buffers[k]);
}
#define RELEASE_BUFFERS(...) release_buffers((Py_buffer *[]){__VA_ARGS__}, sizeof((Py_buffer *[]){__VA_ARGS__}) / sizeof(Py_buffer *))

static PyObject *misuse(const char *what)
{
    PyErr_Format(PyExc_ValueError, "dcformat._kernels: %s", what);
    return NULL;
}

/* ------------------------------------------------------------------ Huffman decode */

typedef struct {
    const uint8_t *payload;
    size_t payload_len;
    unsigned primary_bits;       /* the primary table has 2**primary_bits entries */
    const uint8_t *primary_len;  /* code length, or 0: the code is longer than primary_bits */
    const uint8_t *primary_value;
    size_t long_count;           /* every present symbol, in canonical order */
    const uint32_t *long_start;  /* its code left-justified to 20 bits (ascending) */
    const uint8_t *long_len;
    const uint8_t *long_value;
    size_t value_size;
    const uint64_t *combined; /* value_size <= 4: value << 32 | length (COMBINED_LONG: longer), per primary entry */
} HuffmanTables;

/* A code longer than the primary table: the 20 next bits, first bit as most significant,
 * fall in [start[k], start[k+1]) for exactly one canonical code k (the code is complete). */
static inline const uint8_t *decode_long(const HuffmanTables *t, uint64_t window, unsigned *length)
{
    uint32_t bits = (uint32_t)(window & 0xFFFFF);
    uint32_t value = ((uint32_t)reverse10[bits & 1023] << 10) | reverse10[bits >> 10];
    size_t lo = 0, hi = t->long_count; /* invariant: start[lo] <= value (start[0] == 0) */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->long_start[mid] <= value)
            lo = mid;
        else
            hi = mid;
    }
    *length = t->long_len[lo];
    return t->long_value + lo * t->value_size;
}

/* The window of a lane: the WINDOW_BITS payload bits from bit `pos` on (first bit lowest)
 * and a marker bit above them. Decoding shifts the window right, so the marker's position
 * tells how many bits were consumed without a counter to keep per lane (window_used). */
static inline uint64_t window_at(const HuffmanTables *t, uint64_t pos)
{
    const uint64_t bits = load64(t->payload, t->payload_len, pos >> 3) >> (pos & 7);
    return (bits & (((uint64_t)1 << WINDOW_BITS) - 1)) | ((uint64_t)1 << WINDOW_BITS);
}

static inline unsigned window_used(uint64_t window) { return (unsigned)__builtin_clzll(window) - (63 - WINDOW_BITS); }

/* Symbols one window is sure to hold: each lookup needs primary_bits valid bits; a longer
 * code reloads the window where it starts (decode_long needs max_len bits), after which the
 * chunk's remaining symbols must still fit. */
static inline size_t symbols_per_window(unsigned primary_bits, unsigned max_len)
{
    size_t steps = WINDOW_BITS / primary_bits;
    if (max_len > primary_bits) {
        const size_t after_long = 1 + (WINDOW_BITS - max_len) / primary_bits;
        steps = after_long < steps ? after_long : steps;
    }
    return steps;
}

/* One symbol of a lane in the chunked loop: a primary lookup, or, for a code longer than
 * the primary table, the window reloaded at the code's start (its position is known from the
 * marker) and a search of the canonical codes. */
static inline const uint8_t *next_symbol_long(const HuffmanTables *t, uint64_t *window, uint64_t *pos, unsigned *length)
{
    *pos += window_used(*window);
    *window = window_at(t, *pos);
    const uint8_t *value = decode_long(t, *window, length);
    *window >>= *length;
    return value;
}

static inline __attribute__((always_inline)) const uint8_t *next_symbol(const HuffmanTables *t, uint64_t *window, uint64_t *pos,
                                                                        const uint8_t *value, unsigned length)
{
    if (__builtin_expect(length == 0, 0))
        return next_symbol_long(t, window, pos, &length);
    *window >>= length;
    return value;
}

/* The combined table (value sizes up to 4): entry = code length | value << 32, or
 * COMBINED_LONG where the code is longer than the primary table (a shift by its low six
 * bits, zero, leaves the window alone). */
#define COMBINED_LONG 0x80u

/* One symbol of a lane through the combined table: each lane's entry is used and dropped
 * at once (one check per lane, predicted not taken), so four lanes' windows stay in registers. */
static inline __attribute__((always_inline)) void combined_step(const HuffmanTables *t, const uint64_t *combined, uint64_t mask,
                                                                uint64_t *window, uint64_t *pos, uint8_t *dst, size_t size)
{
    const uint64_t entry = combined[*window & mask];
    uint32_t value = (uint32_t)(entry >> 32);
    if (__builtin_expect(entry & COMBINED_LONG, 0)) {
        unsigned length;
        value = 0;
        memcpy(&value, next_symbol_long(t, window, pos, &length), size);
    } else {
        *window >>= entry & 63;
    }
    memcpy(dst, &value, size); /* little-endian: the value's low bytes */
}

/* The vector loop (x86-64 with AVX-512 F, CD, BW and VL, chosen at import): VECTOR_LANES lanes
 * of a group at a time, four registers of eight 64-bit windows, each step's lookups in four
 * gathers and its values in two stores. The interleaved layout is what makes this pay: the
 * lanes' symbols of a step are adjacent in the output. Measured on one core: the embedding
 * of all-MiniLM-L6-v2 as 5-bit codes decoded at 1520 M symbols/s to bytes and 1200 M/s to
 * float32 values, against 1060 and 890 M/s for the scalar loop. Four registers beat two
 * (the gathers' latency is hidden by the other registers' work) and eight (1036 M/s). */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_VECTOR_LANES 1
#define VECTOR_TARGET __attribute__((target("avx512f,avx512cd,avx512bw,avx512vl")))
#define VECTOR_REGISTERS 4
#define VECTOR_LANES (8 * VECTOR_REGISTERS)

static int vector_lanes = 0; /* set at import where the CPU can, unless DCFORMAT_NO_AVX512 is set */

/* window_at for eight lanes; the caller has checked that every lane's 8 bytes are in the payload. */
VECTOR_TARGET static inline __m512i vector_window_at(const uint8_t *payload, __m512i pos)
{
    const __m512i word = _mm512_i64gather_epi64(_mm512_srli_epi64(pos, 3), (const void *)payload, 1);
    const __m512i bits = _mm512_srlv_epi64(word, _mm512_and_si512(pos, _mm512_set1_epi64(7)));
    return _mm512_or_si512(_mm512_and_si512(bits, _mm512_set1_epi64(((int64_t)1 << WINDOW_BITS) - 1)), _mm512_set1_epi64((int64_t)1 << WINDOW_BITS));
}

/* One chunk of `steps` symbols for lanes 0.. of a group (`pos` its lanes' positions, `base`
 * where its first lane's first symbol goes), VECTOR_LANES lanes at a time through the
 * combined table (value sizes up to 4): the symbols, positions and stores of combined_step.
 * A lane meeting a code longer than the primary table (entry COMBINED_LONG: shifted by 0,
 * its value stored but wrong) is then decoded alone by next_symbol_long, its value stored
 * over. A run of lanes whose windows would read past the payload ends the vector loop: it
 * and the lanes after it are left to the scalar loop, which clamps its reads. Returns the
 * first lane not done. */
VECTOR_TARGET static size_t vector_chunk(const HuffmanTables *t, uint64_t mask, uint64_t *pos, size_t group, size_t steps, uint8_t *base,
                                         size_t row, size_t size)
{
    if (t->payload_len < 8)
        return 0;
    const __m512i index_mask = _mm512_set1_epi64((int64_t)mask), length_mask = _mm512_set1_epi64(63);
    const __m512i long_flag = _mm512_set1_epi64(COMBINED_LONG), last_byte = _mm512_set1_epi64((int64_t)(t->payload_len - 8));
    const __m512i unused = _mm512_set1_epi64(63 - WINDOW_BITS);
    const __m512i high_halves = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    const long long *combined = (const long long *)t->combined;
    size_t q = 0;
    for (; q + VECTOR_LANES <= group; q += VECTOR_LANES) {
        __mmask8 beyond = 0;
        for (int r = 0; r < VECTOR_REGISTERS; r++)
            beyond |= _mm512_cmpgt_epu64_mask(_mm512_srli_epi64(_mm512_loadu_si512(pos + q + 8 * r), 3), last_byte);
        if (beyond)
            break;
#ifdef __SANITIZE_ADDRESS__
        /* AddressSanitizer does not see into gathers: read each lane's first and last byte here */
        for (size_t l = 0; l < VECTOR_LANES; l++) {
            const volatile uint8_t *lane_bytes = t->payload + (pos[q + l] >> 3);
            (void)lane_bytes[0], (void)lane_bytes[7];
        }
#endif
        __m512i window[VECTOR_REGISTERS];
        for (int r = 0; r < VECTOR_REGISTERS; r++)
            window[r] = vector_window_at(t->payload, _mm512_loadu_si512(pos + q + 8 * r));
        uint8_t *dst = base + q * size;
        for (size_t k = steps; k; k--, dst += row) {
            __m512i entry[VECTOR_REGISTERS];
            __mmask8 longs[VECTOR_REGISTERS], any_long = 0;
            for (int r = 0; r < VECTOR_REGISTERS; r++) {
                entry[r] = _mm512_i64gather_epi64(_mm512_and_si512(window[r], index_mask), combined, 8);
                any_long |= longs[r] = _mm512_test_epi64_mask(entry[r], long_flag);
                window[r] = _mm512_srlv_epi64(window[r], _mm512_and_si512(entry[r], length_mask));
            }
            for (int r = 0; r < VECTOR_REGISTERS; r += 2) { /* sixteen values: the entries' high halves */
                const __m512i values = _mm512_permutex2var_epi32(entry[r], high_halves, entry[r + 1]);
                uint8_t *at = dst + 8 * (size_t)r * size;
                if (size == 4)
                    _mm512_storeu_si512(at, values);
                else if (size == 2)
                    _mm256_storeu_si256((__m256i *)at, _mm512_cvtepi32_epi16(values));
                else
                    _mm_storeu_si128((__m128i *)at, _mm512_cvtepi32_epi8(values));
            }
            if (__builtin_expect(any_long != 0, 0)) {
                uint64_t windows[VECTOR_LANES];
                for (int r = 0; r < VECTOR_REGISTERS; r++)
                    _mm512_storeu_si512(windows + 8 * r, window[r]);
                for (size_t l = 0; l < VECTOR_LANES; l++)
                    if (longs[l / 8] >> (l % 8) & 1) {
                        unsigned length;
                        memcpy(dst + l * size, next_symbol_long(t, &windows[l], &pos[q + l], &length), size);
                    }
                for (int r = 0; r < VECTOR_REGISTERS; r++)
                    window[r] = _mm512_loadu_si512(windows + 8 * r);
            }
        }
        for (int r = 0; r < VECTOR_REGISTERS; r++) { /* positions from the markers, as window_used */
            const __m512i start = _mm512_loadu_si512(pos + q + 8 * r);
            _mm512_storeu_si512(pos + q + 8 * r, _mm512_add_epi64(start, _mm512_sub_epi64(_mm512_lzcnt_epi64(window[r]), unused)));
        }
    }
    return q;
}
#endif

/* Lanes lo..hi-1 of a stream of `count` symbols in `lanes` lanes: symbol s of lane j goes to
 * out[(s * lanes + j) * size]; end[j] gets the bit where lane j stopped.
 *
 * Lanes are taken LANE_GROUP at a time, and within a group in lockstep chunks of a few steps:
 * each lane of the group decodes the symbols one window holds, then the next lane. The
 * lanes' chains are independent, so the CPU overlaps them (four at a time, instruction by
 * instruction), and each chunk writes whole rows of the output side by side. A lane's state
 * in the chunk is its window alone (the position is updated from the marker at the chunk's
 * end), so four lanes' state stays in registers. Always inlined with a constant `size`, so
 * each value size gets its own loop with plain loads and stores. */
static inline __attribute__((always_inline)) void huffman_lanes(const HuffmanTables *t, const int64_t *lane_start, size_t lanes, size_t count,
                                                                size_t lo, size_t hi, unsigned max_len, uint8_t *out, int64_t *end,
                                                                const size_t size)
{
    const size_t full = count / lanes, extra = count % lanes;
    const uint64_t mask = ((uint64_t)1 << t->primary_bits) - 1;
    const size_t per_window = symbols_per_window(t->primary_bits, max_len);
    const size_t row = lanes * size;
    const uint8_t *primary_len = t->primary_len, *primary_value = t->primary_value;
    uint64_t pos[LANE_GROUP];
    size_t lane_group = LANE_GROUP;
#ifdef HAVE_VECTOR_LANES
    if (size <= 4 && vector_lanes && t->primary_bits >= MAX_PRIMARY_BITS)
        lane_group = VECTOR_LANE_GROUP;
#endif
    for (size_t first = lo; first < hi; first += lane_group) {
        const size_t group = hi - first < lane_group ? hi - first : lane_group;
        for (size_t q = 0; q < group; q++)
            pos[q] = (uint64_t)lane_start[first + q];
        for (size_t step = 0; step < full; step += per_window) {
            const size_t steps = full - step < per_window ? full - step : per_window;
            uint8_t *base = out + (step * lanes + first) * size;
            size_t q = 0;
#ifdef HAVE_VECTOR_LANES
            if (size <= 4 && vector_lanes)
                q = vector_chunk(t, mask, pos, group, steps, base, row, size);
#endif
            for (; q + 4 <= group; q += 4) {
                uint64_t w0 = window_at(t, pos[q]), w1 = window_at(t, pos[q + 1]);
                uint64_t w2 = window_at(t, pos[q + 2]), w3 = window_at(t, pos[q + 3]);
                uint8_t *dst = base + q * size;
                if (size <= 4) { /* one load gives the length and the value: few live values, all in registers */
                    const uint64_t *combined = t->combined;
                    for (size_t k = steps; k; k--) {
                        combined_step(t, combined, mask, &w0, &pos[q], dst, size);
                        combined_step(t, combined, mask, &w1, &pos[q + 1], dst + size, size);
                        combined_step(t, combined, mask, &w2, &pos[q + 2], dst + 2 * size, size);
                        combined_step(t, combined, mask, &w3, &pos[q + 3], dst + 3 * size, size);
                        dst += row;
                    }
                } else {
                    for (size_t k = steps; k; k--) {
                        const uint64_t i0 = w0 & mask, i1 = w1 & mask, i2 = w2 & mask, i3 = w3 & mask;
                        memcpy(dst, next_symbol(t, &w0, &pos[q], primary_value + i0 * size, primary_len[i0]), size);
                        memcpy(dst + size, next_symbol(t, &w1, &pos[q + 1], primary_value + i1 * size, primary_len[i1]), size);
                        memcpy(dst + 2 * size, next_symbol(t, &w2, &pos[q + 2], primary_value + i2 * size, primary_len[i2]), size);
                        memcpy(dst + 3 * size, next_symbol(t, &w3, &pos[q + 3], primary_value + i3 * size, primary_len[i3]), size);
                        dst += row;
                    }
                }
                pos[q] += window_used(w0), pos[q + 1] += window_used(w1);
                pos[q + 2] += window_used(w2), pos[q + 3] += window_used(w3);
            }
            for (; q < group; q++) {
                uint64_t window = window_at(t, pos[q]);
                uint8_t *dst = base + q * size;
                for (size_t k = 0; k < steps; k++) {
                    const uint64_t index = window & mask;
                    memcpy(dst, next_symbol(t, &window, &pos[q], primary_value + index * size, primary_len[index]), size);
                    dst += row;
                }
                pos[q] += window_used(window);
            }
        }
        for (size_t q = 0; q < group; q++) {
            const size_t lane = first + q;
            if (lane < extra) { /* the lanes holding one more symbol */
                uint64_t window = window_at(t, pos[q]);
                const uint64_t index = window & mask;
                memcpy(out + (full * lanes + lane) * size, next_symbol(t, &window, &pos[q], primary_value + index * size, primary_len[index]), size);
                pos[q] += window_used(window);
            }
            end[lane] = (int64_t)pos[q];
        }
    }
}

/* GCC's straight-line vectoriser merges the four lanes' stores through the stack, which
 * costs more than it saves and pushes the windows out of registers. */
#if defined(__GNUC__) && !defined(__clang__)
#define SCALAR_STORES __attribute__((optimize("no-tree-slp-vectorize")))
#else
#define SCALAR_STORES
#endif

static SCALAR_STORES void huffman_lanes_any(const HuffmanTables *t, const int64_t *lane_start, size_t lanes, size_t count, size_t lo, size_t hi,
                              unsigned max_len, uint8_t *out, int64_t *end)
{
    switch (t->value_size) {
    case 1: huffman_lanes(t, lane_start, lanes, count, lo, hi, max_len, out, end, 1); break;
    case 2: huffman_lanes(t, lane_start, lanes, count, lo, hi, max_len, out, end, 2); break;
    case 4: huffman_lanes(t, lane_start, lanes, count, lo, hi, max_len, out, end, 4); break;
    default: huffman_lanes(t, lane_start, lanes, count, lo, hi, max_len, out, end, 8); break;
    }
}

/* The combined table from the primary ones (value sizes up to 4), one loop per value size:
 * with a size known only at run time each entry's copy was a call, and building the wide
 * tables of a bfloat16 load's 87 blocks took a twentieth of it. */
static inline __attribute__((always_inline)) void fill_combined_sized(uint64_t *combined, const uint8_t *lengths, const uint8_t *values, size_t entries,
                                                                      const size_t size)
{
    for (size_t k = 0; k < entries; k++) {
        uint32_t value = 0;
        memcpy(&value, values + k * size, size);
        combined[k] = (uint64_t)value << 32 | (lengths[k] ? lengths[k] : COMBINED_LONG);
    }
}

static void fill_combined(uint64_t *combined, const uint8_t *lengths, const uint8_t *values, size_t entries, size_t size)
{
    switch (size) {
    case 1: fill_combined_sized(combined, lengths, values, entries, 1); break;
    case 2: fill_combined_sized(combined, lengths, values, entries, 2); break;
    default: fill_combined_sized(combined, lengths, values, entries, 4); break;
    }
}

static PyObject *huffman_decode(PyObject *self, PyObject *args)
{
    Py_buffer payload, lane_start, primary_len, primary_value, long_start, long_len, long_value, out, end;
    Py_ssize_t count, lanes, lo, hi, value_size;
    unsigned int primary_bits, max_len;
    if (!PyArg_ParseTuple(args, "y*y*nnnnIIy*y*y*y*y*nw*w*", &payload, &lane_start, &count, &lanes, &lo, &hi, &primary_bits, &max_len,
                          &primary_len, &primary_value, &long_start, &long_len, &long_value, &value_size, &out, &end))
        return NULL;
    PyObject *result = NULL;
    const char *problem = NULL;
    size_t long_count = (size_t)long_len.len;
    if (!valid_item_size(value_size))
        problem = "value size must be 1, 2, 4 or 8";
    else if (max_len < 1 || max_len > MAX_CODE_BITS || primary_bits < 1 || primary_bits > MAX_PRIMARY_BITS || primary_bits > max_len)
        problem = "table widths out of range";
    else if (primary_len.len != ((Py_ssize_t)1 << primary_bits) || primary_value.len != primary_len.len * value_size)
        problem = "primary tables do not match their width";
    else if (long_count < 1 || long_start.len != (Py_ssize_t)(4 * long_count) || long_value.len != (Py_ssize_t)long_count * value_size)
        problem = "canonical tables do not match";
    else if (lanes < 1 || count < lanes || lo < 0 || lo > hi || hi > lanes)
        problem = "lane range out of bounds";
    else if (lane_start.len != lanes * 8 || end.len != lanes * 8)
        problem = "lane arrays do not match the lane count";
    else if (out.len / value_size < count)
        problem = "output is smaller than the symbol count";
    if (!problem) { /* the tables' lengths index and shift: each must be a valid code length */
        const uint8_t *lengths = primary_len.buf;
        for (Py_ssize_t k = 0; k < primary_len.len && !problem; k++)
            if (lengths[k] > primary_bits)
                problem = "primary table length out of range";
        const uint8_t *longs = long_len.buf;
        const uint32_t *starts = long_start.buf;
        for (size_t k = 0; k < long_count && !problem; k++)
            if (longs[k] < 1 || longs[k] > max_len || starts[k] >= (1u << MAX_CODE_BITS) || (k ? starts[k] <= starts[k - 1] : starts[k] != 0))
                problem = "canonical table out of range";
        const int64_t *starts64 = lane_start.buf;
        for (Py_ssize_t j = 0; j < lanes && !problem; j++)
            if (starts64[j] < 0 || starts64[j] > ((int64_t)1 << 60))
                problem = "lane start out of range";
    }
    if (problem) {
        misuse(problem);
    } else {
        HuffmanTables t = {payload.buf, (size_t)payload.len, primary_bits, primary_len.buf, primary_value.buf,
                           long_count, long_start.buf, long_len.buf, long_value.buf, (size_t)value_size, NULL};
        uint64_t *combined = NULL;
        if (value_size <= 4) {
            combined = PyMem_RawMalloc(sizeof(uint64_t) << primary_bits);
            if (!combined)
                goto release;
            t.combined = combined;
        }
        Py_BEGIN_ALLOW_THREADS
        if (combined)
            fill_combined(combined, primary_len.buf, primary_value.buf, (size_t)1 << primary_bits, (size_t)value_size);
        huffman_lanes_any(&t, lane_start.buf, (size_t)lanes, (size_t)count, (size_t)lo, (size_t)hi, max_len, out.buf, end.buf);
        Py_END_ALLOW_THREADS
        PyMem_RawFree(combined);
        result = Py_NewRef(Py_None);
    }
release:
    if (!result && !PyErr_Occurred())
        PyErr_NoMemory();
    RELEASE_BUFFERS(&payload, &lane_start, &primary_len, &primary_value, &long_start, &long_len, &long_value, &out, &end);
    return result;
}

/* The decode tables of a canonical code, from its lengths in canonical order (ascending;
 * codes are assigned in that order, spec 7.3.2): per entry of the primary table (indexed by
 * the next primary_bits bits, first bit lowest) the length of the code they start with (0:
 * longer) and its value, and every code left-justified to 20 bits. Built here rather than in
 * numpy: a float_split block of a quarter million heads spent a tenth of its decoding time
 * on them. Returns False unless the lengths make a complete code (a checked plan always
 * does), so no table entry is written twice or left out. */
static PyObject *huffman_tables(PyObject *self, PyObject *args)
{
    Py_buffer lengths_buf, values_buf, primary_len_buf, primary_value_buf, long_start_buf;
    Py_ssize_t size;
    unsigned int primary_bits;
    if (!PyArg_ParseTuple(args, "y*y*nIw*w*w*", &lengths_buf, &values_buf, &size, &primary_bits, &primary_len_buf, &primary_value_buf,
                          &long_start_buf))
        return NULL;
    PyObject *result = NULL;
    const size_t n = (size_t)lengths_buf.len;
    if (!valid_item_size(size) || primary_bits < 1 || primary_bits > MAX_PRIMARY_BITS || values_buf.len != (Py_ssize_t)n * size ||
        primary_len_buf.len != ((Py_ssize_t)1 << primary_bits) || primary_value_buf.len != size * primary_len_buf.len ||
        long_start_buf.len != (Py_ssize_t)(4 * n))
        misuse("huffman_tables arguments do not match");
    else {
        const uint8_t *lengths = lengths_buf.buf, *values = values_buf.buf;
        uint8_t *primary_len = primary_len_buf.buf, *primary_value = primary_value_buf.buf;
        uint32_t *long_start = long_start_buf.buf;
        const uint32_t full = (uint32_t)1 << MAX_CODE_BITS;
        uint32_t code = 0; /* the next code, left-justified, first bit as most significant */
        int complete = 1;
        memset(primary_len, 0, (size_t)primary_len_buf.len);
        memset(primary_value, 0, (size_t)primary_value_buf.len);
        for (size_t k = 0; k < n && complete; k++) {
            const unsigned length = lengths[k];
            if (length < 1 || length > MAX_CODE_BITS || (k && length < lengths[k - 1]) ||
                full - code < ((uint32_t)1 << (MAX_CODE_BITS - length))) {
                complete = 0;
                break;
            }
            long_start[k] = code;
            if (length <= primary_bits) { /* every primary index the code begins */
                const uint32_t first = code >> (MAX_CODE_BITS - primary_bits), span = (uint32_t)1 << (primary_bits - length);
                for (uint32_t i = first; i < first + span; i++) {
                    const uint32_t index = (((uint32_t)reverse10[i & 1023] << 10) | reverse10[i >> 10]) >> (MAX_CODE_BITS - primary_bits);
                    primary_len[index] = (uint8_t)length;
                    memcpy(primary_value + index * (size_t)size, values + k * (size_t)size, (size_t)size);
                }
            }
            code += (uint32_t)1 << (MAX_CODE_BITS - length);
        }
        result = PyBool_FromLong(complete && code == full);
    }
    RELEASE_BUFFERS(&lengths_buf, &values_buf, &primary_len_buf, &primary_value_buf, &long_start_buf);
    return result;
}

/* ------------------------------------------------------------------ Huffman encode */

static inline unsigned read_symbol(const uint8_t *symbols, size_t size, size_t i)
{
    if (size == 1)
        return symbols[i];
    uint16_t s;
    memcpy(&s, symbols + 2 * i, 2);
    return s;
}

/* OR the low `bytes` bytes of `bits` into dst[at..]; bytes past len are dropped. */
static inline void or_bytes(uint8_t *dst, size_t len, size_t at, uint64_t bits, unsigned bytes)
{
    for (unsigned k = 0; k < bytes && at + k < len; k++)
        dst[at + k] |= (uint8_t)(bits >> (8 * k));
}

/* Symbols in the order of the stream (symbol i in lane i % lanes); codes bit-reversed so they
 * can be written LSB-first. Returns the payload as bytes and fills lane_bits. */
static PyObject *huffman_encode(PyObject *self, PyObject *args)
{
    Py_buffer symbols, codes, lengths, lane_bits_buf;
    Py_ssize_t symbol_size, lanes;
    if (!PyArg_ParseTuple(args, "y*ny*y*nw*", &symbols, &symbol_size, &codes, &lengths, &lanes, &lane_bits_buf))
        return NULL;
    PyObject *result = NULL;
    const char *problem = NULL;
    size_t table = (size_t)lengths.len;
    size_t count = symbol_size > 0 ? (size_t)(symbols.len / symbol_size) : 0;
    if (symbol_size != 1 && symbol_size != 2)
        problem = "symbols must be 1 or 2 bytes";
    else if (symbols.len % symbol_size || lanes < 1 || (size_t)lanes > count)
        problem = "lane count out of range";
    else if (codes.len != (Py_ssize_t)(4 * table) || lane_bits_buf.len != lanes * 8)
        problem = "tables or lane array do not match";
    else {
        const uint8_t *len = lengths.buf;
        for (size_t k = 0; k < table && !problem; k++)
            if (len[k] > MAX_CODE_BITS)
                problem = "code length out of range";
    }
    if (problem) {
        misuse(problem);
        goto done;
    }
    const uint8_t *sym = symbols.buf, *len = lengths.buf;
    const uint32_t *code = codes.buf;
    int64_t *lane_bits = lane_bits_buf.buf;
    size_t n_lanes = (size_t)lanes;
    int bad_symbol = 0;
    Py_BEGIN_ALLOW_THREADS
    memset(lane_bits, 0, n_lanes * 8);
    for (size_t i = 0, j = 0; i < count; i++) { /* symbol i is in lane i % lanes */
        unsigned s = read_symbol(sym, (size_t)symbol_size, i);
        if (s >= table) {
            bad_symbol = 1;
            break;
        }
        lane_bits[j] += len[s];
        if (++j == n_lanes)
            j = 0;
    }
    Py_END_ALLOW_THREADS
    if (bad_symbol) {
        misuse("symbol outside the code table");
        goto done;
    }
    uint64_t total = 0;
    for (size_t j = 0; j < n_lanes; j++)
        total += (uint64_t)lane_bits[j];
    size_t nbytes = (size_t)((total + 7) / 8);
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)nbytes);
    if (!result)
        goto done;
    uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(result);
    Py_BEGIN_ALLOW_THREADS
    memset(dst, 0, nbytes);
    const size_t full = count / n_lanes, extra = count % n_lanes;
    uint64_t acc[LANE_GROUP];
    unsigned held[LANE_GROUP];
    size_t at[LANE_GROUP];
    uint64_t start = 0;
    for (size_t first = 0; first < n_lanes; first += LANE_GROUP) {
        size_t group = n_lanes - first < LANE_GROUP ? n_lanes - first : LANE_GROUP;
        for (size_t q = 0; q < group; q++) { /* the lane's first byte may be shared: start mid-byte */
            at[q] = (size_t)(start >> 3);
            held[q] = (unsigned)(start & 7);
            acc[q] = 0;
            start += (uint64_t)lane_bits[first + q];
        }
        size_t steps = full + (first < extra ? 1 : 0);
        for (size_t step = 0; step < steps; step++) {
            const size_t base = step * n_lanes + first;
            for (size_t q = 0; q < group; q++) {
                if (base + q >= count)
                    break;
                unsigned s = read_symbol(sym, (size_t)symbol_size, base + q);
                acc[q] |= (uint64_t)code[s] << held[q];
                held[q] += len[s];
                if (held[q] >= 32) {
                    or_bytes(dst, nbytes, at[q], acc[q], 4);
                    at[q] += 4;
                    acc[q] >>= 32;
                    held[q] -= 32;
                }
            }
        }
        for (size_t q = 0; q < group; q++)
            or_bytes(dst, nbytes, at[q], acc[q], (held[q] + 7) / 8);
    }
    Py_END_ALLOW_THREADS
done:
    RELEASE_BUFFERS(&symbols, &codes, &lengths, &lane_bits_buf);
    return result;
}

/* Counts of each symbol (int64, `bins` of them); symbols >= bins are counted nowhere and
 * make the call return False. */
static PyObject *histogram(PyObject *self, PyObject *args)
{
    Py_buffer symbols, counts;
    Py_ssize_t symbol_size;
    if (!PyArg_ParseTuple(args, "y*nw*", &symbols, &symbol_size, &counts))
        return NULL;
    PyObject *result = NULL;
    if ((symbol_size != 1 && symbol_size != 2) || symbols.len % symbol_size || counts.len % 8) {
        misuse("histogram arguments do not match");
    } else {
        size_t count = (size_t)(symbols.len / symbol_size), bins = (size_t)(counts.len / 8), outside = 0;
        int64_t *c = counts.buf;
        const uint8_t *sym = symbols.buf;
        Py_BEGIN_ALLOW_THREADS
        memset(c, 0, bins * 8);
        if (symbol_size == 1 && bins >= 256) {
            int64_t part[4][256]; /* four tables: no store-to-load stall on runs of one symbol */
            memset(part, 0, sizeof part);
            size_t i = 0;
            for (; i + 4 <= count; i += 4) {
                part[0][sym[i]]++;
                part[1][sym[i + 1]]++;
                part[2][sym[i + 2]]++;
                part[3][sym[i + 3]]++;
            }
            for (; i < count; i++)
                part[0][sym[i]]++;
            for (size_t b = 0; b < 256; b++)
                c[b] = part[0][b] + part[1][b] + part[2][b] + part[3][b];
        } else {
            for (size_t i = 0; i < count; i++) {
                unsigned s = read_symbol(sym, (size_t)symbol_size, i);
                if (s < bins)
                    c[s]++;
                else
                    outside++;
            }
        }
        Py_END_ALLOW_THREADS
        result = PyBool_FromLong(outside == 0);
    }
    RELEASE_BUFFERS(&symbols, &counts);
    return result;
}

/* ------------------------------------------------------------------ bit packing */

/* count symbols of `width` bits (1..64), LSB-first, into items of out_size bytes. */
static PyObject *unpack(PyObject *self, PyObject *args)
{
    Py_buffer data, out;
    Py_ssize_t count, width, out_size;
    if (!PyArg_ParseTuple(args, "y*nnw*n", &data, &count, &width, &out, &out_size))
        return NULL;
    PyObject *result = NULL;
    if (width < 1 || width > 64 || !valid_item_size(out_size) || count < 0 || out.len / out_size < count)
        misuse("unpack arguments do not match");
    else {
        const uint8_t *src = data.buf;
        size_t len = (size_t)data.len;
        uint8_t *dst = out.buf;
        uint64_t mask = width == 64 ? ~(uint64_t)0 : (((uint64_t)1 << width) - 1);
        Py_BEGIN_ALLOW_THREADS
        for (size_t i = 0; i < (size_t)count; i++) {
            uint64_t bit = (uint64_t)i * (uint64_t)width;
            unsigned shift = (unsigned)(bit & 7);
            uint64_t value = load64(src, len, bit >> 3) >> shift;
            if (shift + (unsigned)width > 64) /* wider than what one load holds after the shift */
                value |= load64(src, len, (bit >> 3) + 8) << (64 - shift);
            value &= mask;
            switch (out_size) {
            case 1: dst[i] = (uint8_t)value; break;
            case 2: { uint16_t v = (uint16_t)value; memcpy(dst + 2 * i, &v, 2); } break;
            case 4: { uint32_t v = (uint32_t)value; memcpy(dst + 4 * i, &v, 4); } break;
            default: memcpy(dst + 8 * i, &value, 8); break;
            }
        }
        Py_END_ALLOW_THREADS
        result = Py_NewRef(Py_None);
    }
    RELEASE_BUFFERS(&data, &out);
    return result;
}

/* Items of in_size bytes, each below 2**width, packed LSB-first into bytes. */
static PyObject *pack(PyObject *self, PyObject *args)
{
    Py_buffer values;
    Py_ssize_t in_size, width;
    if (!PyArg_ParseTuple(args, "y*nn", &values, &in_size, &width))
        return NULL;
    PyObject *result = NULL;
    if (width < 1 || width > 64 || !valid_item_size(in_size) || values.len % in_size) {
        misuse("pack arguments do not match");
        goto done;
    }
    size_t count = (size_t)(values.len / in_size);
    size_t nbytes = (size_t)(((uint64_t)count * (uint64_t)width + 7) / 8);
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)nbytes);
    if (!result)
        goto done;
    uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(result);
    const uint8_t *src = values.buf;
    uint64_t mask = width == 64 ? ~(uint64_t)0 : (((uint64_t)1 << width) - 1);
    Py_BEGIN_ALLOW_THREADS
    memset(dst, 0, nbytes);
    uint64_t acc = 0; /* bits not yet written, `held` of them */
    unsigned held = 0;
    size_t at = 0;
    for (size_t i = 0; i < count; i++) {
        uint64_t v = 0;
        memcpy(&v, src + i * (size_t)in_size, (size_t)in_size);
        v &= mask;
        acc |= v << held;
        unsigned spill = held + (unsigned)width > 64 ? held + (unsigned)width - 64 : 0;
        uint64_t high = spill ? v >> (64 - held) : 0; /* the bits that did not fit in acc */
        held += (unsigned)width;
        while (held >= 8) {
            if (at < nbytes)
                dst[at] = (uint8_t)acc;
            at++;
            acc = (acc >> 8) | (held > 64 ? (high << 56) : 0);
            if (held > 64)
                high >>= 8;
            held -= 8;
        }
    }
    if (held && at < nbytes)
        dst[at] = (uint8_t)acc;
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&values);
    return result;
}

/* ------------------------------------------------------------------ gather and scatter */

/* gather's loop, always inlined with constant sizes so each pair of symbol and value sizes
 * gets its own (the generic loop ran at 1.4 ns an element, 0.56 so; it had been a twentieth
 * of a float16 load's time). */
static inline __attribute__((always_inline)) unsigned gather_loop(const uint8_t *sym, size_t symbol_size, const uint8_t *val, size_t table,
                                                                 uint8_t *dst, size_t size, size_t count)
{
    unsigned largest = 0;
    for (size_t i = 0; i < count; i++) {
        const unsigned s = read_symbol(sym, symbol_size, i);
        largest = s > largest ? s : largest;
        copy_value(dst + i * size, val + (s < table ? s : 0) * size, size);
    }
    return largest;
}

#define GATHER_SIZES(symbol_size)                                                                                                          \
    switch (size) {                                                                                                                        \
    case 1: largest = gather_loop(sym, symbol_size, val, table, dst, 1, count); break;                                                     \
    case 2: largest = gather_loop(sym, symbol_size, val, table, dst, 2, count); break;                                                     \
    case 4: largest = gather_loop(sym, symbol_size, val, table, dst, 4, count); break;                                                     \
    default: largest = gather_loop(sym, symbol_size, val, table, dst, 8, count); break;                                                    \
    }

/* out[i] = values[symbols[i]]; a symbol past the table writes values[0]. Returns the largest
 * symbol, for the caller's alphabet check. */
static PyObject *gather(PyObject *self, PyObject *args)
{
    Py_buffer symbols, values, out;
    Py_ssize_t symbol_size, value_size;
    if (!PyArg_ParseTuple(args, "y*ny*nw*", &symbols, &symbol_size, &values, &value_size, &out))
        return NULL;
    PyObject *result = NULL;
    size_t count = symbol_size > 0 ? (size_t)(symbols.len / symbol_size) : 0;
    if ((symbol_size != 1 && symbol_size != 2) || !valid_item_size(value_size) || values.len < value_size || values.len % value_size ||
        out.len / value_size < (Py_ssize_t)count)
        misuse("gather arguments do not match");
    else {
        size_t table = (size_t)(values.len / value_size), size = (size_t)value_size;
        const uint8_t *sym = symbols.buf, *val = values.buf;
        uint8_t *dst = out.buf;
        unsigned largest = 0;
        Py_BEGIN_ALLOW_THREADS
        if (symbol_size == 1) {
            GATHER_SIZES(1)
        } else {
            GATHER_SIZES(2)
        }
        Py_END_ALLOW_THREADS
        result = PyLong_FromUnsignedLong(largest);
    }
    RELEASE_BUFFERS(&symbols, &values, &out);
    return result;
}

/* quant_sparse: entry i lands at p_i = p_{i-1} + gap_i + 1 (p_{-1} = -1) with the value of its
 * code. Writes stop at the end of `out`; the caller has checked the last position. */
static PyObject *scatter(PyObject *self, PyObject *args)
{
    Py_buffer gaps, codes, values, out;
    Py_ssize_t gap_size, code_size, value_size;
    if (!PyArg_ParseTuple(args, "y*ny*ny*nw*", &gaps, &gap_size, &codes, &code_size, &values, &value_size, &out))
        return NULL;
    PyObject *result = NULL;
    size_t count = gap_size > 0 ? (size_t)(gaps.len / gap_size) : 0;
    if ((gap_size != 1 && gap_size != 2) || (code_size != 1 && code_size != 2) || !valid_item_size(value_size) ||
        codes.len != (Py_ssize_t)count * code_size || values.len < value_size || values.len % value_size || out.len % value_size)
        misuse("scatter arguments do not match");
    else {
        size_t table = (size_t)(values.len / value_size), size = (size_t)value_size, numel = (size_t)(out.len / value_size);
        const uint8_t *g = gaps.buf, *c = codes.buf, *val = values.buf;
        uint8_t *dst = out.buf;
        uint64_t position = 0; /* p_i + 1 */
        Py_BEGIN_ALLOW_THREADS
        for (size_t i = 0; i < count; i++) {
            position += (uint64_t)read_symbol(g, (size_t)gap_size, i) + 1;
            if (position > numel)
                break;
            unsigned s = read_symbol(c, (size_t)code_size, i);
            copy_value(dst + (position - 1) * size, val + (s < table ? s : 0) * size, size);
        }
        Py_END_ALLOW_THREADS
        result = Py_NewRef(Py_None);
    }
    RELEASE_BUFFERS(&gaps, &codes, &values, &out);
    return result;
}

/* ------------------------------------------------------------------ float_split */

/* The planes of the rest merged into element bits that already hold their heads (decoded
 * through a table of head << low): out[i] = heads[i] | sign << sign_shift | low mantissa.
 * A plane is either its decoded symbols (one byte each) or, stored bit-packed, its packed
 * body read in place. Always inlined with a constant plane count and item size. */
typedef struct {
    const uint8_t *data;
    size_t len;
    unsigned width;
    int packed;
} Plane;

static inline unsigned plane_symbol(const Plane *plane, size_t i)
{
    if (!plane->packed || plane->width == 8)
        return i < plane->len ? plane->data[i] : 0;
    uint64_t bit = (uint64_t)i * plane->width;
    size_t at = (size_t)(bit >> 3);
    unsigned pair = at < plane->len ? plane->data[at] : 0;
    if (at + 1 < plane->len)
        pair |= (unsigned)plane->data[at + 1] << 8;
    return (pair >> (bit & 7)) & ((1u << plane->width) - 1);
}

/* Symbols first .. first+count-1 (first a multiple of 8) of a packed plane of `width` bits as
 * bytes: eight symbols fill exactly `width` bytes. Inlined with a constant width. */
static inline __attribute__((always_inline)) void unpack_bytes(const uint8_t *data, size_t len, size_t first, size_t count, uint8_t *dst,
                                                               const unsigned width)
{
    const uint64_t mask = ((uint64_t)1 << width) - 1;
    for (size_t g = 0; g < count; g += 8) {
        const size_t at = (first + g) / 8 * width;
        uint64_t word = 0;
        if (at < len && len - at >= 8)
            memcpy(&word, data + at, 8);
        else
            for (unsigned b = 0; b < width && at + b < len; b++)
                word |= (uint64_t)data[at + b] << (8 * b);
        for (unsigned e = 0; e < 8; e++)
            dst[g + e] = (uint8_t)((word >> (e * width)) & mask);
    }
}

#ifdef HAVE_VECTOR_LANES
/* unpack_bytes with AVX-512 VBMI (chosen at import with the vector loop): 64 symbols at a
 * time from the 8 x width bytes that hold them, by one byte permutation (each qword of the
 * result gets the `width` bytes its eight symbols start in) and one multishift (each byte
 * of a qword the 8 bits from its symbol's first bit on), then a mask. Reads past the plane
 * are masked off (zero, as unpack_bytes reads them); `dst` must have room for `count`
 * rounded up to 64. bfloat16's 6-bit planes unpacked in a tenth of the time. */
#define UNPACK_TARGET __attribute__((target("avx512f,avx512bw,avx512vbmi")))
static int vector_unpack = 0;
static uint8_t unpack_permute[8][64], unpack_shift[8][64]; /* by width, 1..7 */

static void unpack_tables(void)
{
    for (unsigned width = 1; width < 8; width++)
        for (unsigned q = 0; q < 8; q++)
            for (unsigned j = 0; j < 8; j++) {
                unpack_permute[width][8 * q + j] = (uint8_t)(width * q + j);
                unpack_shift[width][8 * q + j] = (uint8_t)(width * j);
            }
}

UNPACK_TARGET static void unpack_bytes_vector(const uint8_t *data, size_t len, size_t first, size_t count, uint8_t *dst, unsigned width)
{
    const __m512i permute = _mm512_loadu_si512(unpack_permute[width]), shift = _mm512_loadu_si512(unpack_shift[width]);
    const __m512i mask = _mm512_set1_epi8((char)((1u << width) - 1));
    for (size_t g = 0; g < count; g += 64) {
        const size_t at = (first + g) / 8 * width;
        const size_t left = at < len ? len - at : 0, take = left < 8 * width ? left : 8 * width; /* at most 56 */
        const uint8_t *from = take ? data + at : data;
#ifdef __SANITIZE_ADDRESS__
        if (take) /* AddressSanitizer does not see into masked loads */
            (void)((const volatile uint8_t *)from)[0], (void)((const volatile uint8_t *)from)[take - 1];
#endif
        const __m512i bytes = _mm512_maskz_loadu_epi8(((__mmask64)1 << take) - 1, from);
        const __m512i symbols = _mm512_multishift_epi64_epi8(shift, _mm512_permutexvar_epi8(permute, bytes));
        _mm512_storeu_si512(dst + g, _mm512_and_si512(symbols, mask));
    }
}
#endif

static void unpack_bytes_any(const uint8_t *data, size_t len, size_t first, size_t count, uint8_t *dst, unsigned width)
{
#ifdef HAVE_VECTOR_LANES
    if (vector_unpack) {
        unpack_bytes_vector(data, len, first, count, dst, width);
        return;
    }
#endif
    switch (width) {
    case 1: unpack_bytes(data, len, first, count, dst, 1); break;
    case 2: unpack_bytes(data, len, first, count, dst, 2); break;
    case 3: unpack_bytes(data, len, first, count, dst, 3); break;
    case 4: unpack_bytes(data, len, first, count, dst, 4); break;
    case 5: unpack_bytes(data, len, first, count, dst, 5); break;
    case 6: unpack_bytes(data, len, first, count, dst, 6); break;
    default: unpack_bytes(data, len, first, count, dst, 7); break;
    }
}

#define MERGE_CHUNK 256

/* In chunks of MERGE_CHUNK elements: packed planes narrower than a byte are unpacked to
 * bytes first, then one simple loop (vectorised by the compiler: the shifts are the same for
 * every element) ORs the rest into the element bits. Symbols past a plane's end read zero.
 * `heads` may be `out` itself (the heads decoded in place): each element is read, then
 * written, at the same index. */
static inline __attribute__((always_inline)) void merge_planes(const uint8_t *heads, const Plane *planes, size_t count,
                                                               uint8_t *out, unsigned low, unsigned sign_shift, const size_t nplanes,
                                                               const size_t size)
{
    uint8_t scratch[7][MERGE_CHUNK];
    unsigned shift[7];
    unsigned below = 0;
    for (size_t k = nplanes; k-- > 0;) { /* the last plane holds the lowest bits of the rest */
        shift[k] = below;
        below += planes[k].width;
    }
    for (size_t first = 0; first < count; first += MERGE_CHUNK) {
        const size_t n = count - first < MERGE_CHUNK ? count - first : MERGE_CHUNK;
        const uint8_t *src[7];
        for (size_t k = 0; k < nplanes; k++) {
            const Plane *plane = &planes[k];
            if ((!plane->packed || plane->width == 8) && first + n <= plane->len) {
                src[k] = plane->data + first; /* bytes as they are */
            } else if (plane->packed && plane->width < 8) {
                unpack_bytes_any(plane->data, plane->len, first, (n + 7) / 8 * 8, scratch[k], plane->width);
                src[k] = scratch[k];
            } else {
                for (size_t i = 0; i < n; i++)
                    scratch[k][i] = (uint8_t)plane_symbol(plane, first + i);
                src[k] = scratch[k];
            }
        }
        if (size == 2) {
            for (size_t i = 0; i < n; i++) {
                uint32_t rest = 0;
                for (size_t k = 0; k < nplanes; k++)
                    rest |= (uint32_t)src[k][i] << shift[k];
                uint16_t h;
                memcpy(&h, heads + 2 * (first + i), 2);
                h |= (uint16_t)(((rest >> low) << sign_shift) | (rest & ((1u << low) - 1)));
                memcpy(out + 2 * (first + i), &h, 2);
            }
        } else if (size == 4) {
            for (size_t i = 0; i < n; i++) {
                uint32_t rest = 0;
                for (size_t k = 0; k < nplanes; k++)
                    rest |= (uint32_t)src[k][i] << shift[k];
                uint32_t h;
                memcpy(&h, heads + 4 * (first + i), 4);
                h |= ((rest >> low) << sign_shift) | (rest & (uint32_t)(((uint64_t)1 << low) - 1));
                memcpy(out + 4 * (first + i), &h, 4);
            }
        } else {
            for (size_t i = 0; i < n; i++) {
                uint64_t rest = 0;
                for (size_t k = 0; k < nplanes; k++)
                    rest |= (uint64_t)src[k][i] << shift[k];
                uint64_t h;
                memcpy(&h, heads + 8 * (first + i), 8);
                h |= ((rest >> low) << sign_shift) | (rest & (((uint64_t)1 << low) - 1));
                memcpy(out + 8 * (first + i), &h, 8);
            }
        }
    }
}

#define MERGE_CASE(n)                                                                                  \
    case n:                                                                                            \
        if (size == 2)                                                                                 \
            merge_planes(heads, planes, count, out, low, sign_shift, n, 2);                            \
        else if (size == 4)                                                                            \
            merge_planes(heads, planes, count, out, low, sign_shift, n, 4);                            \
        else                                                                                           \
            merge_planes(heads, planes, count, out, low, sign_shift, n, 8);                            \
        break;

/* The layouts the encoder writes (spec 6.6.4: float16 with h = 2, planes of 8 and 1 bits;
 * bfloat16 with h = 1, one of 7; float32 with h = 0, three of 8) get loops of their own with
 * the fields' shifts known at compile time: float16's merge took 27% less time (1.91 -> 1.40
 * ms on MiniLM's embedding, one core; its whole load 4-5% less), bfloat16's 12% less. Every
 * other layout takes the general loops below. */
#define MERGE_ENCODER_LAYOUTS                                                                                   \
    if (size == 2 && nplanes == 2 && low == 8 && planes[0].width == 8 && planes[1].width == 1) {                \
        merge_planes(heads, planes, count, out, 8, 15, 2, 2);                                                   \
        return;                                                                                                 \
    }                                                                                                           \
    if (size == 2 && nplanes == 1 && low == 6) {                                                                \
        merge_planes(heads, planes, count, out, 6, 15, 1, 2);                                                   \
        return;                                                                                                 \
    }                                                                                                           \
    if (size == 4 && nplanes == 3 && low == 23 && planes[0].width == 8 && planes[1].width == 8) {               \
        merge_planes(heads, planes, count, out, 23, 31, 3, 4);                                                  \
        return;                                                                                                 \
    }

#define MERGE_ANY                                                                                      \
    MERGE_ENCODER_LAYOUTS                                                                              \
    switch (nplanes) {                                                                                 \
        MERGE_CASE(1)                                                                                  \
        MERGE_CASE(2)                                                                                  \
        MERGE_CASE(3)                                                                                  \
        MERGE_CASE(4)                                                                                  \
        MERGE_CASE(5)                                                                                  \
        MERGE_CASE(6)                                                                                  \
        MERGE_CASE(7)                                                                                  \
    default: break;                                                                                    \
    }

static void merge_any(const uint8_t *heads, const Plane *planes, size_t nplanes, size_t count, uint8_t *out, unsigned low, unsigned sign_shift,
                      size_t size)
{
    MERGE_ANY
}

#ifdef HAVE_VECTOR_LANES
/* The same loops compiled for AVX-512 (chosen with the vector unpacking): the merge's
 * shifts and ORs on 32 or 16 elements an instruction. */
UNPACK_TARGET static void merge_any_vector(const uint8_t *heads, const Plane *planes, size_t nplanes, size_t count, uint8_t *out, unsigned low,
                                           unsigned sign_shift, size_t size)
{
    MERGE_ANY
}
#endif

static PyObject *float_split_merge(PyObject *self, PyObject *args)
{
    Py_buffer heads, out, widths_buf, packed_buf;
    PyObject *plane_objects;
    Py_ssize_t item_size, low, sign_shift;
    if (!PyArg_ParseTuple(args, "y*O!y*y*w*nnn", &heads, &PyTuple_Type, &plane_objects, &widths_buf, &packed_buf, &out, &item_size, &low,
                          &sign_shift))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t nplanes = PyTuple_GET_SIZE(plane_objects), got = 0;
    Py_buffer buffers[7];
    Plane planes[7];
    const char *problem = NULL;
    size_t count = item_size > 0 ? (size_t)(out.len / item_size) : 0;
    if ((item_size != 2 && item_size != 4 && item_size != 8) || out.len % item_size || heads.len != out.len)
        problem = "float_split merge sizes do not match";
    else if (nplanes < 1 || nplanes > 7 || widths_buf.len != nplanes || packed_buf.len != nplanes)
        problem = "float_split merge planes do not match";
    else if (low < 0 || sign_shift < 1 || sign_shift != 8 * item_size - 1 || low >= sign_shift)
        problem = "float_split merge fields do not match the item size";
    else {
        const uint8_t *w = widths_buf.buf;
        Py_ssize_t total = 0;
        for (Py_ssize_t k = 0; k < nplanes; k++) {
            if (w[k] < 1 || w[k] > 8)
                problem = "plane width out of range";
            total += w[k];
        }
        if (!problem && total != low + 1)
            problem = "plane widths do not add up to the rest";
    }
    for (; !problem && got < nplanes; got++) {
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(plane_objects, got), &buffers[got], PyBUF_SIMPLE) < 0)
            goto release;
        const uint8_t *w = widths_buf.buf, *packed = packed_buf.buf;
        planes[got] = (Plane){buffers[got].buf, (size_t)buffers[got].len, w[got], packed[got] != 0};
        size_t need = packed[got] ? (size_t)(((uint64_t)count * w[got] + 7) / 8) : count;
        if ((size_t)buffers[got].len != need)
            problem = "a plane's length does not match the element count";
    }
    if (problem) {
        misuse(problem);
        goto release;
    }
    Py_BEGIN_ALLOW_THREADS
#ifdef HAVE_VECTOR_LANES
    if (vector_unpack)
        merge_any_vector(heads.buf, planes, (size_t)nplanes, count, out.buf, (unsigned)low, (unsigned)sign_shift, (size_t)item_size);
    else
#endif
        merge_any(heads.buf, planes, (size_t)nplanes, count, out.buf, (unsigned)low, (unsigned)sign_shift, (size_t)item_size);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
release:
    for (Py_ssize_t k = 0; k < got; k++)
        PyBuffer_Release(&buffers[k]);
    RELEASE_BUFFERS(&heads, &widths_buf, &packed_buf, &out);
    return result;
}

/* ------------------------------------------------------------------ output pages */

/* Memory for a decoded tensor, mapped for it alone. Fresh process memory is cheap to map
 * but dear to touch: on this project's VMs a first write to a 4 KiB page costs about 2 us,
 * which made page faults a third of loading a model of 2 MiB tensors. So an output of at
 * least a huge page gets a mapping aligned to 2 MiB and marked for transparent huge pages
 * (one fault per 2 MiB where the kernel allows them), and a smaller one is populated in one
 * call. The mapping ends where the output does, so the memory held is what numpy's would
 * be; it is unmapped when the last array using it goes. The pages come zeroed. */
#define HUGE_PAGE ((size_t)2 << 20)

typedef struct {
    PyObject_HEAD
    void *start;
    size_t length;
} Pages;

static void pages_dealloc(PyObject *self)
{
#ifdef __linux__
    Pages *pages = (Pages *)self;
    if (pages->start)
        munmap(pages->start, pages->length);
#endif
    Py_TYPE(self)->tp_free(self);
}

static int pages_getbuffer(PyObject *self, Py_buffer *view, int flags)
{
    Pages *pages = (Pages *)self;
    return PyBuffer_FillInfo(view, self, pages->start, (Py_ssize_t)pages->length, 0, flags);
}

static PyBufferProcs pages_as_buffer = {pages_getbuffer, NULL};

static PyTypeObject PagesType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dcformat._kernels.Pages",
    .tp_basicsize = sizeof(Pages),
    .tp_dealloc = pages_dealloc,
    .tp_as_buffer = &pages_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Zeroed pages mapped for one decoded tensor (a writable buffer).",
};

#ifdef __linux__
static size_t page_size(void) { return (size_t)sysconf(_SC_PAGESIZE); }

/* Maps `length` bytes (a multiple of the page size), zeroed; from one huge page up aligned to
 * 2 MiB and marked for transparent huge pages, else populated when `populate`. NULL if
 * refused. Called without the GIL: populating zeroes every page, as long as a decoding
 * kernel's work on the same bytes, and other threads decode meanwhile. */
static uint8_t *map_pages(size_t length, int populate)
{
    const int huge = length >= HUGE_PAGE;
    const size_t span = huge ? length + HUGE_PAGE : length;
    uint8_t *raw = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    uint8_t *start = raw;
    if (huge) { /* keep the 2 MiB-aligned part: huge pages need aligned ranges */
        start = (uint8_t *)(((uintptr_t)raw + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
        if (start > raw)
            munmap(raw, (size_t)(start - raw));
        if (raw + span > start + length)
            munmap(start + length, (size_t)(raw + span - (start + length)));
#ifdef MADV_HUGEPAGE
        madvise(start, length, MADV_HUGEPAGE); /* a hint: without it, or refused, plain pages */
#endif
    } else if (populate) {
#ifdef MADV_POPULATE_WRITE
        madvise(start, length, MADV_POPULATE_WRITE); /* a hint too: older kernels fault as usual */
#endif
    }
    return start;
}

static PyObject *new_pages(uint8_t *start, size_t length)
{
    Pages *pages = PyObject_New(Pages, &PagesType);
    if (!pages) {
        munmap(start, length);
        return NULL;
    }
    pages->start = start;
    pages->length = length;
    return (PyObject *)pages;
}
#endif

/* The byte count of an output, a positive size; -1 with an exception set if it is not one. */
static Py_ssize_t output_size(PyObject *arg, const char *what)
{
    const Py_ssize_t nbytes = PyLong_AsSsize_t(arg);
    if (nbytes == -1 && PyErr_Occurred())
        return -1;
    if (nbytes < 1 || (size_t)nbytes > SIZE_MAX / 4) {
        misuse(what);
        return -1;
    }
    return nbytes;
}

#ifdef __linux__
static size_t whole_pages(size_t nbytes) { return (nbytes + page_size() - 1) / page_size() * page_size(); }

/* map_pages for `nbytes` of output, without the GIL; NULL with an exception set if refused. */
static uint8_t *map_output(Py_ssize_t nbytes, int populate, size_t *length)
{
    uint8_t *start;
    *length = whole_pages((size_t)nbytes);
    Py_BEGIN_ALLOW_THREADS
    start = map_pages(*length, populate);
    Py_END_ALLOW_THREADS
    if (!start)
        PyErr_NoMemory();
    return start;
}
#endif

static PyObject *output_pages(PyObject *self, PyObject *arg)
{
    const Py_ssize_t nbytes = output_size(arg, "output_pages needs a positive size");
    if (nbytes < 0)
        return NULL;
#ifdef __linux__
    size_t length;
    uint8_t *start = map_output(nbytes, 1, &length);
    return start ? new_pages(start, length) : NULL;
#else
    Py_RETURN_NONE; /* elsewhere numpy allocates */
#endif
}

/* Pages for the outputs of a whole load, mapped at once: tensor after tensor takes its own
 * run of pages from the front (take), and each run is unmapped when its last array goes, as
 * if it had been mapped alone; the reserve unmaps what nobody took. One mapping instead of
 * one per tensor spares a system call and a lock of the process's address space per tensor,
 * and puts tensors under 2 MiB on huge pages too (a first write to a 4 KiB page costs about
 * 2 us here): MiniLM's load took 11% less time. The pages are not populated: a huge page is
 * one fault, taken by the thread that first writes it. */
typedef struct {
    PyObject_HEAD
    uint8_t *next; /* the first page nobody has taken */
    uint8_t *end;
} Reserve;

static void reserve_dealloc(PyObject *self)
{
#ifdef __linux__
    Reserve *reserve = (Reserve *)self;
    if (reserve->next < reserve->end)
        munmap(reserve->next, (size_t)(reserve->end - reserve->next));
#endif
    Py_TYPE(self)->tp_free(self);
}

static PyObject *reserve_take(PyObject *self, PyObject *arg)
{
    const Py_ssize_t nbytes = output_size(arg, "take needs a positive size");
    if (nbytes < 0)
        return NULL;
#ifdef __linux__
    Reserve *reserve = (Reserve *)self;
    const size_t length = whole_pages((size_t)nbytes);
    if (length > (size_t)(reserve->end - reserve->next))
        Py_RETURN_NONE; /* taken already: the caller maps pages of its own */
    uint8_t *start = reserve->next;
    PyObject *pages = new_pages(start, length); /* on failure it has unmapped the run: skip it */
    reserve->next += length;
    return pages;
#else
    Py_RETURN_NONE;
#endif
}

static PyMethodDef reserve_methods[] = {
    {"take", reserve_take, METH_O, "Zeroed writable pages of at least n bytes from the reserve, or None when too few are left."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ReserveType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dcformat._kernels.Reserve",
    .tp_basicsize = sizeof(Reserve),
    .tp_dealloc = reserve_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_methods = reserve_methods,
    .tp_doc = "Pages mapped at once for the outputs of a load, taken tensor by tensor.",
};

/* A reserve for outputs of the given byte sizes: each takes a run of whole pages (take), so
 * the reserve holds the sum of their runs; None for no sizes, and off Linux. */
static PyObject *output_reserve(PyObject *self, PyObject *arg)
{
    PyObject *sizes = PySequence_Fast(arg, "dcformat._kernels: output_reserve needs a sequence of sizes");
    if (!sizes)
        return NULL;
    size_t total = 0;
    for (Py_ssize_t k = 0; k < PySequence_Fast_GET_SIZE(sizes); k++) {
        const Py_ssize_t nbytes = output_size(PySequence_Fast_GET_ITEM(sizes, k), "output_reserve needs positive sizes");
        if (nbytes < 0) {
            Py_DECREF(sizes);
            return NULL;
        }
#ifdef __linux__
        const size_t run = whole_pages((size_t)nbytes);
        if (run > SIZE_MAX / 4 - total) {
            Py_DECREF(sizes);
            return misuse("output_reserve sizes add up past the address space");
        }
        total += run;
#endif
    }
    Py_DECREF(sizes);
#ifdef __linux__
    if (total == 0)
        Py_RETURN_NONE;
    size_t length;
    uint8_t *start = map_output((Py_ssize_t)total, 0, &length);
    if (!start)
        return NULL;
    Reserve *reserve = PyObject_New(Reserve, &ReserveType);
    if (!reserve) {
        munmap(start, length);
        return NULL;
    }
    reserve->next = start;
    reserve->end = start + length;
    return (PyObject *)reserve;
#else
    Py_RETURN_NONE;
#endif
}

/* ------------------------------------------------------------------ CRC-32 */

/* CRC-32 as zlib computes it (reflected polynomial 0xEDB88320, spec 2), for the payload
 * checksums every load verifies: zlib's byte-table loop ran at about 4 GB/s here, a tenth of
 * a lossless model's load. Where the CPU multiplies carry-less (PCLMULQDQ), 64-byte blocks
 * are folded 512 bits ahead in four accumulators, then into one, and the last 16 folded bytes
 * and the tail go through the byte table; elsewhere the byte table does it all.
 *
 * Folding, in the reflected order (bit k of a 128-bit load is the coefficient of x^(127-k)):
 * an accumulator X = H x^64 + L moved D bits ahead is H (x^(D+64) mod P) + L (x^D mod P),
 * congruent mod P and under 128 bits. A carry-less product of a 64-bit reflected H and a
 * 32-bit reflected constant c is the reflection of H c over 95 bits, which read as 128
 * bits is H c x^33: so the constants are x^(D+31) mod P and x^(D-33) mod P, reflected. */

static uint32_t crc_table[256];

static uint32_t crc32_bytes(uint32_t reg, const uint8_t *data, size_t len)
{
    for (size_t i = 0; i < len; i++)
        reg = crc_table[(reg ^ data[i]) & 0xFF] ^ (reg >> 8);
    return reg;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_CLMUL_CRC 1

/* x^(D+31) mod P and x^(D-33) mod P, reflected, for D = 512 and D = 128 */
#define FOLD_512_HIGH 0x8f352d95u
#define FOLD_512_LOW 0x1d9513d7u
#define FOLD_128_HIGH 0xae689191u
#define FOLD_128_LOW 0xccaa009eu

__attribute__((target("pclmul,sse2"))) static inline __m128i fold(__m128i x, __m128i constants, __m128i next)
{
    const __m128i high = _mm_clmulepi64_si128(x, constants, 0x00); /* H (low qword) by the first constant */
    const __m128i low = _mm_clmulepi64_si128(x, constants, 0x11);  /* L (high qword) by the second */
    return _mm_xor_si128(_mm_xor_si128(high, low), next);
}

/* The register after `len` >= 64 bytes, from register `reg` (zlib's state, not inverted). */
__attribute__((target("pclmul,sse2"))) static uint32_t crc32_clmul(uint32_t reg, const uint8_t *data, size_t len)
{
    const __m128i by512 = _mm_set_epi64x(FOLD_512_LOW, FOLD_512_HIGH), by128 = _mm_set_epi64x(FOLD_128_LOW, FOLD_128_HIGH);
    __m128i x0 = _mm_loadu_si128((const __m128i *)data), x1 = _mm_loadu_si128((const __m128i *)(data + 16));
    __m128i x2 = _mm_loadu_si128((const __m128i *)(data + 32)), x3 = _mm_loadu_si128((const __m128i *)(data + 48));
    x0 = _mm_xor_si128(x0, _mm_cvtsi32_si128((int)reg)); /* the register acts as if XORed into the first bytes */
    size_t at = 64;
    for (; len - at >= 64; at += 64) {
        x0 = fold(x0, by512, _mm_loadu_si128((const __m128i *)(data + at)));
        x1 = fold(x1, by512, _mm_loadu_si128((const __m128i *)(data + at + 16)));
        x2 = fold(x2, by512, _mm_loadu_si128((const __m128i *)(data + at + 32)));
        x3 = fold(x3, by512, _mm_loadu_si128((const __m128i *)(data + at + 48)));
    }
    __m128i x = fold(fold(fold(x0, by128, x1), by128, x2), by128, x3);
    for (; len - at >= 16; at += 16)
        x = fold(x, by128, _mm_loadu_si128((const __m128i *)(data + at)));
    uint8_t last[16];
    _mm_storeu_si128((__m128i *)last, x);
    return crc32_bytes(crc32_bytes(0, last, 16), data + at, len - at); /* congruent message: same CRC */
}

/* The same folding 512 bits at a time (VPCLMULQDQ: four 128-bit products per instruction),
 * 256-byte blocks in four accumulators folded 2048 bits ahead: on this machine's Zen 4 core
 * 14.6 GB/s became 56 (in cache) and 31 (38 MB, from memory), where the CRC had been a
 * twentieth of a lossless model's load. The four accumulators fold into one (512 bits), its
 * four 128-bit lanes into one (128 bits), and the rest goes as above; each 128-bit lane
 * takes the same constants as in crc32_clmul. */
#define HAVE_WIDE_CRC 1
#define FOLD_2048_HIGH 0xce3371cbu
#define FOLD_2048_LOW 0xe95c1271u

__attribute__((target("avx512f,vpclmulqdq"))) static inline __m512i fold_wide(__m512i x, __m512i constants, __m512i next)
{
    const __m512i high = _mm512_clmulepi64_epi128(x, constants, 0x00), low = _mm512_clmulepi64_epi128(x, constants, 0x11);
    return _mm512_ternarylogic_epi64(high, low, next, 0x96); /* high ^ low ^ next */
}

/* The register after `len` >= 256 bytes, from register `reg`. */
__attribute__((target("avx512f,vpclmulqdq,pclmul,sse2"))) static uint32_t crc32_wide(uint32_t reg, const uint8_t *data, size_t len)
{
    const __m512i by2048 = _mm512_broadcast_i32x4(_mm_set_epi64x(FOLD_2048_LOW, FOLD_2048_HIGH));
    const __m512i by512 = _mm512_broadcast_i32x4(_mm_set_epi64x(FOLD_512_LOW, FOLD_512_HIGH));
    const __m128i by128 = _mm_set_epi64x(FOLD_128_LOW, FOLD_128_HIGH);
    __m512i x0 = _mm512_loadu_si512(data), x1 = _mm512_loadu_si512(data + 64);
    __m512i x2 = _mm512_loadu_si512(data + 128), x3 = _mm512_loadu_si512(data + 192);
    x0 = _mm512_xor_si512(x0, _mm512_zextsi128_si512(_mm_cvtsi32_si128((int)reg)));
    size_t at = 256;
    for (; len - at >= 256; at += 256) {
        x0 = fold_wide(x0, by2048, _mm512_loadu_si512(data + at));
        x1 = fold_wide(x1, by2048, _mm512_loadu_si512(data + at + 64));
        x2 = fold_wide(x2, by2048, _mm512_loadu_si512(data + at + 128));
        x3 = fold_wide(x3, by2048, _mm512_loadu_si512(data + at + 192));
    }
    __m512i x = fold_wide(fold_wide(fold_wide(x0, by512, x1), by512, x2), by512, x3);
    for (; len - at >= 64; at += 64)
        x = fold_wide(x, by512, _mm512_loadu_si512(data + at));
    __m128i y = fold(_mm512_extracti32x4_epi32(x, 0), by128, _mm512_extracti32x4_epi32(x, 1));
    y = fold(fold(y, by128, _mm512_extracti32x4_epi32(x, 2)), by128, _mm512_extracti32x4_epi32(x, 3));
    for (; len - at >= 16; at += 16)
        y = fold(y, by128, _mm_loadu_si128((const __m128i *)(data + at)));
    uint8_t last[16];
    _mm_storeu_si128((__m128i *)last, y);
    return crc32_bytes(crc32_bytes(0, last, 16), data + at, len - at);
}
#endif

static int crc_can_fold = 0, crc_can_fold_wide = 0;

static uint32_t crc32_update(uint32_t crc, const uint8_t *data, size_t len)
{
    uint32_t reg = ~crc;
#ifdef HAVE_CLMUL_CRC
#ifdef HAVE_WIDE_CRC
    if (crc_can_fold_wide && len >= 256)
        return ~crc32_wide(reg, data, len);
#endif
    if (crc_can_fold && len >= 64)
        return ~crc32_clmul(reg, data, len);
#endif
    return ~crc32_bytes(reg, data, len);
}

static PyObject *crc32(PyObject *self, PyObject *args)
{
    Py_buffer data;
    unsigned int start = 0;
    if (!PyArg_ParseTuple(args, "y*|I", &data, &start))
        return NULL;
    uint32_t crc;
    Py_BEGIN_ALLOW_THREADS
    crc = crc32_update(start, data.buf, (size_t)data.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    return PyLong_FromUnsignedLong(crc);
}

/* ------------------------------------------------------------------ module */

static PyMethodDef methods[] = {
    {"huffman_decode", huffman_decode, METH_VARARGS, "Decode lanes lo..hi of a checked Huffman body through value tables."},
    {"huffman_tables", huffman_tables, METH_VARARGS, "Fill a Huffman code's decode tables from its canonical lengths; False if incomplete."},
    {"huffman_encode", huffman_encode, METH_VARARGS, "Write the payload of a Huffman body; fills the lane lengths."},
    {"histogram", histogram, METH_VARARGS, "Symbol counts into an int64 buffer; False if a symbol is past it."},
    {"unpack", unpack, METH_VARARGS, "Unpack fixed-width LSB-first symbols."},
    {"pack", pack, METH_VARARGS, "Pack fixed-width LSB-first symbols into bytes."},
    {"gather", gather, METH_VARARGS, "out[i] = values[symbols[i]]; returns the largest symbol."},
    {"scatter", scatter, METH_VARARGS, "quant_sparse: values of the codes at the positions the gaps give."},
    {"float_split_merge", float_split_merge, METH_VARARGS, "Merge a float_split block's planes into bits holding their heads."},
    {"crc32", crc32, METH_VARARGS, "CRC-32 of a buffer as zlib computes it, continuing from an optional start value."},
    {"output_pages", output_pages, METH_O, "Zeroed writable pages of at least n bytes for one decoded tensor, or None off Linux."},
    {"output_reserve", output_reserve, METH_O, "Pages for outputs of the given sizes to take from (a run of whole pages each), or None off Linux."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_kernels", .m_doc = "dcformat's compiled kernels (see dcformat/kernels.py).", .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__kernels(void)
{
    const uint16_t probe = 1;
    uint8_t first;
    memcpy(&first, &probe, 1);
    if (first != 1) { /* the loads above assume a little-endian host; numpy serves the others */
        PyErr_SetString(PyExc_ImportError, "dcformat._kernels needs a little-endian machine");
        return NULL;
    }
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (unsigned b = 0; b < 8; b++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
#ifdef HAVE_VECTOR_LANES
    __builtin_cpu_init();
    vector_lanes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512vl") && getenv("DCFORMAT_NO_AVX512") == NULL;
    vector_unpack = vector_lanes && __builtin_cpu_supports("avx512vbmi");
    unpack_tables();
#endif
#ifdef HAVE_CLMUL_CRC
    __builtin_cpu_init();
    crc_can_fold = __builtin_cpu_supports("pclmul") && getenv("DCFORMAT_NO_CLMUL") == NULL;
    crc_can_fold_wide = crc_can_fold && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("vpclmulqdq") &&
                        getenv("DCFORMAT_NO_AVX512") == NULL;
#endif
    for (unsigned i = 0; i < (1u << 10); i++) {
        unsigned r = 0;
        for (unsigned b = 0; b < 10; b++)
            r |= ((i >> b) & 1u) << (9 - b);
        reverse10[i] = (uint16_t)r;
    }
    if (PyType_Ready(&PagesType) < 0 || PyType_Ready(&ReserveType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    int vector = 0, unpack = 0;
#ifdef HAVE_VECTOR_LANES
    vector = vector_lanes ? VECTOR_LANES : 0;
    unpack = vector_unpack;
#endif
    /* lanes the Huffman decoder takes at a time, 0 without the vector loop: huffman.primary_bits
     * widens its table for it; and whether float_split's planes are unpacked with AVX-512 VBMI */
    if (m && (PyModule_AddIntConstant(m, "VECTOR_LANES", vector) < 0 || PyModule_AddIntConstant(m, "VECTOR_UNPACK", unpack) < 0))
        Py_CLEAR(m);
    return m;
}
