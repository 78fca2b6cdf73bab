
/*
 * Copyright (C) The relay authors
 */


/*
 * Byte parsers for the wire formats of SMTP (both sides) and POP3.  This
 * file owns syntax only: it says whether octets are well-formed and where
 * the pieces are.  It never decides policy (relay rights, SMTPUTF8 or
 * 8BITMIME negotiation, size accounting of DATA, which extension to use):
 * the sessions and the SMTP client do, from what is found here.
 *
 * It must never allocate, do I/O or call into the nginx core (only its
 * macros and types), so that the unit tests link it alone.  Every loop runs
 * over a buffer whose length is already capped (the line, the path, a
 * parameter value); results are ngx_str_t into the caller's buffer.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_relay_parse.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif


#define NGX_RELAY_MAX_LABEL           63   /* RFC 1035 2.3.4 */
#define NGX_RELAY_MAX_SIZE_DIGITS     20   /* RFC 1870 */
#define NGX_RELAY_MAX_BDAT_DIGITS     18

/* ngx_relay_parse_path() flags */
#define NGX_RELAY_PATH_NULL           0x01  /* "<>" is allowed (MAIL) */
#define NGX_RELAY_PATH_POSTMASTER     0x02  /* "<Postmaster>" (RCPT) */

/* MAIL and RCPT parameters */
#define NGX_RELAY_PARAM_SIZE          0x0001
#define NGX_RELAY_PARAM_BODY          0x0002
#define NGX_RELAY_PARAM_SMTPUTF8      0x0004
#define NGX_RELAY_PARAM_RET           0x0008
#define NGX_RELAY_PARAM_ENVID         0x0010
#define NGX_RELAY_PARAM_AUTH          0x0020
#define NGX_RELAY_PARAM_NOTIFY        0x0040
#define NGX_RELAY_PARAM_ORCPT         0x0080

#define NGX_RELAY_PARAMS_MAIL                                                 \
    (NGX_RELAY_PARAM_SIZE|NGX_RELAY_PARAM_BODY|NGX_RELAY_PARAM_SMTPUTF8       \
     |NGX_RELAY_PARAM_RET|NGX_RELAY_PARAM_ENVID|NGX_RELAY_PARAM_AUTH)

#define NGX_RELAY_PARAMS_RCPT                                                 \
    (NGX_RELAY_PARAM_NOTIFY|NGX_RELAY_PARAM_ORCPT)


typedef struct {
    ngx_str_t                name;
    ngx_uint_t               value;
} ngx_relay_keyword_t;


static ngx_uint_t ngx_relay_is_alnum(u_char ch);
static ngx_uint_t ngx_relay_is_atext(u_char ch);
static ngx_uint_t ngx_relay_is_hex(u_char ch);
static ngx_uint_t ngx_relay_equal(u_char *s, size_t len, ngx_str_t *name);
static ngx_uint_t ngx_relay_lookup(u_char *s, size_t len,
    ngx_relay_keyword_t *kw);
static ngx_int_t ngx_relay_utf8(u_char **pp, u_char *last);
static ngx_int_t ngx_relay_check_domain(u_char *p, u_char *last,
    ngx_uint_t *utf8);
static ngx_int_t ngx_relay_check_literal(u_char *p, u_char *last);
static ngx_int_t ngx_relay_check_ipv4(u_char *p, u_char *last);
static ngx_int_t ngx_relay_check_ipv6(u_char *p, u_char *last);
static ngx_int_t ngx_relay_parse_path(u_char **pos, u_char *last,
    ngx_uint_t flags, ngx_relay_path_t *path);
static ngx_int_t ngx_relay_parse_envelope(ngx_str_t *arg,
    ngx_str_t *prefix, ngx_uint_t flags, ngx_uint_t allowed, off_t max_size,
    ngx_relay_mail_args_t *ma);
static ngx_int_t ngx_relay_parse_param(ngx_relay_mail_args_t *ma,
    ngx_str_t *key, ngx_str_t *value, ngx_uint_t allowed, ngx_uint_t *seen);
static ngx_int_t ngx_relay_parse_size(ngx_str_t *value, off_t *size);
static ngx_int_t ngx_relay_parse_notify(ngx_str_t *value,
    ngx_uint_t *notify);
static ngx_int_t ngx_relay_check_orcpt(ngx_str_t *value);
static ngx_int_t ngx_relay_check_utf8_addr(u_char *p, u_char *last);
static ngx_int_t ngx_relay_base64_value(u_char ch);
static void ngx_relay_ehlo_begin(ngx_relay_reply_parser_t *rp);
static void ngx_relay_ehlo_char(ngx_relay_reply_parser_t *rp, u_char ch);
static void ngx_relay_ehlo_end(ngx_relay_reply_parser_t *rp,
    ngx_uint_t space);


static ngx_relay_keyword_t  ngx_relay_verbs[] = {
    { ngx_string("HELO"), NGX_RELAY_CMD_HELO },
    { ngx_string("EHLO"), NGX_RELAY_CMD_EHLO },
    { ngx_string("MAIL"), NGX_RELAY_CMD_MAIL },
    { ngx_string("RCPT"), NGX_RELAY_CMD_RCPT },
    { ngx_string("DATA"), NGX_RELAY_CMD_DATA },
    { ngx_string("BDAT"), NGX_RELAY_CMD_BDAT },
    { ngx_string("RSET"), NGX_RELAY_CMD_RSET },
    { ngx_string("NOOP"), NGX_RELAY_CMD_NOOP },
    { ngx_string("QUIT"), NGX_RELAY_CMD_QUIT },
    { ngx_string("VRFY"), NGX_RELAY_CMD_VRFY },
    { ngx_string("EXPN"), NGX_RELAY_CMD_EXPN },
    { ngx_string("HELP"), NGX_RELAY_CMD_HELP },
    { ngx_string("STARTTLS"), NGX_RELAY_CMD_STARTTLS },
    { ngx_string("AUTH"), NGX_RELAY_CMD_AUTH },
    { ngx_null_string, NGX_RELAY_CMD_UNKNOWN }
};


static ngx_relay_keyword_t  ngx_relay_params[] = {
    { ngx_string("SIZE"), NGX_RELAY_PARAM_SIZE },
    { ngx_string("BODY"), NGX_RELAY_PARAM_BODY },
    { ngx_string("SMTPUTF8"), NGX_RELAY_PARAM_SMTPUTF8 },
    { ngx_string("RET"), NGX_RELAY_PARAM_RET },
    { ngx_string("ENVID"), NGX_RELAY_PARAM_ENVID },
    { ngx_string("AUTH"), NGX_RELAY_PARAM_AUTH },
    { ngx_string("NOTIFY"), NGX_RELAY_PARAM_NOTIFY },
    { ngx_string("ORCPT"), NGX_RELAY_PARAM_ORCPT },
    { ngx_null_string, 0 }
};


static ngx_relay_keyword_t  ngx_relay_bodies[] = {
    { ngx_string("7BIT"), NGX_RELAY_BODY_7BIT },
    { ngx_string("8BITMIME"), NGX_RELAY_BODY_8BITMIME },
    { ngx_string("BINARYMIME"), NGX_RELAY_BODY_BINARYMIME },
    { ngx_null_string, NGX_RELAY_BODY_NONE }
};


static ngx_relay_keyword_t  ngx_relay_rets[] = {
    { ngx_string("FULL"), NGX_RELAY_RET_FULL },
    { ngx_string("HDRS"), NGX_RELAY_RET_HDRS },
    { ngx_null_string, NGX_RELAY_RET_NONE }
};


static ngx_relay_keyword_t  ngx_relay_notifies[] = {
    { ngx_string("NEVER"), NGX_RELAY_NOTIFY_NEVER },
    { ngx_string("SUCCESS"), NGX_RELAY_NOTIFY_SUCCESS },
    { ngx_string("FAILURE"), NGX_RELAY_NOTIFY_FAILURE },
    { ngx_string("DELAY"), NGX_RELAY_NOTIFY_DELAY },
    { ngx_null_string, 0 }
};


/* EHLO keywords the client uses (RFC 5321 4.1.1.1 and the extensions) */

static ngx_relay_keyword_t  ngx_relay_ehlo_keywords[] = {
    { ngx_string("PIPELINING"), NGX_RELAY_EXT_PIPELINING },
    { ngx_string("SIZE"), NGX_RELAY_EXT_SIZE },
    { ngx_string("8BITMIME"), NGX_RELAY_EXT_8BITMIME },
    { ngx_string("SMTPUTF8"), NGX_RELAY_EXT_SMTPUTF8 },
    { ngx_string("STARTTLS"), NGX_RELAY_EXT_STARTTLS },
    { ngx_string("DSN"), NGX_RELAY_EXT_DSN },
    { ngx_string("CHUNKING"), NGX_RELAY_EXT_CHUNKING },
    { ngx_string("BINARYMIME"), NGX_RELAY_EXT_BINARYMIME },
    { ngx_string("ENHANCEDSTATUSCODES"), NGX_RELAY_EXT_ENHANCED },
    { ngx_null_string, 0 }
};


