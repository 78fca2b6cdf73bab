
/*
 * Copyright (C) The relay authors
 */


/*
 * Byte parsers for the wire formats: SMTP command lines, paths (RFC 5321
 * 4.1.2, RFC 6531), MAIL/RCPT parameters (SIZE, BODY, SMTPUTF8, RET, ENVID,
 * NOTIFY, ORCPT, AUTH), BDAT arguments, DATA content, AUTH responses
 * (base64), a server's replies with their EHLO keywords and enhanced
 * status codes; POP3 command lines.
 *
 * No allocation, no I/O, no calls into the nginx core (only its macros and
 * types), so the unit tests link this file alone.  Results are ngx_str_t
 * pointing into the caller's buffer; every count is capped.
 */


#ifndef _NGX_RELAY_PARSE_H_INCLUDED_
#define _NGX_RELAY_PARSE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


#define NGX_RELAY_PARSE_INVALID       10   /* syntax error: 501 5.5.4 */
#define NGX_RELAY_PARSE_TOO_LONG      11   /* line over the limit: 500 5.5.6 */
#define NGX_RELAY_PARSE_BAD_ADDRESS   12   /* bad mailbox: 501 5.1.3/5.1.7 */
#define NGX_RELAY_PARSE_BAD_PARAM     13   /* unknown/bad parameter: 555 */
#define NGX_RELAY_PARSE_TOO_BIG       14   /* SIZE= over limit: 552 5.3.4 */

#define NGX_RELAY_MAX_LOCAL_PART      64   /* RFC 5321 4.5.3.1.1 */
#define NGX_RELAY_MAX_DOMAIN          255  /* RFC 5321 4.5.3.1.2 */
#define NGX_RELAY_MAX_PATH            256  /* RFC 5321 4.5.3.1.3 */
#define NGX_RELAY_MAX_ENVID           100  /* RFC 3461 4.4 */
#define NGX_RELAY_MAX_ORCPT           500  /* RFC 3461 4.2 */


typedef enum {
    NGX_RELAY_CMD_UNKNOWN = 0,
    NGX_RELAY_CMD_HELO,
    NGX_RELAY_CMD_EHLO,
    NGX_RELAY_CMD_MAIL,
    NGX_RELAY_CMD_RCPT,
    NGX_RELAY_CMD_DATA,
    NGX_RELAY_CMD_BDAT,
    NGX_RELAY_CMD_RSET,
    NGX_RELAY_CMD_NOOP,
    NGX_RELAY_CMD_QUIT,
    NGX_RELAY_CMD_VRFY,
    NGX_RELAY_CMD_EXPN,
    NGX_RELAY_CMD_HELP,
    NGX_RELAY_CMD_STARTTLS,
    NGX_RELAY_CMD_AUTH
} ngx_relay_cmd_e;


/* BODY= values (RFC 6152, RFC 3030) */
#define NGX_RELAY_BODY_NONE           0
#define NGX_RELAY_BODY_7BIT           1
#define NGX_RELAY_BODY_8BITMIME       2
#define NGX_RELAY_BODY_BINARYMIME     3

/* RET= values (RFC 3461 4.3) */
#define NGX_RELAY_RET_NONE            0
#define NGX_RELAY_RET_FULL            1
#define NGX_RELAY_RET_HDRS            2

/* NOTIFY= bits (RFC 3461 4.1); 0 means "not given" */
#define NGX_RELAY_NOTIFY_NEVER        0x01
#define NGX_RELAY_NOTIFY_SUCCESS      0x02
#define NGX_RELAY_NOTIFY_FAILURE      0x04
#define NGX_RELAY_NOTIFY_DELAY        0x08


/*
 * Line framing.  Finds one line ending in LF (an optional CR before it is
 * stripped) of at most lp->max octets including the CRLF.
 *
 *   NGX_OK                    lp->line is the line without CR LF;
 *                             in->pos is just past the LF.
 *   NGX_AGAIN                 no complete line in [pos, last): in->pos is
 *                             unchanged, unless the partial line already
 *                             exceeds max: then the parser enters its
 *                             discard state and consumes (in->pos = last).
 *   NGX_RELAY_PARSE_TOO_LONG  an overlong line has ended (LF seen):
 *                             in->pos is just past its LF, the parser is
 *                             back in its normal state.
 */

typedef struct {
    ngx_uint_t               state;
    size_t                   max;
    ngx_str_t                line;
} ngx_relay_line_parser_t;

