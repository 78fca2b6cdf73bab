
/*
 * Copyright (C) The relay authors
 */


/*
 * lib/relay_json.c: hostile octets (NUL, quotes, backslashes, controls,
 * broken and overlong UTF-8, surrogates) become JSON string text that is
 * valid UTF-8, and valid UTF-8 passes as it is.
 */


#include <stdio.h>
#include <string.h>

#include "relay_json.h"
#include "../tcase.h"


static const struct {
    const char  *label;
    const char  *in;
    size_t       len;
    const char  *out;
} t_cases[] = {
    { "plain", "a@b.example", 11, "a@b.example" },
    { "quote and backslash", "a\"b\\c", 5, "a\\\"b\\\\c" },
    { "NUL", "a\0b", 3, "a\\u0000b" },
    { "controls", "\r\n\t\b\f\x01\x1f\x7f", 8,
      "\\r\\n\\t\\b\\f\\u0001\\u001f\\u007f" },
    { "utf-8 two", "\xc3\xa9", 2, "\xc3\xa9" },
    { "utf-8 three", "\xe2\x82\xac", 3, "\xe2\x82\xac" },
    { "utf-8 four", "\xf0\x9f\x98\x80", 4, "\xf0\x9f\x98\x80" },
    { "lone continuation", "a\x80z", 3, "a\\ufffdz" },
    { "latin-1 octet", "caf\xe9!", 5, "caf\\ufffd!" },
    { "overlong slash", "\xc0\xaf", 2, "\\ufffd\\ufffd" },
    { "overlong three", "\xe0\x80\xaf", 3, "\\ufffd\\ufffd\\ufffd" },
    { "surrogate", "\xed\xa0\x80", 3, "\\ufffd\\ufffd\\ufffd" },
    { "above U+10FFFF", "\xf4\x90\x80\x80", 4,
      "\\ufffd\\ufffd\\ufffd\\ufffd" },
    { "cut at the end", "ab\xe2\x82", 4, "ab\\ufffd\\ufffd" },
    { "0xff", "\xff\xfe", 2, "\\ufffd\\ufffd" },
    { "empty", "", 0, "" }
};


int
main(void)
{
    size_t         i, n, want;
    unsigned char  out[256];

    for (i = 0; i < sizeof(t_cases) / sizeof(t_cases[0]); i++) {
        t_begin(t_cases[i].label);

        want = strlen(t_cases[i].out);
        n = relay_json_escape(NULL, (const unsigned char *) t_cases[i].in,
                              t_cases[i].len);

        if (n != want) {
            t_fail("length %zu, want %zu", n, want);
        }

        if (n > RELAY_JSON_ESCAPED_MAX(t_cases[i].len)) {
            t_fail("length %zu over the bound", n);
        }

        n = relay_json_escape(out, (const unsigned char *) t_cases[i].in,
                              t_cases[i].len);

        if (n != want || memcmp(out, t_cases[i].out, n) != 0) {
            t_fail("\"%.*s\", want \"%s\"", (int) n, out, t_cases[i].out);
        }

        t_end();
    }

    return t_summary("test_json");
}
