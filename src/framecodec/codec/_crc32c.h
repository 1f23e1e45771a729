/* CRC32C (Castagnoli, the polynomial 0x1EDC6F41; 0x82F63B78 reflected), as
 * iSCSI, ext4, Kafka and RocksDB use it: reflected, initial value and final
 * XOR 0xFFFFFFFF, so that "123456789" gives 0xE3069283.
 *
 * Two engines give the same bits.  On x86-64 compiled by GCC or Clang, the
 * SSE4.2 crc32 instruction, in a function compiled for that target alone and
 * chosen at run time, so a build still runs on a CPU without it.  Elsewhere,
 * and on such CPUs, tables: slicing-by-8, eight bytes per step.
 *
 * The crc32 instruction has a latency of three cycles and a throughput of
 * one, so one chain of them runs at a third of the CPU's speed: long spans
 * are cut in three lanes computed side by side, then joined.  Joining uses
 * linearity: the register after lanes A then B is shift(reg_A) ^ reg_B,
 * where reg_B starts from zero and shift() is what running over |B| zero
 * bytes does to a register, a linear map tabulated once per lane length.
 *
 * Where the CPU also has AVX-512 with VPCLMULQDQ (and the compiler knows
 * them), spans of 256 bytes and more are folded instead: carry-less products
 * move 64-byte blocks forward over the data, 256 bytes a step, with no chain
 * of dependent crc32 instructions; the folded 16 bytes and the tail then go
 * through crc32.  Folding a block 8D bits forward multiplies its halves by
 * x^(8D+32) and x^(8D-32) mod P (reflected, 33 bits), computed at start-up. */
#ifndef FRAMECODEC_CRC32C_H
#define FRAMECODEC_CRC32C_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define FC_CRC32C_POLY 0x82F63B78u

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define FC_CRC32C_HAVE_SSE42 1
#include <nmmintrin.h>
#else
#define FC_CRC32C_HAVE_SSE42 0
#endif

/* GCC 8 and Clang 6 know the VPCLMULQDQ target and its built-in check. */
#if FC_CRC32C_HAVE_SSE42 && ((defined(__clang__) && __clang_major__ >= 6) || \
                             (!defined(__clang__) && __GNUC__ >= 8))
#define FC_CRC32C_HAVE_VPCLMUL 1
#include <immintrin.h>
#else
#define FC_CRC32C_HAVE_VPCLMUL 0
#endif

/* The tables are filled once, by fc_crc32c_init(), when the core is imported. */
static uint32_t fc_crc32c_table[8][256];
static int fc_crc32c_hardware;  /* 1 where the CPU has SSE4.2, 2 where AVX-512 VPCLMULQDQ too */

static uint32_t fc_crc32c_table_update(uint32_t crc, const unsigned char *p, size_t n)
{
    /* crc is the raw register (inverted); bytes are assembled one by one,
     * so this is correct whatever the host's byte order. */
    while (n >= 8) {
        uint32_t lo = crc ^ ((uint32_t)p[0] | ((uint32_t)p[1] << 8) |
                             ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24));
        uint32_t hi = (uint32_t)p[4] | ((uint32_t)p[5] << 8) |
                      ((uint32_t)p[6] << 16) | ((uint32_t)p[7] << 24);
        crc = fc_crc32c_table[7][lo & 0xff] ^ fc_crc32c_table[6][(lo >> 8) & 0xff] ^
              fc_crc32c_table[5][(lo >> 16) & 0xff] ^ fc_crc32c_table[4][lo >> 24] ^
              fc_crc32c_table[3][hi & 0xff] ^ fc_crc32c_table[2][(hi >> 8) & 0xff] ^
              fc_crc32c_table[1][(hi >> 16) & 0xff] ^ fc_crc32c_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--)
        crc = (crc >> 8) ^ fc_crc32c_table[0][(crc ^ *p++) & 0xff];
    return crc;
}

#if FC_CRC32C_HAVE_SSE42

/* Lane lengths: three long lanes take 3 KiB per step, three short ones 384
 * bytes; what is left goes through one chain. */
#define FC_CRC32C_LONG 1024
#define FC_CRC32C_SHORT 128

static uint32_t fc_crc32c_shift_long[4][256];
static uint32_t fc_crc32c_shift_short[4][256];

static inline uint32_t fc_crc32c_shift(uint32_t table[4][256], uint32_t crc)
{
    return table[0][crc & 0xff] ^ table[1][(crc >> 8) & 0xff] ^
           table[2][(crc >> 16) & 0xff] ^ table[3][crc >> 24];
}