ngx_int_t ngx_relay_parse_line(ngx_relay_line_parser_t *lp, ngx_buf_t *in);


/*
 * A command line (without CRLF): the verb, case-insensitive, then the
 * argument.  "MAIL FROM:<a> X" gives NGX_RELAY_CMD_MAIL and "FROM:<a> X";
 * "RCPT TO:<a>" gives "TO:<a>".  Leading spaces of the argument and
 * trailing spaces of the line are trimmed.  An unknown verb is NGX_OK with
 * NGX_RELAY_CMD_UNKNOWN; a line with NUL or non-ASCII bytes in the verb is
 * NGX_RELAY_PARSE_INVALID.
 */

typedef struct {
    ngx_uint_t               verb;         /* ngx_relay_cmd_e */
    ngx_str_t                name;         /* the verb as sent */
    ngx_str_t                arg;
} ngx_relay_command_t;

ngx_int_t ngx_relay_parse_command(ngx_str_t *line, ngx_relay_command_t *cmd);


/*
 * A reverse- or forward-path (RFC 5321 4.1.2): "<" [ A-d-l ":" ] Mailbox ">"
 * or "<>".  A source route (A-d-l) is checked and dropped (RFC 5321 C:
 * accept, ignore).  Local part: dot-string or quoted string; domain: names
 * of letters, digits, hyphens (or UTF-8), or an address literal
 * "[1.2.3.4]" / "[IPv6:...]".  Non-ASCII octets must be valid UTF-8 and set
 * path->utf8 (the session refuses them without SMTPUTF8).  Lengths are
 * capped at the RFC 5321 4.5.3.1 limits.
 */

typedef struct {
    ngx_str_t                addr;         /* local@domain, without <> */
    ngx_str_t                local;        /* as sent, quotes included */
    ngx_str_t                domain;       /* literal with its brackets */
    unsigned                 null:1;       /* "<>" */
    unsigned                 utf8:1;
    unsigned                 quoted:1;     /* local part is quoted */
    unsigned                 literal:1;    /* domain is [address] */
    unsigned                 route:1;      /* a source route was dropped */
} ngx_relay_path_t;


/*
 * MAIL FROM and RCPT TO arguments.  The argument is what
 * ngx_relay_parse_command() gave, "FROM:<path> params" or "TO:<path>
 * params" ("FROM: <path>" with one space is tolerated).
 *
 * MAIL parameters: SIZE=n (n > max_size gives NGX_RELAY_PARSE_TOO_BIG
 * when max_size is not 0), BODY=7BIT|8BITMIME|BINARYMIME, SMTPUTF8,
 * RET=FULL|HDRS, ENVID=xtext, AUTH=xtext|"<>".
 * RCPT parameters: NOTIFY=NEVER|list of SUCCESS,FAILURE,DELAY (NEVER alone),
 * ORCPT=addr-type;xtext.
 * Keywords are case-insensitive; a repeated, unknown or malformed one is
 * NGX_RELAY_PARSE_BAD_PARAM; a bad path NGX_RELAY_PARSE_BAD_ADDRESS; no
 * "FROM:"/"TO:" or no "<" NGX_RELAY_PARSE_INVALID.  "<>" is valid only in
 * MAIL; RCPT TO:<Postmaster> (no domain, RFC 5321 4.1.1.3) is valid and
 * gives local "Postmaster" with an empty domain.
 */

typedef struct {
    ngx_relay_path_t         path;

    off_t                    size;         /* SIZE=, -1 when absent */
    ngx_uint_t               body;         /* NGX_RELAY_BODY_* */
    ngx_uint_t               ret;          /* NGX_RELAY_RET_* */
    ngx_str_t                envid;        /* xtext, as sent */
    ngx_str_t                auth;         /* AUTH= value, as sent */
    unsigned                 smtputf8:1;

    ngx_uint_t               notify;       /* NGX_RELAY_NOTIFY_* bits */
    ngx_str_t                orcpt;        /* "rfc822;xtext", as sent */
} ngx_relay_mail_args_t;

ngx_int_t ngx_relay_parse_mail_from(ngx_str_t *arg, off_t max_size,
    ngx_relay_mail_args_t *ma);
ngx_int_t ngx_relay_parse_rcpt_to(ngx_str_t *arg, ngx_relay_mail_args_t *ma);


/*
 * EHLO/HELO argument: a domain name or an address literal, nothing after it
 * but spaces.  Returns NGX_OK or NGX_RELAY_PARSE_INVALID.
 */

ngx_int_t ngx_relay_parse_helo(ngx_str_t *arg);