static ngx_relay_keyword_t  ngx_relay_pop3_verbs[] = {
    { ngx_string("USER"), NGX_RELAY_POP3_USER },
    { ngx_string("PASS"), NGX_RELAY_POP3_PASS },
    { ngx_string("AUTH"), NGX_RELAY_POP3_AUTH },
    { ngx_string("STLS"), NGX_RELAY_POP3_STLS },
    { ngx_string("CAPA"), NGX_RELAY_POP3_CAPA },
    { ngx_string("QUIT"), NGX_RELAY_POP3_QUIT },
    { ngx_string("NOOP"), NGX_RELAY_POP3_NOOP },
    { ngx_string("STAT"), NGX_RELAY_POP3_STAT },
    { ngx_string("LIST"), NGX_RELAY_POP3_LIST },
    { ngx_string("RETR"), NGX_RELAY_POP3_RETR },
    { ngx_string("DELE"), NGX_RELAY_POP3_DELE },
    { ngx_string("RSET"), NGX_RELAY_POP3_RSET },
    { ngx_string("TOP"), NGX_RELAY_POP3_TOP },
    { ngx_string("UIDL"), NGX_RELAY_POP3_UIDL },
    { ngx_null_string, NGX_RELAY_POP3_UNKNOWN }
};


static ngx_str_t  ngx_relay_from = ngx_string("FROM:");
static ngx_str_t  ngx_relay_to = ngx_string("TO:");
static ngx_str_t  ngx_relay_postmaster = ngx_string("Postmaster");
static ngx_str_t  ngx_relay_ipv6_tag = ngx_string("IPv6:");
static ngx_str_t  ngx_relay_last = ngx_string("LAST");
static ngx_str_t  ngx_relay_utf8_type = ngx_string("utf-8");


/*
 * Line framing.  In the normal state nothing is remembered between calls:
 * a partial line stays in the caller's buffer (in->pos unchanged) and is
 * scanned again with the next read; it is at most lp->max octets, so the
 * rescan is bounded.  Once a line cannot fit any more, the parser switches
 * to sw_discard and consumes everything up to and including the next LF.
 *
 *   sw_line     -> LF: NGX_OK; (max) octets and no LF yet: sw_discard
 *   sw_discard  -> LF: NGX_RELAY_PARSE_TOO_LONG, back to sw_line
 */

ngx_int_t
ngx_relay_parse_line(ngx_relay_line_parser_t *lp, ngx_buf_t *in)
{
    u_char  ch, *p, *end;
    size_t  n;
    enum {
        sw_line = 0,
        sw_discard
    } state;

    state = lp->state;

    for (p = in->pos; p < in->last; p++) {
        ch = *p;

        switch (state) {

        case sw_line:
            n = p - in->pos + 1;              /* octets so far, this one too */

            if (ch == LF) {
                if (n > lp->max) {
                    in->pos = p + 1;
                    return NGX_RELAY_PARSE_TOO_LONG;
                }

                end = p;

                if (end > in->pos && end[-1] == CR) {
                    end--;
                }

                lp->line.data = in->pos;
                lp->line.len = end - in->pos;
                in->pos = p + 1;

                return NGX_OK;
            }

            if (n + 1 > lp->max) {
                state = sw_discard;           /* even an LF now is too much */
            }

            break;

        case sw_discard:
            if (ch == LF) {
                lp->state = sw_line;
                in->pos = p + 1;
                return NGX_RELAY_PARSE_TOO_LONG;
            }

            break;
        }
    }

    if (state == sw_discard) {
        in->pos = p;
    }

    lp->state = state;

    return NGX_AGAIN;
}


/*
 * The command verb ends at the first SP or HTAB; leading and trailing
 * SP/HTAB are ignored.  NUL anywhere in the line is refused (it would cut
 * a C string further on), and so are control and non-ASCII octets in the
 * verb; the argument may carry UTF-8, its own parser judges it.
 */

ngx_int_t
ngx_relay_parse_command(ngx_str_t *line, ngx_relay_command_t *cmd)
{
    u_char  ch, *p, *last, *end;
    enum {
        sw_start = 0,
        sw_verb,
        sw_spaces,
        sw_arg
    } state;

    if (line->len == 0) {
        return NGX_RELAY_PARSE_INVALID;
    }

    cmd->verb = NGX_RELAY_CMD_UNKNOWN;
    cmd->name.len = 0;
    cmd->name.data = line->data;
    cmd->arg.len = 0;
    cmd->arg.data = line->data + line->len;

    state = sw_start;
    last = line->data + line->len;
    end = last;

    for (p = line->data; p < last; p++) {
        ch = *p;

        if (ch == '\0') {
            return NGX_RELAY_PARSE_INVALID;
        }

        switch (state) {

        case sw_start:
            if (ch == ' ' || ch == '\t') {
                break;
            }

            cmd->name.data = p;
            state = sw_verb;

            /* fall through */

        case sw_verb:
            if (ch == ' ' || ch == '\t') {
                cmd->name.len = p - cmd->name.data;
                state = sw_spaces;
                break;
            }

            if (ch < 0x20 || ch >= 0x7f) {
                return NGX_RELAY_PARSE_INVALID;
            }

            break;

        case sw_spaces:
            if (ch == ' ' || ch == '\t') {
                break;
            }

            cmd->arg.data = p;
            end = p + 1;
            state = sw_arg;
            break;

        case sw_arg:
            if (ch != ' ' && ch != '\t') {
                end = p + 1;                  /* trailing spaces trimmed */
            }

            break;
        }
    }

    switch (state) {

    case sw_start:
        return NGX_RELAY_PARSE_INVALID;

    case sw_verb:
        cmd->name.len = last - cmd->name.data;
        break;

    case sw_spaces:
        cmd->arg.data = last;
        break;

    default: /* sw_arg */
        cmd->arg.len = end - cmd->arg.data;
        break;
    }

    cmd->verb = ngx_relay_lookup(cmd->name.data, cmd->name.len,
                                 ngx_relay_verbs);

    return NGX_OK;
}


/*
 * Reverse- and forward-path, RFC 5321 4.1.2 with RFC 6531 3.3.  *pos is
 * at "<"; on NGX_OK it is just past ">".  Domains (route or mailbox) are
 * collected up to their terminator and checked by
 * ngx_relay_check_domain(); the rest is judged an octet at a time.
 *
 *   sw_start        "<"                    -> sw_open
 *   sw_open         ">" (null), "@" route  -> sw_route_domain, else local
 *   sw_route_domain "," -> sw_route_at, ":" -> sw_local
 *   sw_route_at     "@"                    -> sw_route_domain
 *   sw_local        DQUOTE -> sw_quoted, atext -> sw_atom
 *   sw_atom         "." -> sw_dot, "@" -> sw_domain_start, ">" Postmaster
 *   sw_quoted       "\" -> sw_quoted_pair, DQUOTE -> sw_quoted_end
 *   sw_quoted_end   "@"                    -> sw_domain_start
 *   sw_domain_start "[" -> sw_literal, else sw_domain; sw_domain ">" ends
 *   sw_literal      "]" -> sw_literal_end; sw_literal_end ">" ends
 */

