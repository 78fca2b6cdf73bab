
/*
 * Copyright (C) The relay authors
 */


#ifndef _NGX_RELAY_CRC32_H_INCLUDED_
#define _NGX_RELAY_CRC32_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


/* crc32() of zlib, the same value, faster on long buffers */
uint32_t ngx_relay_crc32(uint32_t crc, const void *buf, size_t len);


#endif /* _NGX_RELAY_CRC32_H_INCLUDED_ */