/*
 * BDAT argument: "chunk-size [LAST]" (RFC 3030 2).  chunk-size is 1 to 18
 * digits.  Returns NGX_OK or NGX_RELAY_PARSE_INVALID.
 */

ngx_int_t ngx_relay_parse_bdat(ngx_str_t *arg, off_t *size, ngx_uint_t *last);


/*
 * DATA content.  Copies to *dst without dot-stuffing (RFC 5321 4.5.2) and
 * stops after CRLF "." CRLF (the CRLF before the dot belongs to the
 * message; the terminating "." CRLF does not).  Only CRLF ends a line:
 * bare CR or LF is payload and sets the flags, so "\n.\n", "\r.\r",
 * "\n.\r\n" and "\r\n.\n" never end a message.  *dst has room for
 * (last - pos) + 1 octets.  Returns NGX_OK (in->pos just past the final
 * LF) or NGX_AGAIN (all input consumed).  Starts in the line-start state
 * (zeroed struct), i.e. right after the DATA command's 354.
 */

typedef struct {
    ngx_uint_t               state;
    unsigned                 bare_cr:1;
    unsigned                 bare_lf:1;
} ngx_relay_data_parser_t;

ngx_int_t ngx_relay_parse_data(ngx_relay_data_parser_t *dp, ngx_buf_t *in,
    u_char **dst);

/*
 * For dot-stuffing: the first "." in [p, last) that starts a line (after
 * an LF, or at p when line_start), or last.
 */

u_char *ngx_relay_parse_line_dot(u_char *p, u_char *last,
    ngx_uint_t line_start);


/*
 * AUTH PLAIN response (RFC 4616), already base64-decoded:
 * [authzid] NUL authcid NUL passwd.  authzid, when present, must equal
 * authcid.  Returns NGX_OK or NGX_RELAY_PARSE_INVALID.
 */

ngx_int_t ngx_relay_parse_auth_plain(ngx_str_t *decoded, ngx_str_t *user,
    ngx_str_t *passwd);


/* xtext (RFC 3461 4): "+" HEXCHAR HEXCHAR or printable ASCII except "+" "=" */

ngx_int_t ngx_relay_check_xtext(ngx_str_t *s);


/*
 * An ORCPT value for an address that came without one (RFC 3461 4.2):
 * "rfc822;" and the address as xtext, or for an address with UTF-8
 * "utf-8;" and utf-8-addr-unitext (RFC 6533 3: UTF-8 as is, "\x{HEX}"
 * for what xtext forbids).  Writes at most size octets; NULL when it does
 * not fit or would be over 500 characters (then there is none).
 */

u_char *ngx_relay_orcpt(u_char *dst, size_t size, ngx_str_t *addr);


/*
 * One response line of an AUTH exchange (RFC 4954 4): "*" cancels
 * (NGX_DECLINED), "=" is an empty response, anything else is base64
 * (RFC 4648 4; the padding may be left out, as nginx's decoder allows)
 * decoded into buf of size octets: NGX_OK with *decoded in buf, or
 * NGX_RELAY_PARSE_INVALID for a character outside the alphabet, a length
 * no encoding has, data after the padding, or more than size octets.
 */

ngx_int_t ngx_relay_parse_auth_response(ngx_str_t *line, u_char *buf,
    size_t size, ngx_str_t *decoded);


/*
 * An SMTP reply (RFC 5321 4.2), single or multiline, from a remote server.
 * Lines end in CRLF (a bare LF is tolerated); every line carries the same
 * three-digit code, "-" continues, " " (or nothing) ends.  The text of all
 * lines is collected into rp->text (truncated, control characters turned
 * into spaces) for logs and DSNs.  Returns NGX_OK (in->pos just past the
 * reply), NGX_AGAIN, or NGX_RELAY_PARSE_INVALID for garbage, a changing
 * code, a line over 2048 octets or a reply over 100 lines.  Start from a
 * zeroed struct for each reply.
 *
 * With rp->ehlo set (the reply to EHLO), every line but the first is an
 * EHLO keyword and its parameters (RFC 5321 4.1.1.1): the ones the client
 * uses set their bit in rp->ext, and SIZE's parameter is rp->size (0 when
 * absent or beyond off_t).  A keyword counts only as a line's first word,
 * never inside the greeting or another keyword's parameters.
 */

#define NGX_RELAY_REPLY_TEXT         512
#define NGX_RELAY_EHLO_KEYWORD       24