static void fc_crc32c_fill_shift(uint32_t table[4][256], size_t zeros)
{
    /* table[k][b]: the register b << 8k after `zeros` zero bytes.  The map is
     * linear, so each entry is the XOR of the entries of its bits. */
    int k, b, i;
    for (k = 0; k < 4; k++) {
        table[k][0] = 0;
        for (i = 0; i < 8; i++) {
            uint32_t crc = (uint32_t)1 << (8 * k + i);
            size_t n;
            for (n = 0; n < zeros; n++)
                crc = (crc >> 8) ^ fc_crc32c_table[0][crc & 0xff];
            table[k][1 << i] = crc;
        }
        for (b = 1; b < 256; b++)
            table[k][b] = table[k][b & (b - 1)] ^ table[k][b & -b];
    }
}

__attribute__((target("sse4.2")))
static uint32_t fc_crc32c_sse42_update(uint32_t crc, const unsigned char *p, size_t n)
{
    uint64_t c0 = crc, c1, c2, w0, w1, w2;
    const unsigned char *end;

#define FC_CRC32C_LANES(LANE, SHIFT)                                 \
    while (n >= 3 * (LANE)) {                                        \
        c1 = c2 = 0;                                                 \
        end = p + (LANE);                                            \
        do {                                                         \
            memcpy(&w0, p, 8);                                       \
            memcpy(&w1, p + (LANE), 8);                              \
            memcpy(&w2, p + 2 * (LANE), 8);                          \
            c0 = _mm_crc32_u64(c0, w0);                              \
            c1 = _mm_crc32_u64(c1, w1);                              \
            c2 = _mm_crc32_u64(c2, w2);                              \
            p += 8;                                                  \
        } while (p < end);                                           \
        c0 = fc_crc32c_shift(SHIFT, (uint32_t)c0) ^ (uint32_t)c1;    \
        c0 = fc_crc32c_shift(SHIFT, (uint32_t)c0) ^ (uint32_t)c2;    \
        p += 2 * (LANE);                                             \
        n -= 3 * (LANE);                                             \
    }
    FC_CRC32C_LANES(FC_CRC32C_LONG, fc_crc32c_shift_long)
    FC_CRC32C_LANES(FC_CRC32C_SHORT, fc_crc32c_shift_short)
#undef FC_CRC32C_LANES
    while (n >= 8) {  /* x86 loads unaligned words at full speed */
        memcpy(&w0, p, 8);
        c0 = _mm_crc32_u64(c0, w0);
        p += 8;
        n -= 8;
    }
    while (n--)
        c0 = _mm_crc32_u8((uint32_t)c0, *p++);
    return (uint32_t)c0;
}

#if FC_CRC32C_HAVE_VPCLMUL

/* Below this many bytes the three crc32 lanes are as fast. */
#define FC_CRC32C_FOLD_FROM 256

/* Fold constants for distances of 16, 32, 48, 64 and 256 bytes: for each,
 * {x^(8D+32), x^(8D-32)} mod P, each a 128-bit lane's pair of multipliers. */
static uint64_t fc_crc32c_fold16[2], fc_crc32c_fold32[2], fc_crc32c_fold48[2];
static uint64_t fc_crc32c_fold64[2], fc_crc32c_fold256[2];

static uint64_t fc_crc32c_xpow(unsigned e)
{
    /* x^e mod P, reflected, shifted left one bit as carry-less products want. */
    uint32_t v = 0x80000000u;
    while (e--)
        v = (v >> 1) ^ (FC_CRC32C_POLY & (0u - (v & 1)));
    return (uint64_t)v << 1;
}

static void fc_crc32c_fill_fold(uint64_t pair[2], unsigned distance)
{
    pair[0] = fc_crc32c_xpow(8 * distance + 32);  /* for the block's first 8 bytes */
    pair[1] = fc_crc32c_xpow(8 * distance - 32);  /* for its last 8 */
}

#define FC_CRC32C_VPCLMUL_TARGET \
    __attribute__((target("sse4.2,pclmul,avx512f,avx512vl,vpclmulqdq")))

FC_CRC32C_VPCLMUL_TARGET
static inline __m512i fc_crc32c_fold(__m512i x, __m512i k, __m512i next)
{
    /* Each 128-bit lane of x, moved forward by k's distance, XORed onto next. */
    return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x00),
                                     _mm512_clmulepi64_epi128(x, k, 0x11), next, 0x96);
}

FC_CRC32C_VPCLMUL_TARGET
static inline __m512i fc_crc32c_pairs(const uint64_t pair[2])
{
    return _mm512_broadcast_i32x4(_mm_set_epi64x((long long)pair[1], (long long)pair[0]));
}

/* A 64-byte block of the data, copied to dst on the way where there is one
 * (dst is a constant at each call of the body below, so no branch stays). */
#define FC_CRC32C_BLOCK(OFFSET)                                                   \
    (block = _mm512_loadu_si512((const void *)(p + (OFFSET))),                    \
     (dst ? _mm512_storeu_si512((void *)(dst + (OFFSET)), block) : (void)0), block)

