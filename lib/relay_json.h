
/*
 * Copyright (C) The relay authors
 */


#ifndef _RELAY_JSON_H_INCLUDED_
#define _RELAY_JSON_H_INCLUDED_


#include <stddef.h>


/* the longest an escaped text of len octets can be: "\u0000" per octet */
#define RELAY_JSON_ESCAPED_MAX(len)  ((len) * 6)


/*
 * The inside of a JSON string (RFC 8259 7), without the quotes: '"' and
 * '\' escaped, control characters (and DEL) as \n, \t ... or \u00XX, valid
 * UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF) as it
 * is, and every octet that is not part of one as \ufffd.  Whatever a
 * client sent, the result is valid UTF-8 and parses.  dst NULL: only the
 * length.  Returns the length written.
 */
size_t relay_json_escape(unsigned char *dst, const unsigned char *src,
    size_t len);


#endif /* _RELAY_JSON_H_INCLUDED_ */