#define NGX_RELAY_EXT_PIPELINING     0x0001
#define NGX_RELAY_EXT_SIZE           0x0002
#define NGX_RELAY_EXT_8BITMIME       0x0004
#define NGX_RELAY_EXT_SMTPUTF8       0x0008
#define NGX_RELAY_EXT_STARTTLS       0x0010
#define NGX_RELAY_EXT_DSN            0x0020
#define NGX_RELAY_EXT_CHUNKING       0x0040
#define NGX_RELAY_EXT_BINARYMIME     0x0080
#define NGX_RELAY_EXT_ENHANCED       0x0100    /* ENHANCEDSTATUSCODES */

typedef struct {
    ngx_uint_t               state;
    ngx_uint_t               code;
    ngx_uint_t               line_code;
    ngx_uint_t               lines;
    size_t                   line_len;
    size_t                   text_len;
    u_char                   text[NGX_RELAY_REPLY_TEXT];

    unsigned                 ehlo:1;       /* set by the caller */
    ngx_uint_t               ext;          /* NGX_RELAY_EXT_* */
    off_t                    size;
    ngx_uint_t               kw_state;
    size_t                   kw_len;
    u_char                   kw[NGX_RELAY_EHLO_KEYWORD];
} ngx_relay_reply_parser_t;

ngx_int_t ngx_relay_parse_reply(ngx_relay_reply_parser_t *rp, ngx_buf_t *in);


/*
 * The first enhanced status code (RFC 3463) of class "class" ('2', '4',
 * '5') in a reply text: "c.ddd.ddd" at the start or after a space, ending
 * at a space or the end.  NGX_OK copies it to out (12 octets with the
 * NUL), else NGX_DECLINED.
 */

ngx_int_t ngx_relay_parse_enhanced(u_char *p, size_t len, u_char class,
    u_char *out);


/*
 * A POP3 command line (RFC 1939 3, RFC 2449), without CRLF: a keyword of
 * 3 or 4 letters, case-insensitive, and up to two arguments separated by
 * spaces (more set "more"); "rest" is everything after the keyword and
 * its spaces (PASS takes a password with spaces).  An unknown keyword is
 * NGX_OK with NGX_RELAY_POP3_UNKNOWN; a keyword that is not 3 or 4
 * letters, or NUL anywhere, is NGX_RELAY_PARSE_INVALID.  Trailing spaces
 * are not part of anything.
 */

typedef enum {
    NGX_RELAY_POP3_UNKNOWN = 0,
    NGX_RELAY_POP3_USER,
    NGX_RELAY_POP3_PASS,
    NGX_RELAY_POP3_AUTH,
    NGX_RELAY_POP3_STLS,
    NGX_RELAY_POP3_CAPA,
    NGX_RELAY_POP3_QUIT,
    NGX_RELAY_POP3_NOOP,
    NGX_RELAY_POP3_STAT,
    NGX_RELAY_POP3_LIST,
    NGX_RELAY_POP3_RETR,
    NGX_RELAY_POP3_DELE,
    NGX_RELAY_POP3_RSET,
    NGX_RELAY_POP3_TOP,
    NGX_RELAY_POP3_UIDL
} ngx_relay_pop3_cmd_e;

typedef struct {
    ngx_uint_t               verb;         /* ngx_relay_pop3_cmd_e */
    ngx_str_t                name;         /* the keyword as sent */
    ngx_str_t                args[2];
    ngx_uint_t               nargs;        /* 0..2 */
    ngx_str_t                rest;
    unsigned                 more:1;       /* a third argument or more */
} ngx_relay_pop3_command_t;

ngx_int_t ngx_relay_parse_pop3_command(ngx_str_t *line,
    ngx_relay_pop3_command_t *cmd);


/*
 * A POP3 number argument (a message number, TOP's line count): 1 to 9
 * digits, nothing else.  NGX_OK with *n, else NGX_RELAY_PARSE_INVALID.
 */

ngx_int_t ngx_relay_parse_pop3_number(ngx_str_t *arg, ngx_uint_t *n);


/*
 * What a log line or a reply quotes of someone else's octets: printable
 * ASCII as is, but '"' and '\\'; everything else (control characters,
 * DEL, 8-bit) as "\xHH".  Writes at most size octets to dst (a quoted
 * string that does not fit ends in "..."); returns the end.  Never
 * writes a control character.
 */

u_char *ngx_relay_escape(u_char *dst, size_t size, u_char *src, size_t len);


#endif /* _NGX_RELAY_PARSE_H_INCLUDED_ */