FC_CRC32C_VPCLMUL_TARGET __attribute__((always_inline))
static inline uint32_t fc_crc32c_vpclmul_body(uint32_t crc, const unsigned char *p,
                                              unsigned char *dst, size_t n)
{
    __m512i x0, x1, x2, x3, k, lanes, block;
    __m128i folded;
    uint64_t c;

    /* The register enters as the first four bytes XORed with it: what a
     * register starting at zero then computes is the same. */
    x0 = _mm512_xor_si512(FC_CRC32C_BLOCK(0), _mm512_maskz_set1_epi32(1, (int)crc));
    x1 = FC_CRC32C_BLOCK(64);
    x2 = FC_CRC32C_BLOCK(128);
    x3 = FC_CRC32C_BLOCK(192);
    p += 256;
    dst = dst ? dst + 256 : dst;
    n -= 256;
    k = fc_crc32c_pairs(fc_crc32c_fold256);
    while (n >= 256) {
        x0 = fc_crc32c_fold(x0, k, FC_CRC32C_BLOCK(0));
        x1 = fc_crc32c_fold(x1, k, FC_CRC32C_BLOCK(64));
        x2 = fc_crc32c_fold(x2, k, FC_CRC32C_BLOCK(128));
        x3 = fc_crc32c_fold(x3, k, FC_CRC32C_BLOCK(192));
        p += 256;
        dst = dst ? dst + 256 : dst;
        n -= 256;
    }
    k = fc_crc32c_pairs(fc_crc32c_fold64);
    x1 = fc_crc32c_fold(x0, k, x1);
    x2 = fc_crc32c_fold(x1, k, x2);
    x3 = fc_crc32c_fold(x2, k, x3);
    while (n >= 64) {
        x3 = fc_crc32c_fold(x3, k, FC_CRC32C_BLOCK(0));
        p += 64;
        dst = dst ? dst + 64 : dst;
        n -= 64;
    }
    /* The four lanes of x3 onto its last: by 48, 32 and 16 bytes. */
    k = _mm512_set_epi64(0, 0, (long long)fc_crc32c_fold16[1], (long long)fc_crc32c_fold16[0],
                         (long long)fc_crc32c_fold32[1], (long long)fc_crc32c_fold32[0],
                         (long long)fc_crc32c_fold48[1], (long long)fc_crc32c_fold48[0]);
    lanes = fc_crc32c_fold(x3, k, _mm512_setzero_si512());
    folded = _mm_ternarylogic_epi64(_mm512_castsi512_si128(lanes),
                                    _mm512_extracti32x4_epi32(lanes, 1),
                                    _mm512_extracti32x4_epi32(lanes, 2), 0x96);
    folded = _mm_xor_si128(folded, _mm512_extracti32x4_epi32(x3, 3));
    c = _mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(folded));
    c = _mm_crc32_u64(c, (uint64_t)_mm_extract_epi64(folded, 1));
    if (dst)
        memcpy(dst, p, n);  /* the tail: under 64 bytes */
    return fc_crc32c_sse42_update((uint32_t)c, p, n);
}

#undef FC_CRC32C_BLOCK

FC_CRC32C_VPCLMUL_TARGET
static uint32_t fc_crc32c_vpclmul_update(uint32_t crc, const unsigned char *p, size_t n)
{
    if (n < FC_CRC32C_FOLD_FROM)
        return fc_crc32c_sse42_update(crc, p, n);
    return fc_crc32c_vpclmul_body(crc, p, NULL, n);
}

/* fc_crc32c_vpclmul_body() copying p[0:n] to dst (which it does not
 * overlap) as it reads, for n >= FC_CRC32C_FOLD_FROM: the bytes are read
 * once for both.  Not inlined: its callers are compiled for any CPU. */
FC_CRC32C_VPCLMUL_TARGET
static uint32_t fc_crc32c_vpclmul_copy(uint32_t crc, unsigned char *dst, const unsigned char *p,
                                       size_t n)
{
    return fc_crc32c_vpclmul_body(crc, p, dst, n);
}

#endif

#endif

