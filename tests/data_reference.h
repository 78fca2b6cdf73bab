
/*
 * Copyright (C) The relay authors
 */


/*
 * DATA content by RFC 5321 4.5.2 and the smuggling rules, one octet at a
 * time: the reference that tests/unit/test_data.c and
 * tests/fuzz/fuzz_smtp_data.c hold ngx_relay_parse_data() to.
 */


#ifndef _DATA_REFERENCE_H_INCLUDED_
#define _DATA_REFERENCE_H_INCLUDED_


typedef struct {
    ngx_int_t    rc;
    size_t       consumed;
    size_t       out_len;
    unsigned     bare_cr:1;
    unsigned     bare_lf:1;
} data_result_t;


/* RFC 5321 4.5.2 and the smuggling rules, one octet at a time */

static void
data_reference(u_char *in, size_t size, u_char *out, data_result_t *r)
{
    u_char  ch, *q;
    size_t  i;
    enum {
        st_line_start = 0, st_text, st_cr, st_dot, st_dot_cr
    } st;

    st = st_line_start;
    q = out;
    ngx_memzero(r, sizeof(data_result_t));
    r->rc = NGX_AGAIN;

    for (i = 0; i < size; i++) {
        ch = in[i];

        switch (st) {

        case st_line_start:
            if (ch == '.') {
                st = st_dot;
                break;
            }

            /* fall through */

        case st_text:
            *q++ = ch;

            if (ch == CR) {
                st = st_cr;
            } else {
                r->bare_lf |= (ch == LF);
                st = st_text;
            }

            break;

        case st_cr:
            *q++ = ch;

            if (ch == LF) {
                st = st_line_start;
                break;
            }

            r->bare_cr = 1;
            st = (ch == CR) ? st_cr : st_text;
            break;

        case st_dot:
            if (ch == CR) {
                st = st_dot_cr;
                break;
            }

            *q++ = ch;
            r->bare_lf |= (ch == LF);
            st = st_text;
            break;

        case st_dot_cr:
            if (ch == LF) {
                r->rc = NGX_OK;
                r->consumed = i + 1;
                r->out_len = q - out;
                return;
            }

            r->bare_cr = 1;
            *q++ = CR;
            *q++ = ch;
            st = (ch == CR) ? st_cr : st_text;
            break;
        }
    }

    r->consumed = size;
    r->out_len = q - out;
}


#endif /* _DATA_REFERENCE_H_INCLUDED_ */