static ngx_int_t
ngx_relay_parse_path(u_char **pos, u_char *last, ngx_uint_t flags,
    ngx_relay_path_t *path)
{
    u_char      ch, *p, *start, *local, *at, *domain;
    ngx_uint_t  utf8;
    enum {
        sw_start = 0,
        sw_open,
        sw_route_domain,
        sw_route_at,
        sw_local,
        sw_atom,
        sw_dot,
        sw_quoted,
        sw_quoted_pair,
        sw_quoted_end,
        sw_domain_start,
        sw_domain,
        sw_literal,
        sw_literal_end
    } state;

    ngx_memzero(path, sizeof(ngx_relay_path_t));

    start = *pos;
    local = start;
    at = NULL;
    domain = start;
    utf8 = 0;
    state = sw_start;

    for (p = start; p < last; p++) {

        if ((size_t) (p - start) >= NGX_RELAY_MAX_PATH) {
            return NGX_RELAY_PARSE_BAD_ADDRESS;
        }

        ch = *p;

        switch (state) {

        case sw_start:
            if (ch != '<') {
                return NGX_RELAY_PARSE_BAD_ADDRESS;
            }

            state = sw_open;
            break;

        case sw_open:
            if (ch == '>') {
                if (!(flags & NGX_RELAY_PATH_NULL)) {
                    return NGX_RELAY_PARSE_BAD_ADDRESS;
                }

                path->null = 1;
                path->addr.data = p;
                path->local.data = p;
                path->domain.data = p;
                *pos = p + 1;

                return NGX_OK;
            }

            if (ch == '@') {
                path->route = 1;
                domain = p + 1;
                state = sw_route_domain;
                break;
            }

            /* fall through */

        case sw_local:
            local = p;

            if (ch == '"') {
                path->quoted = 1;
                state = sw_quoted;
                break;
            }

            if (ch >= 0x80) {
                if (ngx_relay_utf8(&p, last) != NGX_OK) {
                    return NGX_RELAY_PARSE_BAD_ADDRESS;
                }

                utf8 = 1;
                state = sw_atom;
                break;
            }

            if (!ngx_relay_is_atext(ch)) {
                return NGX_RELAY_PARSE_BAD_ADDRESS;
            }

            state = sw_atom;
            break;

        case sw_route_domain:
            if (ch == ',' || ch == ':') {
                if (ngx_relay_check_domain(domain, p, &utf8) != NGX_OK) {
                    return NGX_RELAY_PARSE_BAD_ADDRESS;
                }

                state = (ch == ',') ? sw_route_at : sw_local;
                break;
            }

            if (ch == '>') {
                return NGX_RELAY_PARSE_BAD_ADDRESS;
            }

            break;

        case sw_route_at:
            if (ch != '@') {
                return NGX_RELAY_PARSE_BAD_ADDRESS;
            }

            domain = p + 1;
            state = sw_route_domain;
            break;

        case sw_dot:
        case sw_atom:
            if (ch >= 0x80) {
                if (ngx_relay_utf8(&p, last) != NGX_OK) {
                    return NGX_RELAY_PARSE_BAD_ADDRESS;
                }

                utf8 = 1;
                state = sw_atom;
                break;
            }

            if (ngx_relay_is_atext(ch)) {
                state = sw_atom;
                break;
            }

            if (state == sw_dot) {
                return NGX_RELAY_PARSE_BAD_ADDRESS;
            }

            if (ch == '.') {
                state = sw_dot;
                break;
            }

            if (ch == '@') {
                at = p;
                state = sw_domain_start;
                break;
            }

            if (ch == '>'
                && (flags & NGX_RELAY_PATH_POSTMASTER)
                && ngx_relay_equal(local, p - local, &ngx_relay_postmaster))
            {
                path->addr.data = local;
                path->addr.len = p - local;
                path->local = path->addr;
                path->domain.data = p;
                path->utf8 = utf8;
                *pos = p + 1;

                return NGX_OK;
            }

            return NGX_RELAY_PARSE_BAD_ADDRESS;

        case sw_quoted:
            if (ch == '"') {
                state = sw_quoted_end;
                break;
            }

            if (ch == '\\') {
                state = sw_quoted_pair;
                break;
            }

            if (ch >= 0x80) {
                if (ngx_relay_utf8(&p, last) != NGX_OK) {
                    return NGX_RELAY_PARSE_BAD_ADDRESS;
                }

                utf8 = 1;
                break;
            }

            if (ch < 0x20 || ch == 0x7f) {
                return NGX_RELAY_PARSE_BAD_ADDRESS;
            }

            break;

        case sw_quoted_pair:
            if (ch < 0x20 || ch >= 0x7f) {
                return NGX_RELAY_PARSE_BAD_ADDRESS;
            }

            state = sw_quoted;
            break;

        case sw_quoted_end:
            if (ch != '@') {
                return NGX_RELAY_PARSE_BAD_ADDRESS;
            }

            at = p;
            state = sw_domain_start;
            break;

        case sw_domain_start:
            domain = p;

            if (ch == '[') {
                path->literal = 1;
                state = sw_literal;
                break;
            }

            if (ch == '>') {
                return NGX_RELAY_PARSE_BAD_ADDRESS;
            }

            state = sw_domain;
            break;

        case sw_domain:
            if (ch != '>') {
                break;
            }

            if (ngx_relay_check_domain(domain, p, &utf8) != NGX_OK) {
                return NGX_RELAY_PARSE_BAD_ADDRESS;
            }

            goto done;

        case sw_literal:
            if (ch == ']') {
                if (ngx_relay_check_literal(domain + 1, p) != NGX_OK) {
                    return NGX_RELAY_PARSE_BAD_ADDRESS;
                }

                state = sw_literal_end;
                break;
            }

            /* dcontent, RFC 5321 4.1.3 */

            if (ch < 33 || ch > 126 || ch == '[' || ch == '\\') {
                return NGX_RELAY_PARSE_BAD_ADDRESS;
            }

            break;

        case sw_literal_end:
            if (ch != '>') {
                return NGX_RELAY_PARSE_BAD_ADDRESS;
            }

            goto done;
        }
    }

    return NGX_RELAY_PARSE_BAD_ADDRESS;

done:

    /* p is at ">", at at "@" */

    if (at - local > NGX_RELAY_MAX_LOCAL_PART
        || p - domain > NGX_RELAY_MAX_DOMAIN)
    {
        return NGX_RELAY_PARSE_BAD_ADDRESS;
    }

    path->addr.data = local;
    path->addr.len = p - local;
    path->local.data = local;
    path->local.len = at - local;
    path->domain.data = domain;
    path->domain.len = p - domain;
    path->utf8 = utf8;

    *pos = p + 1;

    return NGX_OK;
}


ngx_int_t
ngx_relay_parse_mail_from(ngx_str_t *arg, off_t max_size,
    ngx_relay_mail_args_t *ma)
{
    return ngx_relay_parse_envelope(arg, &ngx_relay_from, NGX_RELAY_PATH_NULL,
                                    NGX_RELAY_PARAMS_MAIL, max_size, ma);
}


ngx_int_t
ngx_relay_parse_rcpt_to(ngx_str_t *arg, ngx_relay_mail_args_t *ma)
{
    return ngx_relay_parse_envelope(arg, &ngx_relay_to,
                                    NGX_RELAY_PATH_POSTMASTER,
                                    NGX_RELAY_PARAMS_RCPT, 0, ma);
}


/*
 * "FROM:" / "TO:", at most one SP, the path, then parameters separated by
 * SP: esmtp-keyword ["=" esmtp-value] (RFC 5321 4.1.2, RFC 6531 3.3 for
 * UTF-8 in values).  Syntax errors win over SIZE=: TOO_BIG is returned
 * only for a line that is otherwise fine, with *ma filled in.
 *
 *   sw_sep      SP                         -> sw_space
 *   sw_space    SP, else keyword starts    -> sw_keyword
 *   sw_keyword  "=" -> sw_value, SP -> sw_space (parameter done)
 *   sw_value    SP                         -> sw_space (parameter done)
 */