static void fc_crc32c_init(void)
{
    uint32_t i, crc;
    int k, bit;
    for (i = 0; i < 256; i++) {
        crc = i;
        for (bit = 0; bit < 8; bit++)
            crc = (crc >> 1) ^ (FC_CRC32C_POLY & (0u - (crc & 1)));
        fc_crc32c_table[0][i] = crc;
    }
    for (k = 1; k < 8; k++)
        for (i = 0; i < 256; i++) {
            crc = fc_crc32c_table[k - 1][i];
            fc_crc32c_table[k][i] = (crc >> 8) ^ fc_crc32c_table[0][crc & 0xff];
        }
#if FC_CRC32C_HAVE_SSE42
    fc_crc32c_fill_shift(fc_crc32c_shift_long, FC_CRC32C_LONG);
    fc_crc32c_fill_shift(fc_crc32c_shift_short, FC_CRC32C_SHORT);
    __builtin_cpu_init();
    fc_crc32c_hardware = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#if FC_CRC32C_HAVE_VPCLMUL
    fc_crc32c_fill_fold(fc_crc32c_fold16, 16);
    fc_crc32c_fill_fold(fc_crc32c_fold32, 32);
    fc_crc32c_fill_fold(fc_crc32c_fold48, 48);
    fc_crc32c_fill_fold(fc_crc32c_fold64, 64);
    fc_crc32c_fill_fold(fc_crc32c_fold256, 256);
    /* The built-in checks also that the OS saves the AVX-512 registers. */
    if (fc_crc32c_hardware && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("vpclmulqdq"))
        fc_crc32c_hardware = 2;
#endif
#endif
}

/* The CRC32C of p[0:n] continued from `value`, a CRC32C of what came before
 * (0 for none), as zlib.crc32 chains: engine 0 is the fastest this CPU has,
 * 1 the tables, 2 SSE4.2, 3 AVX-512 VPCLMULQDQ folding (2 and 3 only where
 * fc_crc32c_engines() says they exist). */
static inline uint32_t fc_crc32c_with(int engine, uint32_t value, const unsigned char *p, size_t n)
{
    uint32_t crc = ~value;
#if FC_CRC32C_HAVE_VPCLMUL
    if (engine == 3 || (engine == 0 && fc_crc32c_hardware == 2))
        return ~fc_crc32c_vpclmul_update(crc, p, n);
#endif
#if FC_CRC32C_HAVE_SSE42
    if (engine == 2 || (engine == 0 && fc_crc32c_hardware))
        return ~fc_crc32c_sse42_update(crc, p, n);
#endif
    return ~fc_crc32c_table_update(crc, p, n);
}

static inline uint32_t fc_crc32c(uint32_t value, const unsigned char *p, size_t n)
{
    return fc_crc32c_with(0, value, p, n);
}

/* Whether a copy of n bytes is checksummed as it is made: where the folding
 * engine runs, from FC_CRC32C_FOLD_FROM bytes.  A shorter copy is made
 * first and checksummed in one call, which costs less at those sizes. */
static inline int fc_crc32c_fuses(size_t n)
{
#if FC_CRC32C_HAVE_VPCLMUL
    return fc_crc32c_hardware == 2 && n >= FC_CRC32C_FOLD_FROM;
#else
    (void)n;
    return 0;
#endif
}

/* Copy src[0:n] to dst (which src does not overlap) and return the CRC32C
 * of src[0:n] continued from `value`: a large frame checked piece by piece
 * as it is copied into its storage. */
static inline uint32_t fc_crc32c_copy(uint32_t value, unsigned char *dst, const unsigned char *src,
                                      size_t n)
{
#if FC_CRC32C_HAVE_VPCLMUL
    if (fc_crc32c_fuses(n))
        return ~fc_crc32c_vpclmul_copy(~value, dst, src, n);
#endif
    memcpy(dst, src, n);
    return fc_crc32c(value, src, n);
}

/* Copy src[0:n] to frame + head (which src does not overlap) and return
 * the CRC32C of frame[0:head + n]: an encoder sealing a frame as it copies
 * the payload in. */
static inline uint32_t fc_crc32c_append(unsigned char *frame, size_t head, const unsigned char *src,
                                        size_t n)
{
#if FC_CRC32C_HAVE_VPCLMUL
    if (fc_crc32c_fuses(n))
        return ~fc_crc32c_vpclmul_copy(~fc_crc32c(0, frame, head), frame + head, src, n);
#endif
    memcpy(frame + head, src, n);
    return fc_crc32c(0, frame, head + n);
}

/* Copy frame[head:head + n] to dst (which frame does not overlap) and
 * return the CRC32C of frame[0:head + n]: a decoder checking a frame as it
 * copies the body out of its buffer. */
static inline uint32_t fc_crc32c_extract(unsigned char *dst, const unsigned char *frame, size_t head,
                                         size_t n)
{
#if FC_CRC32C_HAVE_VPCLMUL
    if (fc_crc32c_fuses(n))
        return ~fc_crc32c_vpclmul_copy(~fc_crc32c(0, frame, head), dst, frame + head, n);
#endif
    memcpy(dst, frame + head, n);
    return fc_crc32c(0, frame, head + n);
}

/* How many engines this CPU has, counted from 1 (the tables): 2 adds SSE4.2,
 * 3 AVX-512 VPCLMULQDQ as well. */
static inline int fc_crc32c_engines(void)
{
    return 1 + fc_crc32c_hardware;
}

#endif
