/* Unsigned integers of 1, 2, 3, 4 or 8 bytes, read from and written to
 * unaligned memory in big- or little-endian order.  memcpy keeps unaligned
 * access defined behaviour; compilers turn the fixed-size memcpy plus swap
 * into one load or store with a bswap. */
#ifndef FRAMECODEC_HTON_H
#define FRAMECODEC_HTON_H

#include <stdint.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && defined(__ORDER_BIG_ENDIAN__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define FC_HOST_BIG_ENDIAN 1
#else
#define FC_HOST_BIG_ENDIAN 0  /* x86, ARM, and MSVC targets are little-endian */
#endif

#if defined(_MSC_VER)
#include <stdlib.h>
#define fc_bswap16 _byteswap_ushort
#define fc_bswap32 _byteswap_ulong
#define fc_bswap64 _byteswap_uint64
#else
#define fc_bswap16 __builtin_bswap16
#define fc_bswap32 __builtin_bswap32
#define fc_bswap64 __builtin_bswap64
#endif

static inline uint64_t fc_load_uint(const unsigned char *p, int width, int little)
{
    uint16_t v16;
    uint32_t v32;
    uint64_t v64;
    int swap = little == FC_HOST_BIG_ENDIAN;  /* wire order differs from host */

    switch (width) {
    case 1:
        return p[0];
    case 2:
        memcpy(&v16, p, 2);
        return swap ? fc_bswap16(v16) : v16;
    case 4:
        memcpy(&v32, p, 4);
        return swap ? fc_bswap32(v32) : v32;
    case 8:
        memcpy(&v64, p, 8);
        return swap ? fc_bswap64(v64) : v64;
    default:  /* 3: no native type, assemble byte by byte */
        if (little)
            return (uint64_t)p[0] | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16);
        return ((uint64_t)p[0] << 16) | ((uint64_t)p[1] << 8) | (uint64_t)p[2];
    }
}

static inline void fc_store_uint(unsigned char *p, uint64_t value, int width, int little)
{
    uint16_t v16;
    uint32_t v32;
    uint64_t v64;
    int swap = little == FC_HOST_BIG_ENDIAN;

    switch (width) {
    case 1:
        p[0] = (unsigned char)value;
        return;
    case 2:
        v16 = (uint16_t)value;
        if (swap) v16 = fc_bswap16(v16);
        memcpy(p, &v16, 2);
        return;
    case 4:
        v32 = (uint32_t)value;
        if (swap) v32 = fc_bswap32(v32);
        memcpy(p, &v32, 4);
        return;
    case 8:
        v64 = value;
        if (swap) v64 = fc_bswap64(v64);
        memcpy(p, &v64, 8);
        return;
    default:  /* 3 */
        if (little) {
            p[0] = (unsigned char)value;
            p[1] = (unsigned char)(value >> 8);
            p[2] = (unsigned char)(value >> 16);
        } else {
            p[0] = (unsigned char)(value >> 16);
            p[1] = (unsigned char)(value >> 8);
            p[2] = (unsigned char)value;
        }
        return;
    }
}

#endif