static ngx_int_t
ngx_relay_parse_envelope(ngx_str_t *arg, ngx_str_t *prefix, ngx_uint_t flags,
    ngx_uint_t allowed, off_t max_size, ngx_relay_mail_args_t *ma)
{
    u_char      ch, *p, *last;
    ngx_int_t   rc;
    ngx_str_t   key, value;
    ngx_uint_t  seen;
    enum {
        sw_sep = 0,
        sw_space,
        sw_keyword,
        sw_value
    } state;

    ngx_memzero(ma, sizeof(ngx_relay_mail_args_t));
    ma->size = -1;

    p = arg->data;
    last = p + arg->len;

    if (arg->len < prefix->len || !ngx_relay_equal(p, prefix->len, prefix)) {
        return NGX_RELAY_PARSE_INVALID;
    }

    p += prefix->len;

    if (p < last && *p == ' ') {
        p++;
    }

    if (p == last || *p != '<') {
        return NGX_RELAY_PARSE_INVALID;
    }

    rc = ngx_relay_parse_path(&p, last, flags, &ma->path);
    if (rc != NGX_OK) {
        return rc;
    }

    key.data = NULL;
    key.len = 0;
    value.data = NULL;
    value.len = 0;
    seen = 0;
    state = sw_sep;

    for ( /* void */ ; p < last; p++) {
        ch = *p;

        switch (state) {

        case sw_sep:
            if (ch != ' ') {
                return NGX_RELAY_PARSE_BAD_ADDRESS;     /* "<a@b>x" */
            }

            state = sw_space;
            break;

        case sw_space:
            if (ch == ' ') {
                break;
            }

            key.data = p;
            value.data = NULL;
            value.len = 0;
            state = sw_keyword;

            /* fall through */

        case sw_keyword:
            if (ngx_relay_is_alnum(ch) || (ch == '-' && p != key.data)) {
                break;
            }

            if (ch == '=' && p != key.data) {
                key.len = p - key.data;
                value.data = p + 1;
                state = sw_value;
                break;
            }

            if (ch == ' ') {
                key.len = p - key.data;

                rc = ngx_relay_parse_param(ma, &key, &value, allowed, &seen);
                if (rc != NGX_OK) {
                    return rc;
                }

                state = sw_space;
                break;
            }

            return NGX_RELAY_PARSE_BAD_PARAM;

        case sw_value:
            if (ch == ' ') {
                value.len = p - value.data;

                rc = ngx_relay_parse_param(ma, &key, &value, allowed, &seen);
                if (rc != NGX_OK) {
                    return rc;
                }

                state = sw_space;
                break;
            }

            if (ch >= 0x80) {
                if (ngx_relay_utf8(&p, last) != NGX_OK) {
                    return NGX_RELAY_PARSE_BAD_PARAM;
                }

                break;
            }

            if (ch < 33 || ch > 126 || ch == '=') {
                return NGX_RELAY_PARSE_BAD_PARAM;
            }

            break;
        }
    }

    if (state == sw_keyword || state == sw_value) {

        if (state == sw_keyword) {
            key.len = p - key.data;

        } else {
            value.len = p - value.data;
        }

        rc = ngx_relay_parse_param(ma, &key, &value, allowed, &seen);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    if (max_size && ma->size > max_size) {
        return NGX_RELAY_PARSE_TOO_BIG;
    }

    return NGX_OK;
}


/* value->data is NULL when there was no "=" at all */

static ngx_int_t
ngx_relay_parse_param(ngx_relay_mail_args_t *ma, ngx_str_t *key,
    ngx_str_t *value, ngx_uint_t allowed, ngx_uint_t *seen)
{
    ngx_uint_t  param;

    param = ngx_relay_lookup(key->data, key->len, ngx_relay_params);

    if (!(param & allowed) || (param & *seen)) {
        return NGX_RELAY_PARSE_BAD_PARAM;
    }

    *seen |= param;

    if (param == NGX_RELAY_PARAM_SMTPUTF8) {
        if (value->data) {
            return NGX_RELAY_PARSE_BAD_PARAM;
        }

        ma->smtputf8 = 1;
        return NGX_OK;
    }

    if (value->len == 0) {
        return NGX_RELAY_PARSE_BAD_PARAM;     /* esmtp-value is 1*char */
    }

    switch (param) {

    case NGX_RELAY_PARAM_SIZE:
        return ngx_relay_parse_size(value, &ma->size);

    case NGX_RELAY_PARAM_BODY:
        ma->body = ngx_relay_lookup(value->data, value->len,
                                    ngx_relay_bodies);
        return ma->body ? NGX_OK : NGX_RELAY_PARSE_BAD_PARAM;

    case NGX_RELAY_PARAM_RET:
        ma->ret = ngx_relay_lookup(value->data, value->len, ngx_relay_rets);
        return ma->ret ? NGX_OK : NGX_RELAY_PARSE_BAD_PARAM;

    case NGX_RELAY_PARAM_ENVID:
        if (value->len > NGX_RELAY_MAX_ENVID
            || ngx_relay_check_xtext(value) != NGX_OK)
        {
            return NGX_RELAY_PARSE_BAD_PARAM;
        }

        ma->envid = *value;
        return NGX_OK;

    case NGX_RELAY_PARAM_AUTH:

        /* RFC 4954 5: xtext of a mailbox, or "<>" */

        if (!(value->len == 2 && value->data[0] == '<'
              && value->data[1] == '>')
            && ngx_relay_check_xtext(value) != NGX_OK)
        {
            return NGX_RELAY_PARSE_BAD_PARAM;
        }

        ma->auth = *value;
        return NGX_OK;

    case NGX_RELAY_PARAM_NOTIFY:
        return ngx_relay_parse_notify(value, &ma->notify);

    default: /* NGX_RELAY_PARAM_ORCPT */
        if (ngx_relay_check_orcpt(value) != NGX_OK) {
            return NGX_RELAY_PARSE_BAD_PARAM;
        }

        ma->orcpt = *value;
        return NGX_OK;
    }
}


/* RFC 1870: 1*20DIGIT; a value beyond off_t is clamped, not wrapped */

static ngx_int_t
ngx_relay_parse_size(ngx_str_t *value, off_t *size)
{
    off_t    n, d;
    u_char  *p, *last;

    if (value->len > NGX_RELAY_MAX_SIZE_DIGITS) {
        return NGX_RELAY_PARSE_BAD_PARAM;
    }

    n = 0;
    last = value->data + value->len;

    for (p = value->data; p < last; p++) {
        if (*p < '0' || *p > '9') {
            return NGX_RELAY_PARSE_BAD_PARAM;
        }

        d = *p - '0';

        if (n > (NGX_MAX_OFF_T_VALUE - d) / 10) {
            n = NGX_MAX_OFF_T_VALUE;
            continue;
        }

        n = n * 10 + d;
    }

    *size = n;

    return NGX_OK;
}


/*
 * RFC 3461 4.1: "NEVER" alone, or a list of SUCCESS, FAILURE, DELAY;
 * an empty item or the same one twice is malformed.
 */

static ngx_int_t
ngx_relay_parse_notify(ngx_str_t *value, ngx_uint_t *notify)
{
    u_char      *p, *item, *last;
    ngx_uint_t   bit, bits;

    bits = 0;
    item = value->data;
    last = value->data + value->len;

    for (p = item; p <= last; p++) {

        if (p < last && *p != ',') {
            continue;
        }

        bit = ngx_relay_lookup(item, p - item, ngx_relay_notifies);

        if (bit == 0 || (bits & bit)) {
            return NGX_RELAY_PARSE_BAD_PARAM;
        }

        bits |= bit;
        item = p + 1;
    }

    if ((bits & NGX_RELAY_NOTIFY_NEVER) && bits != NGX_RELAY_NOTIFY_NEVER) {
        return NGX_RELAY_PARSE_BAD_PARAM;
    }

    *notify = bits;

    return NGX_OK;
}


/*
 * RFC 3461 4.2: addr-type ";" xtext, at most 500 characters, a non-empty
 * address.  The "utf-8" type (RFC 6533 3) takes utf-8-addr-xtext or
 * -unitext instead: raw UTF-8 (already validated by the caller) and
 * "\x{HEX}", but no "+", "\" or "=" otherwise.
 */

static ngx_int_t
ngx_relay_check_orcpt(ngx_str_t *value)
{
    u_char     *p, *last;
    ngx_str_t   xtext;

    if (value->len > NGX_RELAY_MAX_ORCPT) {
        return NGX_ERROR;
    }

    last = value->data + value->len;

    for (p = value->data; p < last && *p != ';'; p++) {
        if (!ngx_relay_is_atext(*p)) {
            return NGX_ERROR;
        }
    }

    if (p == value->data || p == last || p + 1 == last) {
        return NGX_ERROR;
    }

    if (ngx_relay_equal(value->data, p - value->data, &ngx_relay_utf8_type)) {
        return ngx_relay_check_utf8_addr(p + 1, last);
    }

    xtext.data = p + 1;
    xtext.len = last - xtext.data;

    return ngx_relay_check_xtext(&xtext);
}


static ngx_int_t
ngx_relay_check_utf8_addr(u_char *p, u_char *last)
{
    u_char      ch;
    ngx_uint_t  n;
    enum {
        sw_char = 0,
        sw_backslash,
        sw_brace,
        sw_hex
    } state;

    state = sw_char;
    n = 0;

    for ( /* void */ ; p < last; p++) {
        ch = *p;

        switch (state) {

        case sw_char:
            if (ch == '\\') {
                state = sw_backslash;
                break;
            }

            if (ch >= 0x80) {
                break;
            }

            if (ch < 33 || ch > 126 || ch == '+' || ch == '=') {
                return NGX_ERROR;
            }

            break;

        case sw_backslash:
            if (ch != 'x') {
                return NGX_ERROR;
            }

            state = sw_brace;
            break;

        case sw_brace:
            if (ch != '{') {
                return NGX_ERROR;
            }

            n = 0;
            state = sw_hex;
            break;

        case sw_hex:
            if (ch == '}' && n > 0) {
                state = sw_char;
                break;
            }

            if (!ngx_relay_is_hex(ch) || ++n > 6) {
                return NGX_ERROR;
            }

            break;
        }
    }

    return (state == sw_char) ? NGX_OK : NGX_ERROR;
}


/* RFC 3461 4: xchar is "!" to "~" but "+" and "="; "+" two upper HEXDIG */

ngx_int_t
ngx_relay_check_xtext(ngx_str_t *s)
{
    u_char  ch, *p, *last;
    enum {
        sw_char = 0,
        sw_hex1,
        sw_hex2
    } state;

    state = sw_char;
    last = s->data + s->len;

    for (p = s->data; p < last; p++) {
        ch = *p;

        switch (state) {

        case sw_char:
            if (ch == '+') {
                state = sw_hex1;
                break;
            }

            if (ch < 33 || ch > 126 || ch == '=') {
                return NGX_RELAY_PARSE_INVALID;
            }

            break;

        case sw_hex1:
        case sw_hex2:
            if (!((ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'F'))) {
                return NGX_RELAY_PARSE_INVALID;
            }

            state = (state == sw_hex1) ? sw_hex2 : sw_char;
            break;
        }
    }

    return (state == sw_char) ? NGX_OK : NGX_RELAY_PARSE_INVALID;
}


ngx_int_t
ngx_relay_parse_helo(ngx_str_t *arg)
{
    u_char      *p, *last;
    ngx_uint_t   utf8;

    p = arg->data;
    last = p + arg->len;

    while (p < last && *p == ' ') {
        p++;
    }

    while (last > p && last[-1] == ' ') {
        last--;
    }

    if (p == last) {
        return NGX_RELAY_PARSE_INVALID;
    }

    if (*p == '[') {
        if (last - p < 2 || last[-1] != ']'
            || ngx_relay_check_literal(p + 1, last - 1) != NGX_OK)
        {
            return NGX_RELAY_PARSE_INVALID;
        }

        return NGX_OK;
    }

    utf8 = 0;

    if (ngx_relay_check_domain(p, last, &utf8) != NGX_OK) {
        return NGX_RELAY_PARSE_INVALID;
    }

    return NGX_OK;
}


/* RFC 3030 2: chunk-size [ SP "LAST" ]; extra SP between them is fine */

ngx_int_t
ngx_relay_parse_bdat(ngx_str_t *arg, off_t *size, ngx_uint_t *last)
{
    u_char      ch, *p, *end, *word;
    off_t       n;
    ngx_uint_t  digits;
    enum {
        sw_start = 0,
        sw_size,
        sw_spaces,
        sw_last,
        sw_done
    } state;

    state = sw_start;
    n = 0;
    digits = 0;
    word = NULL;
    end = arg->data + arg->len;

    for (p = arg->data; p < end; p++) {
        ch = *p;

        switch (state) {

        case sw_start:
            if (ch == ' ') {
                break;
            }

            state = sw_size;

            /* fall through */

        case sw_size:
            if (ch >= '0' && ch <= '9') {
                if (++digits > NGX_RELAY_MAX_BDAT_DIGITS) {
                    return NGX_RELAY_PARSE_INVALID;
                }

                n = n * 10 + (ch - '0');      /* 18 digits fit in off_t */
                break;
            }

            if (ch != ' ' || digits == 0) {
                return NGX_RELAY_PARSE_INVALID;
            }

            state = sw_spaces;
            break;

        case sw_spaces:
            if (ch == ' ') {
                break;
            }

            word = p;
            state = sw_last;

            /* fall through */

        case sw_last:
            if (ch == ' ') {
                state = sw_done;
                break;
            }

            if ((size_t) (p - word) >= ngx_relay_last.len) {
                return NGX_RELAY_PARSE_INVALID;
            }

            break;

        case sw_done:
            if (ch != ' ') {
                return NGX_RELAY_PARSE_INVALID;
            }

            break;
        }
    }

    if (digits == 0) {
        return NGX_RELAY_PARSE_INVALID;
    }

    if (state == sw_last || state == sw_done) {
        while (end > word && end[-1] == ' ') {
            end--;
        }

        if (!ngx_relay_equal(word, end - word, &ngx_relay_last)) {
            return NGX_RELAY_PARSE_INVALID;
        }

        *last = 1;

    } else {
        *last = 0;
    }

    *size = n;

    return NGX_OK;
}


/*
 * The longest run from p on that the DATA parser would copy as it is:
 * every CR followed by LF, every LF after a CR, no "." at a line start
 * (*line_start: whether p starts a line).  Such runs are nearly all of a
 * message; this checks 16 octets at a time with SSE2 (CR, LF and "."
 * masks, the CR and the line start carried from block to block), so the
 * caller copies a whole run in one memcpy() instead of a line at a time.
 * It stops before the first block that is not so, or where fewer than 16
 * octets are left, and says what the run ends in: *line_start, or
 * *after_cr (between a CR and its LF).
 */

static u_char *
ngx_relay_parse_data_run(u_char *p, u_char *last, ngx_uint_t *line_start,
    ngx_uint_t *after_cr)
{
#if defined(__SSE2__)
    __m128i   v, cr, lf, dot;
    unsigned  m_cr, m_lf, m_dot, carry_cr, carry_line;

    cr = _mm_set1_epi8(CR);
    lf = _mm_set1_epi8(LF);
    dot = _mm_set1_epi8('.');

    carry_cr = 0;
    carry_line = *line_start;

    while (last - p >= 16) {
        v = _mm_loadu_si128((const __m128i *) p);

        m_cr = (unsigned) _mm_movemask_epi8(_mm_cmpeq_epi8(v, cr));
        m_lf = (unsigned) _mm_movemask_epi8(_mm_cmpeq_epi8(v, lf));
        m_dot = (unsigned) _mm_movemask_epi8(_mm_cmpeq_epi8(v, dot));

        /* LFs exactly after the CRs; no dot after an LF */

        if (m_lf != (((m_cr << 1) | carry_cr) & 0xffff)
            || (m_dot & (((m_lf << 1) | carry_line) & 0xffff)))
        {
            break;
        }

        carry_cr = m_cr >> 15;
        carry_line = m_lf >> 15;
        p += 16;
    }

    *line_start = carry_line;
    *after_cr = carry_cr;
#else
    *after_cr = 0;
#endif

    return p;
}


/*
 * Dot-stuffing's search (RFC 5321 4.5.2): the first "." in [p, last) that
 * starts a line (after an LF, or at p when line_start), or last.  With
 * SSE2, 16 octets at a time, the line start carried between blocks.
 */

u_char *
ngx_relay_parse_line_dot(u_char *p, u_char *last, ngx_uint_t line_start)
{
#if defined(__SSE2__)
    __m128i   v, lf, dot;
    unsigned  m_lf, hits;

    lf = _mm_set1_epi8(LF);
    dot = _mm_set1_epi8('.');

    while (last - p >= 16) {
        v = _mm_loadu_si128((const __m128i *) p);

        m_lf = (unsigned) _mm_movemask_epi8(_mm_cmpeq_epi8(v, lf));
        hits = (unsigned) _mm_movemask_epi8(_mm_cmpeq_epi8(v, dot))
               & ((m_lf << 1) | line_start);

        if (hits) {
            return p + __builtin_ctz(hits);
        }

        line_start = m_lf >> 15;
        p += 16;
    }
#endif

    for ( /* void */ ; p < last; p++) {
        if (line_start && *p == '.') {
            return p;
        }

        line_start = (*p == LF);
    }

    return last;
}


/* the first CR or LF in [p, last), or last: memchr() scans in words */

static u_char *
ngx_relay_parse_line_end(u_char *p, u_char *last)
{
    u_char  *cr, *lf;

    cr = memchr(p, CR, last - p);

    if (cr == NULL) {
        cr = last;
    }

    lf = memchr(p, LF, cr - p);

    return lf ? lf : cr;
}


ngx_int_t
ngx_relay_parse_data(ngx_relay_data_parser_t *dp, ngx_buf_t *in, u_char **dst)
{
    u_char      ch, *p, *q, *run;
    ngx_uint_t  line_start, after_cr;
    enum {
        sw_line_start = 0,
        sw_text,
        sw_cr,
        sw_dot,
        sw_dot_cr
    } state;

    state = dp->state;
    q = *dst;

    for (p = in->pos; p < in->last; p++) {
        ch = *p;

        switch (state) {

        case sw_line_start:
            if (ch == '.') {
                state = sw_dot;          /* stuffing or the end: hold it */
                break;
            }

            /* fall through */

        case sw_text:

            /* the bulk of a message: whole lines in one copy */

            line_start = (state == sw_line_start);
            run = ngx_relay_parse_data_run(p, in->last, &line_start,
                                           &after_cr);

            if (run != p) {
                q = ngx_cpymem(q, p, run - p);
                p = run - 1;             /* the loop's p++ goes to run */
                state = after_cr ? sw_cr
                                 : line_start ? sw_line_start : sw_text;
                break;
            }

            /* else the rest of the line */

            run = ngx_relay_parse_line_end(p, in->last);

            if (run != p) {
                q = ngx_cpymem(q, p, run - p);

                if (run == in->last) {
                    p = run - 1;         /* the loop's p++ ends it */
                    state = sw_text;
                    break;
                }

                p = run;
                ch = *p;
            }

            *q++ = ch;

            if (ch == CR) {
                state = sw_cr;

            } else {
                dp->bare_lf |= (ch == LF);
                state = sw_text;
            }

            break;

        case sw_cr:
            *q++ = ch;

            if (ch == LF) {
                state = sw_line_start;
                break;
            }

            dp->bare_cr = 1;
            state = (ch == CR) ? sw_cr : sw_text;
            break;

        case sw_dot:
            if (ch == CR) {
                state = sw_dot_cr;
                break;
            }

            *q++ = ch;                   /* the leading dot is dropped */
            dp->bare_lf |= (ch == LF);
            state = sw_text;
            break;

        case sw_dot_cr:
            if (ch == LF) {
                in->pos = p + 1;
                *dst = q;
                dp->state = sw_line_start;
                return NGX_OK;
            }

            dp->bare_cr = 1;             /* "." CR x: not the end */
            *q++ = CR;
            *q++ = ch;
            state = (ch == CR) ? sw_cr : sw_text;
            break;
        }
    }

    in->pos = p;
    *dst = q;
    dp->state = state;

    return NGX_AGAIN;
}


/*
 * RFC 4616 2: [authzid] NUL authcid NUL passwd, each UTF-8 without NUL;
 * authcid and passwd are not empty.
 */

ngx_int_t
ngx_relay_parse_auth_plain(ngx_str_t *decoded, ngx_str_t *user,
    ngx_str_t *passwd)
{
    u_char  ch, *p, *last, *authzid, *authcid, *pass;
    size_t  n;
    enum {
        sw_authzid = 0,
        sw_authcid,
        sw_passwd
    } state;

    state = sw_authzid;
    authzid = decoded->data;
    authcid = NULL;
    pass = NULL;
    last = decoded->data + decoded->len;

    for (p = decoded->data; p < last; p++) {
        ch = *p;

        if (ch >= 0x80) {
            if (ngx_relay_utf8(&p, last) != NGX_OK) {
                return NGX_RELAY_PARSE_INVALID;
            }

            continue;
        }

        if (ch != '\0') {
            continue;
        }

        switch (state) {

        case sw_authzid:
            authcid = p + 1;
            state = sw_authcid;
            break;

        case sw_authcid:
            pass = p + 1;
            state = sw_passwd;
            break;

        default: /* sw_passwd */
            return NGX_RELAY_PARSE_INVALID;
        }
    }

    if (state != sw_passwd || pass - 1 == authcid || pass == last) {
        return NGX_RELAY_PARSE_INVALID;
    }

    user->data = authcid;
    user->len = pass - 1 - authcid;

    n = authcid - 1 - authzid;

    if (n && (n != user->len || ngx_memcmp(authzid, authcid, n) != 0)) {
        return NGX_RELAY_PARSE_INVALID;     /* acting as someone else */
    }

    passwd->data = pass;
    passwd->len = last - pass;

    return NGX_OK;
}


/* domain names and address literals */

/*
 * Domain, RFC 5321 4.1.2 with RFC 6531 U-labels: labels of letters,
 * digits and inner hyphens, or UTF-8; an ASCII label is at most 63
 * octets (a U-label's limit is on its A-label, which we do not compute).
 *
 *   sw_label_start  let-dig or UTF-8       -> sw_label
 *   sw_label        "." -> sw_label_start; "-" or let-dig stays
 */

static ngx_int_t
ngx_relay_check_domain(u_char *p, u_char *last, ngx_uint_t *utf8)
{
    u_char      ch, *label;
    ngx_uint_t  ascii, hyphen;
    enum {
        sw_label_start = 0,
        sw_label
    } state;

    if (p == last || last - p > NGX_RELAY_MAX_DOMAIN) {
        return NGX_ERROR;
    }

    state = sw_label_start;
    label = p;
    ascii = 1;
    hyphen = 0;

    for ( /* void */ ; p < last; p++) {
        ch = *p;

        switch (state) {

        case sw_label_start:
            label = p;
            ascii = 1;
            hyphen = 0;

            if (ch == '-' || ch == '.') {
                return NGX_ERROR;
            }

            state = sw_label;

            /* fall through */

        case sw_label:
            if (ch == '.') {
                if (hyphen || (ascii && p - label > NGX_RELAY_MAX_LABEL)) {
                    return NGX_ERROR;
                }

                state = sw_label_start;
                break;
            }

            if (ch == '-') {
                hyphen = 1;
                break;
            }

            hyphen = 0;

            if (ch >= 0x80) {
                if (ngx_relay_utf8(&p, last) != NGX_OK) {
                    return NGX_ERROR;
                }

                ascii = 0;
                *utf8 = 1;
                break;
            }

            if (!ngx_relay_is_alnum(ch)) {
                return NGX_ERROR;
            }

            break;
        }
    }

    if (state != sw_label
        || hyphen
        || (ascii && p - label > NGX_RELAY_MAX_LABEL))
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* between the brackets: IPv4-address-literal or "IPv6:" IPv6-addr */

static ngx_int_t
ngx_relay_check_literal(u_char *p, u_char *last)
{
    size_t  n;

    n = ngx_relay_ipv6_tag.len;

    if ((size_t) (last - p) > n && ngx_relay_equal(p, n, &ngx_relay_ipv6_tag))
    {
        return ngx_relay_check_ipv6(p + n, last);
    }

    return ngx_relay_check_ipv4(p, last);
}


/* Snum 3("." Snum), Snum is 1*3DIGIT of at most 255 */

static ngx_int_t
ngx_relay_check_ipv4(u_char *p, u_char *last)
{
    u_char      ch;
    ngx_uint_t  digits, dots, n;

    digits = 0;
    dots = 0;
    n = 0;

    for ( /* void */ ; p < last; p++) {
        ch = *p;

        if (ch >= '0' && ch <= '9') {
            n = n * 10 + (ch - '0');

            if (++digits > 3 || n > 255) {
                return NGX_ERROR;
            }

            continue;
        }

        if (ch != '.' || digits == 0 || ++dots > 3) {
            return NGX_ERROR;
        }

        digits = 0;
        n = 0;
    }

    return (dots == 3 && digits) ? NGX_OK : NGX_ERROR;
}


/*
 * RFC 5321 4.1.3 IPv6-addr, as RFC 4291 2.2 writes it: eight groups of
 * 1-4 hex digits, or fewer with one "::" standing for at least one zero
 * group; the last two groups may be an IPv4 address.
 *
 *   sw_start   ":" -> sw_colon1 (must be "::"), hex -> sw_group
 *   sw_group   hex (up to 4), "." -> IPv4 tail, ":" -> sw_colon
 *   sw_colon   ":" -> "::" (once), hex -> sw_group
 */

static ngx_int_t
ngx_relay_check_ipv6(u_char *p, u_char *last)
{
    u_char      ch, *group;
    ngx_uint_t  groups, digits, compressed;
    enum {
        sw_start = 0,
        sw_colon1,
        sw_group,
        sw_colon,
        sw_after_compress
    } state;

    state = sw_start;
    group = p;
    groups = 0;
    digits = 0;
    compressed = 0;

    for ( /* void */ ; p < last; p++) {
        ch = *p;

        switch (state) {

        case sw_start:
            if (ch == ':') {
                state = sw_colon1;
                break;
            }

            goto group;

        case sw_colon1:
            if (ch != ':') {
                return NGX_ERROR;
            }

            compressed = 1;
            state = sw_after_compress;
            break;

        case sw_colon:
            if (ch == ':') {
                if (compressed) {
                    return NGX_ERROR;
                }

                compressed = 1;
                state = sw_after_compress;
                break;
            }

            goto group;

        case sw_after_compress:
        case sw_group:
        group:
            if (ngx_relay_is_hex(ch)) {
                if (state != sw_group) {
                    group = p;
                    digits = 0;
                    state = sw_group;
                }

                if (++digits > 4) {
                    return NGX_ERROR;
                }

                break;
            }

            if (state != sw_group) {
                return NGX_ERROR;
            }

            if (ch == '.') {

                /* the IPv4 tail counts as two groups and ends the address */

                if (ngx_relay_check_ipv4(group, last) != NGX_OK) {
                    return NGX_ERROR;
                }

                groups += 2;
                goto end;
            }

            if (ch != ':') {
                return NGX_ERROR;
            }

            groups++;
            state = sw_colon;
            break;
        }
    }

    switch (state) {

    case sw_group:
        groups++;
        break;

    case sw_after_compress:
        break;

    default:                              /* empty, or ends in one ":" */
        return NGX_ERROR;
    }

end:

    if (compressed) {
        return (groups <= 7) ? NGX_OK : NGX_ERROR;
    }

    return (groups == 8) ? NGX_OK : NGX_ERROR;
}


/*
 * One UTF-8 sequence (RFC 3629 4) whose first octet, at *pp, is not
 * ASCII: no overlong forms, no surrogates, nothing above U+10FFFF, and
 * not cut by the end of the buffer.  On success *pp is at its last octet,
 * so that the caller's loop steps past it.
 */

static ngx_int_t
ngx_relay_utf8(u_char **pp, u_char *last)
{
    u_char      ch, *p, lo, hi;
    ngx_uint_t  n;

    p = *pp;
    ch = *p;
    lo = 0x80;
    hi = 0xbf;

    if (ch >= 0xc2 && ch <= 0xdf) {
        n = 1;

    } else if (ch == 0xe0) {
        n = 2;
        lo = 0xa0;

    } else if (ch == 0xed) {
        n = 2;
        hi = 0x9f;

    } else if (ch >= 0xe1 && ch <= 0xef) {
        n = 2;

    } else if (ch == 0xf0) {
        n = 3;
        lo = 0x90;

    } else if (ch >= 0xf1 && ch <= 0xf3) {
        n = 3;

    } else if (ch == 0xf4) {
        n = 3;
        hi = 0x8f;

    } else {
        return NGX_ERROR;                 /* 80-C1, F5-FF */
    }

    if ((size_t) (last - p) <= n) {
        return NGX_ERROR;
    }

    p++;

    if (*p < lo || *p > hi) {
        return NGX_ERROR;
    }

    while (--n) {
        p++;

        if (*p < 0x80 || *p > 0xbf) {
            return NGX_ERROR;
        }
    }

    *pp = p;

    return NGX_OK;
}


static ngx_uint_t
ngx_relay_is_alnum(u_char ch)
{
    return (ch >= '0' && ch <= '9')
           || (ch >= 'a' && ch <= 'z')
           || (ch >= 'A' && ch <= 'Z');
}


/* RFC 5322 3.2.3 atext, ASCII part */

static ngx_uint_t
ngx_relay_is_atext(u_char ch)
{
    if (ngx_relay_is_alnum(ch)) {
        return 1;
    }

    switch (ch) {
    case '!': case '#': case '$': case '%': case '&': case '\'':
    case '*': case '+': case '-': case '/': case '=': case '?':
    case '^': case '_': case '`': case '{': case '|': case '}':
    case '~':
        return 1;
    }

    return 0;
}


static ngx_uint_t
ngx_relay_is_hex(u_char ch)
{
    return (ch >= '0' && ch <= '9')
           || (ch >= 'a' && ch <= 'f')
           || (ch >= 'A' && ch <= 'F');
}


/* ASCII case-insensitive: s of len octets equals name */

static ngx_uint_t
ngx_relay_equal(u_char *s, size_t len, ngx_str_t *name)
{
    size_t  i;

    if (len != name->len) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (ngx_tolower(s[i]) != ngx_tolower(name->data[i])) {
            return 0;
        }
    }

    return 1;
}


/* kw ends with a null name; its value is what "not found" returns */

static ngx_uint_t
ngx_relay_lookup(u_char *s, size_t len, ngx_relay_keyword_t *kw)
{
    for ( /* void */ ; kw->name.len; kw++) {
        if (ngx_relay_equal(s, len, &kw->name)) {
            break;
        }
    }

    return kw->value;
}


ngx_int_t
ngx_relay_parse_reply(ngx_relay_reply_parser_t *rp, ngx_buf_t *in)
{
    u_char  ch, *p;
    enum {
        sw_code = 0,
        sw_sep,
        sw_text,
        sw_cr,
        sw_last_text,
        sw_last_cr
    } state;

    state = rp->state;

    for (p = in->pos; p < in->last; p++) {
        ch = *p;

        if (++rp->line_len > 2048) {
            return NGX_RELAY_PARSE_INVALID;
        }

        switch (state) {

        case sw_code:
            if (ch < '0' || ch > '9') {
                return NGX_RELAY_PARSE_INVALID;
            }

            rp->line_code = rp->line_code * 10 + (ch - '0');

            if (rp->line_len == 3) {
                if (rp->line_code < 200 || rp->line_code > 599
                    || (rp->lines && rp->line_code != rp->code))
                {
                    return NGX_RELAY_PARSE_INVALID;
                }

                rp->code = rp->line_code;
                state = sw_sep;
            }

            break;

        case sw_sep:
            if (rp->text_len && rp->text_len < NGX_RELAY_REPLY_TEXT) {
                rp->text[rp->text_len++] = ' ';
            }

            ngx_relay_ehlo_begin(rp);

            if (ch == '-') {
                state = sw_text;
                break;
            }

            if (ch == ' ') {
                state = sw_last_text;
                break;
            }

            if (ch == CR) {
                state = sw_last_cr;
                break;
            }

            if (ch == LF) {
                goto done;
            }

            return NGX_RELAY_PARSE_INVALID;

        case sw_text:
        case sw_last_text:
            if (ch == CR) {
                ngx_relay_ehlo_end(rp, 0);
                state = (state == sw_text) ? sw_cr : sw_last_cr;
                break;
            }

            if (ch == LF) {
                ngx_relay_ehlo_end(rp, 0);

                if (state == sw_last_text) {
                    goto done;
                }

                goto next_line;
            }

            if (rp->text_len < NGX_RELAY_REPLY_TEXT) {
                rp->text[rp->text_len++] = (ch < 0x20 || ch == 0x7f) ? ' '
                                                                      : ch;
            }

            ngx_relay_ehlo_char(rp, ch);

            break;

        case sw_cr:
            if (ch != LF) {
                return NGX_RELAY_PARSE_INVALID;
            }

            goto next_line;

        case sw_last_cr:
            if (ch != LF) {
                return NGX_RELAY_PARSE_INVALID;
            }

            goto done;
        }

        continue;

    next_line:

        if (++rp->lines >= 100) {
            return NGX_RELAY_PARSE_INVALID;
        }

        rp->line_code = 0;
        rp->line_len = 0;
        state = sw_code;
    }

    in->pos = p;
    rp->state = state;

    return NGX_AGAIN;

done:

    in->pos = p + 1;
    rp->lines++;
    rp->state = sw_code;

    return NGX_OK;
}


/*
 * EHLO keywords, an octet at a time as the reply parser sees them: from
 * the second line on, a line's first word is a keyword (letters, digits,
 * "-"), then its parameters; SIZE's first parameter is its value.
 *
 *   kw_word        keyword octets; SP -> the keyword is matched
 *   kw_size_space  spaces after "SIZE"      -> kw_size
 *   kw_size        digits; SP ends them, anything else voids the value
 *   kw_skip        the rest of the line
 */

enum {
    ngx_relay_kw_none = 0,
    ngx_relay_kw_word,
    ngx_relay_kw_size_space,
    ngx_relay_kw_size,
    ngx_relay_kw_skip
};


static void
ngx_relay_ehlo_begin(ngx_relay_reply_parser_t *rp)
{
    rp->kw_len = 0;
    rp->kw_state = (rp->ehlo && rp->lines) ? ngx_relay_kw_word
                                           : ngx_relay_kw_none;
}


static void
ngx_relay_ehlo_char(ngx_relay_reply_parser_t *rp, u_char ch)
{
    off_t  d;

    switch (rp->kw_state) {

    case ngx_relay_kw_word:
        if (ngx_relay_is_alnum(ch) || ch == '-') {
            if (rp->kw_len < NGX_RELAY_EHLO_KEYWORD) {
                rp->kw[rp->kw_len] = ch;
            }

            rp->kw_len++;                /* a line is at most 2048 octets */
            return;
        }

        if (ch == ' ' && rp->kw_len) {
            ngx_relay_ehlo_end(rp, 1);
            return;
        }

        rp->kw_state = ngx_relay_kw_skip;  /* not a keyword line */
        return;

    case ngx_relay_kw_size_space:
        if (ch == ' ') {
            return;
        }

        rp->kw_state = ngx_relay_kw_size;

        /* fall through */

    case ngx_relay_kw_size:
        if (ch >= '0' && ch <= '9') {
            d = ch - '0';

            if (rp->size > (NGX_MAX_OFF_T_VALUE - d) / 10) {
                rp->size = 0;            /* beyond off_t: no limit known */
                rp->kw_state = ngx_relay_kw_skip;
                return;
            }

            rp->size = rp->size * 10 + d;
            return;
        }

        if (ch != ' ') {
            rp->size = 0;                /* "SIZE 10x": no value */
        }

        rp->kw_state = ngx_relay_kw_skip;
        return;

    default:
        return;
    }
}


/* the keyword ends, at a space (its parameters follow) or the line end */

static void
ngx_relay_ehlo_end(ngx_relay_reply_parser_t *rp, ngx_uint_t space)
{
    ngx_uint_t  ext;

    if (rp->kw_state != ngx_relay_kw_word || rp->kw_len == 0
        || rp->kw_len > NGX_RELAY_EHLO_KEYWORD)
    {
        rp->kw_state = space ? ngx_relay_kw_skip : ngx_relay_kw_none;
        return;
    }

    ext = ngx_relay_lookup(rp->kw, rp->kw_len, ngx_relay_ehlo_keywords);

    rp->ext |= ext;
    rp->kw_state = ngx_relay_kw_none;

    if (ext == NGX_RELAY_EXT_SIZE) {
        rp->size = 0;

        if (space) {
            rp->kw_state = ngx_relay_kw_size_space;
        }

        return;
    }

    if (space) {
        rp->kw_state = ngx_relay_kw_skip;
    }
}


/*
 * RFC 3463: "c.ddd.ddd", class c, 1-3 digits each; at the start of the
 * text or after a space, ending at a space or the end.
 */

ngx_int_t
ngx_relay_parse_enhanced(u_char *p, size_t len, u_char class, u_char *out)
{
    u_char      *start, *last, *s;
    ngx_uint_t   dots, digits;

    start = p;
    last = p + len;

    for ( /* void */ ; p + 4 < last; p++) {
        if (*p != class || p[1] != '.' || (p > start && p[-1] != ' ')) {
            continue;
        }

        dots = 0;
        digits = 0;

        for (s = p + 2; s < last && *s != ' '; s++) {
            if (*s == '.') {
                if (digits == 0 || ++dots > 1) {
                    break;
                }

                digits = 0;
                continue;
            }

            if (*s < '0' || *s > '9' || ++digits > 3) {
                break;
            }
        }

        if ((s == last || *s == ' ') && dots == 1 && digits
            && (size_t) (s - p) < 12)
        {
            ngx_memcpy(out, p, s - p);
            out[s - p] = '\0';
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


/* RFC 4648 4 */

static ngx_int_t
ngx_relay_base64_value(u_char ch)
{
    if (ch >= 'A' && ch <= 'Z') {
        return ch - 'A';
    }

    if (ch >= 'a' && ch <= 'z') {
        return ch - 'a' + 26;
    }

    if (ch >= '0' && ch <= '9') {
        return ch - '0' + 52;
    }

    if (ch == '+') {
        return 62;
    }

    if (ch == '/') {
        return 63;
    }

    return -1;
}


ngx_int_t
ngx_relay_parse_auth_response(ngx_str_t *line, u_char *buf, size_t size,
    ngx_str_t *decoded)
{
    u_char      *p, *last, *q, *end;
    uint32_t     bits;
    ngx_int_t    v;
    ngx_uint_t   n, pad;

    p = line->data;
    last = p + line->len;

    if (line->len == 1 && *p == '*') {
        return NGX_DECLINED;
    }

    decoded->data = buf;
    decoded->len = 0;

    if (line->len == 1 && *p == '=') {
        return NGX_OK;                   /* RFC 4954 4: an empty response */
    }

    q = buf;
    end = buf + size;
    bits = 0;
    n = 0;
    pad = 0;

    for ( /* void */ ; p < last; p++) {

        if (*p == '=') {
            if (++pad > 2) {
                return NGX_RELAY_PARSE_INVALID;
            }

            continue;
        }

        if (pad) {
            return NGX_RELAY_PARSE_INVALID;     /* data after the padding */
        }

        v = ngx_relay_base64_value(*p);
        if (v < 0) {
            return NGX_RELAY_PARSE_INVALID;
        }

        bits = (bits << 6) | (uint32_t) v;

        if (++n % 4 == 0) {
            if (end - q < 3) {
                return NGX_RELAY_PARSE_INVALID;
            }

            *q++ = (u_char) (bits >> 16);
            *q++ = (u_char) (bits >> 8);
            *q++ = (u_char) bits;
            bits = 0;
        }
    }

    switch (n % 4) {

    case 1:
        return NGX_RELAY_PARSE_INVALID;

    case 2:
        if (end - q < 1 || (pad && pad != 2)) {
            return NGX_RELAY_PARSE_INVALID;
        }

        *q++ = (u_char) (bits >> 4);
        break;

    case 3:
        if (end - q < 2 || (pad && pad != 1)) {
            return NGX_RELAY_PARSE_INVALID;
        }

        *q++ = (u_char) (bits >> 10);
        *q++ = (u_char) (bits >> 2);
        break;

    default:
        if (pad) {
            return NGX_RELAY_PARSE_INVALID;
        }
    }

    decoded->len = q - buf;

    return NGX_OK;
}


/*
 * A POP3 command line: keyword, then arguments separated by spaces; the
 * line's trailing spaces belong to nothing.
 *
 *   sw_keyword  letters; SP -> sw_spaces
 *   sw_spaces   SP; else an argument starts -> sw_arg
 *   sw_arg      SP -> sw_spaces
 */

ngx_int_t
ngx_relay_parse_pop3_command(ngx_str_t *line, ngx_relay_pop3_command_t *cmd)
{
    u_char  ch, *p, *last, *arg;
    enum {
        sw_keyword = 0,
        sw_spaces,
        sw_arg
    } state;

    ngx_memzero(cmd, sizeof(ngx_relay_pop3_command_t));

    p = line->data;
    last = p + line->len;

    if (ngx_strlchr(p, last, '\0') != NULL) {
        return NGX_RELAY_PARSE_INVALID;
    }

    while (last > p && last[-1] == ' ') {
        last--;
    }

    cmd->name.data = p;
    cmd->rest.data = last;
    arg = last;
    state = sw_keyword;

    for ( /* void */ ; p < last; p++) {
        ch = *p;

        switch (state) {

        case sw_keyword:
            if (ch == ' ') {
                cmd->name.len = p - cmd->name.data;
                state = sw_spaces;
                break;
            }

            if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'))) {
                return NGX_RELAY_PARSE_INVALID;
            }

            break;

        case sw_spaces:
            if (ch == ' ') {
                break;
            }

            if (cmd->rest.data == last) {
                cmd->rest.data = p;
                cmd->rest.len = last - p;
            }

            arg = p;
            state = sw_arg;
            break;

        case sw_arg:
            if (ch != ' ') {
                break;
            }

            if (cmd->nargs < 2) {
                cmd->args[cmd->nargs].data = arg;
                cmd->args[cmd->nargs].len = p - arg;
            }

            cmd->nargs++;
            state = sw_spaces;
            break;
        }
    }

    if (state == sw_keyword) {
        cmd->name.len = last - cmd->name.data;

    } else if (state == sw_arg) {
        if (cmd->nargs < 2) {
            cmd->args[cmd->nargs].data = arg;
            cmd->args[cmd->nargs].len = last - arg;
        }

        cmd->nargs++;
    }

    if (cmd->name.len < 3 || cmd->name.len > 4) {
        return NGX_RELAY_PARSE_INVALID;
    }

    if (cmd->nargs > 2) {
        cmd->nargs = 2;
        cmd->more = 1;
    }

    cmd->verb = ngx_relay_lookup(cmd->name.data, cmd->name.len,
                                 ngx_relay_pop3_verbs);

    return NGX_OK;
}


ngx_int_t
ngx_relay_parse_pop3_number(ngx_str_t *arg, ngx_uint_t *n)
{
    size_t      i;
    ngx_uint_t  v;

    if (arg->len == 0 || arg->len > 9) {
        return NGX_RELAY_PARSE_INVALID;
    }

    v = 0;

    for (i = 0; i < arg->len; i++) {
        if (arg->data[i] < '0' || arg->data[i] > '9') {
            return NGX_RELAY_PARSE_INVALID;
        }

        v = v * 10 + (arg->data[i] - '0');
    }

    *n = v;

    return NGX_OK;
}


u_char *
ngx_relay_escape(u_char *dst, size_t size, u_char *src, size_t len)
{
    u_char          ch, *end;
    size_t          i, need;
    static u_char   hex[] = "0123456789abcdef";

    need = 0;

    for (i = 0; i < len; i++) {
        ch = src[i];
        need += (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') ? 1 : 4;
    }

    /* what does not fit ends in "...": keep room for it */

    end = dst + size;

    if (need > size) {
        end = (size >= 3) ? end - 3 : dst;
    }

    for (i = 0; i < len; i++) {
        ch = src[i];

        if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') {
            if (end - dst < 1) {
                break;
            }

            *dst++ = ch;
            continue;
        }

        if (end - dst < 4) {
            break;
        }

        *dst++ = '\\';
        *dst++ = 'x';
        *dst++ = hex[ch >> 4];
        *dst++ = hex[ch & 0xf];
    }

    if (need > size && size >= 3) {
        *dst++ = '.';
        *dst++ = '.';
        *dst++ = '.';
    }

    return dst;
}


u_char *
ngx_relay_orcpt(u_char *dst, size_t size, ngx_str_t *addr)
{
    u_char          ch, *p, *end;
    size_t          i;
    ngx_uint_t      utf8;
    static u_char   hex[] = "0123456789ABCDEF";

    utf8 = 0;

    for (i = 0; i < addr->len; i++) {
        utf8 |= (addr->data[i] >= 0x80);
    }

    end = dst + ngx_min(size, NGX_RELAY_MAX_ORCPT);
    p = dst;

    if ((size_t) (end - p) < 7) {
        return NULL;
    }

    p = ngx_cpymem(p, utf8 ? "utf-8;" : "rfc822;", utf8 ? 6 : 7);

    for (i = 0; i < addr->len; i++) {
        ch = addr->data[i];

        if (ch > 32 && ch < 127 && ch != '+' && ch != '=' && ch != '\\') {
            if (end - p < 1) {
                return NULL;
            }

            *p++ = ch;
            continue;
        }

        if (utf8 && ch >= 0x80) {
            if (end - p < 1) {
                return NULL;
            }

            *p++ = ch;                   /* validated UTF-8, as is */
            continue;
        }

        if (utf8) {
            if (end - p < 6) {
                return NULL;
            }

            p = ngx_cpymem(p, "\\x{", 3);
            *p++ = hex[ch >> 4];
            *p++ = hex[ch & 0xf];
            *p++ = '}';
            continue;
        }

        if (end - p < 3) {
            return NULL;
        }

        *p++ = '+';
        *p++ = hex[ch >> 4];
        *p++ = hex[ch & 0xf];
    }

    return p;
}
