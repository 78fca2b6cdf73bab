
/*
 * Copyright (C) The relay authors
 */


/*
 * ngx_relay_parse_mail_from() and ngx_relay_parse_rcpt_to(): the path
 * (RFC 5321 4.1.2, 4.1.3, 4.5.3.1; RFC 6531 3.3).  Parameters are in
 * test_params.c.
 *
 * Each argument is parsed whole from an exact-size buffer, then again as
 * "MAIL "/"RCPT " + argument + CRLF framed by the line parser split at
 * every byte and split by ngx_relay_parse_command(); all must agree.
 */


#include "t.h"


#define M       0                   /* MAIL FROM */
#define R       1                   /* RCPT TO */

#define F_NULL      0x01
#define F_UTF8      0x02
#define F_QUOTED    0x04
#define F_LITERAL   0x08
#define F_ROUTE     0x10

#define OK      NGX_OK
#define INVAL   NGX_RELAY_PARSE_INVALID
#define BADADDR NGX_RELAY_PARSE_BAD_ADDRESS

#define X10     "xxxxxxxxxx"
#define X60     X10 X10 X10 X10 X10 X10
#define L64     X60 "xxxx"
#define L62     X60 "xx"
#define D63     X60 "ddd"
#define D64     X60 "dddd"
#define D60     X60

/* 63 + 1 + 63 + 1 + 63 + 1 + 60 = 252: "<a@" D252 ">" is 256 octets */
#define D252    D63 "." D63 "." D63 "." D60


static const struct {
    const char  *label;
    ngx_uint_t   cmd;
    ngx_str_t    arg;
    ngx_int_t    rc;
    ngx_str_t    addr;
    ngx_str_t    local;
    ngx_str_t    domain;
    ngx_uint_t   flags;
} cases[] = {

    /* framing of the argument */

    { "plain", M, T_STR("FROM:<a@b.c>"), OK, T_STR("a@b.c"), T_STR("a"),
      T_STR("b.c"), 0 },
    { "lower-case FROM:", M, T_STR("from:<a@b.c>"), OK, T_STR("a@b.c"),
      T_STR("a"), T_STR("b.c"), 0 },
    { "one space after FROM:", M, T_STR("FROM: <a@b.c>"), OK,
      T_STR("a@b.c"), T_STR("a"), T_STR("b.c"), 0 },
    { "two spaces after FROM:", M, T_STR("FROM:  <a@b.c>"), INVAL,
      T_NONE, T_NONE, T_NONE, 0 },
    { "space before colon", M, T_STR("FROM :<a@b.c>"), INVAL, T_NONE,
      T_NONE, T_NONE, 0 },
    { "no FROM:", M, T_STR("<a@b.c>"), INVAL, T_NONE, T_NONE, T_NONE, 0 },
    { "TO: in MAIL", M, T_STR("TO:<a@b.c>"), INVAL, T_NONE, T_NONE, T_NONE,
      0 },
    { "FROM: in RCPT", R, T_STR("FROM:<a@b.c>"), INVAL, T_NONE, T_NONE,
      T_NONE, 0 },
    { "empty", M, T_STR(""), INVAL, T_NONE, T_NONE, T_NONE, 0 },
    { "FROM: only", M, T_STR("FROM:"), INVAL, T_NONE, T_NONE, T_NONE, 0 },
    { "FROM: and space only", M, T_STR("FROM: "), INVAL, T_NONE, T_NONE,
      T_NONE, 0 },
    { "no brackets", M, T_STR("FROM:a@b.c"), INVAL, T_NONE, T_NONE, T_NONE,
      0 },
    { "no closing bracket", M, T_STR("FROM:<a@b.c"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "no opening bracket", R, T_STR("TO:a@b.c>"), INVAL, T_NONE, T_NONE,
      T_NONE, 0 },
    { "junk after path", M, T_STR("FROM:<a@b.c>x"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "second path", R, T_STR("TO:<a@b.c><d@e.f>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "RCPT plain", R, T_STR("TO:<a@b.c>"), OK, T_STR("a@b.c"), T_STR("a"),
      T_STR("b.c"), 0 },
    { "RCPT lower-case to:", R, T_STR("to: <a@b.c>"), OK, T_STR("a@b.c"),
      T_STR("a"), T_STR("b.c"), 0 },

    /* null path */

    { "null reverse-path", M, T_STR("FROM:<>"), OK, T_STR(""), T_STR(""),
      T_STR(""), F_NULL },
    { "null path in RCPT", R, T_STR("TO:<>"), BADADDR, T_NONE, T_NONE,
      T_NONE, 0 },
    { "null path with space inside", M, T_STR("FROM:< >"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },

    /* dot-string local parts */

    { "dots", M, T_STR("FROM:<a.b.c@d.e>"), OK, T_STR("a.b.c@d.e"),
      T_STR("a.b.c"), T_STR("d.e"), 0 },
    { "leading dot", M, T_STR("FROM:<.a@b.c>"), BADADDR, T_NONE, T_NONE,
      T_NONE, 0 },
    { "trailing dot", M, T_STR("FROM:<a.@b.c>"), BADADDR, T_NONE, T_NONE,
      T_NONE, 0 },
    { "two dots", M, T_STR("FROM:<a..b@c.d>"), BADADDR, T_NONE, T_NONE,
      T_NONE, 0 },
    { "percent", R, T_STR("TO:<a%b.c@d.e>"), OK, T_STR("a%b.c@d.e"),
      T_STR("a%b.c"), T_STR("d.e"), 0 },
    { "bang", R, T_STR("TO:<b.c!a@d.e>"), OK, T_STR("b.c!a@d.e"),
      T_STR("b.c!a"), T_STR("d.e"), 0 },
    { "all atext specials", R, T_STR("TO:<!#$%&'*+-/=?^_`{|}~@x.y>"), OK,
      T_STR("!#$%&'*+-/=?^_`{|}~@x.y"), T_STR("!#$%&'*+-/=?^_`{|}~"),
      T_STR("x.y"), 0 },
    { "two at signs", M, T_STR("FROM:<a@b@c.d>"), BADADDR, T_NONE, T_NONE,
      T_NONE, 0 },
    { "comma in local part", M, T_STR("FROM:<a,b@c.d>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "parenthesis", M, T_STR("FROM:<a(b)@c.d>"), BADADDR, T_NONE, T_NONE,
      T_NONE, 0 },
    { "backslash outside quotes", M, T_STR("FROM:<a\\b@c.d>"), BADADDR,
      T_NONE, T_NONE, T_NONE, 0 },
    { "no local part", M, T_STR("FROM:<@b.c>"), BADADDR, T_NONE, T_NONE,
      T_NONE, 0 },
    { "no domain", M, T_STR("FROM:<a@>"), BADADDR, T_NONE, T_NONE, T_NONE,
      0 },
    { "no at sign", M, T_STR("FROM:<a>"), BADADDR, T_NONE, T_NONE, T_NONE,
      0 },

    /* spaces */

    { "space in local part", M, T_STR("FROM:<a b@c.d>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "space in domain", M, T_STR("FROM:<a@c d>"), BADADDR, T_NONE, T_NONE,
      T_NONE, 0 },
    { "space after <", M, T_STR("FROM:< a@c.d>"), BADADDR, T_NONE, T_NONE,
      T_NONE, 0 },
    { "space before >", M, T_STR("FROM:<a@c.d >"), BADADDR, T_NONE, T_NONE,
      T_NONE, 0 },
    { "tab in path", M, T_STR("FROM:<a\t@c.d>"), BADADDR, T_NONE, T_NONE,
      T_NONE, 0 },

    /* quoted local parts */

    { "quoted with space", R, T_STR("TO:<\"a b\"@c.d>"), OK,
      T_STR("\"a b\"@c.d"), T_STR("\"a b\""), T_STR("c.d"), F_QUOTED },
    { "quoted with escaped quote", R, T_STR("TO:<\"a\\\"b\"@c.d>"), OK,
      T_STR("\"a\\\"b\"@c.d"), T_STR("\"a\\\"b\""), T_STR("c.d"), F_QUOTED },
    { "quoted with escaped backslash", R, T_STR("TO:<\"a\\\\b\"@c.d>"), OK,
      T_STR("\"a\\\\b\"@c.d"), T_STR("\"a\\\\b\""), T_STR("c.d"), F_QUOTED },
    { "quoted specials", R, T_STR("TO:<\"<a>@(b),;:[]\"@c.d>"), OK,
      T_STR("\"<a>@(b),;:[]\"@c.d"), T_STR("\"<a>@(b),;:[]\""), T_STR("c.d"),
      F_QUOTED },
    { "empty quoted string", R, T_STR("TO:<\"\"@c.d>"), OK,
      T_STR("\"\"@c.d"), T_STR("\"\""), T_STR("c.d"), F_QUOTED },
    { "quoted UTF-8", R, T_STR("TO:<\"\xc3\xa9 t\xc3\xa9\"@c.d>"), OK,
      T_STR("\"\xc3\xa9 t\xc3\xa9\"@c.d"), T_STR("\"\xc3\xa9 t\xc3\xa9\""),
      T_STR("c.d"), F_QUOTED|F_UTF8 },
    { "unterminated quote", R, T_STR("TO:<\"a@c.d>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "text after quote", R, T_STR("TO:<\"a\"b@c.d>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "quote mid-atom", R, T_STR("TO:<a\"b\"@c.d>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "quoted then dot", R, T_STR("TO:<\"a\".b@c.d>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "quoted, no domain", R, T_STR("TO:<\"a\">"), BADADDR, T_NONE, T_NONE,
      T_NONE, 0 },
    { "escaped control", R, T_STR("TO:<\"a\\\x01\"@c.d>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "escaped 8-bit", R, T_STR("TO:<\"a\\\xc3\xa9\"@c.d>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "escaped DEL", R, T_STR("TO:<\"a\\\x7f\"@c.d>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "control in quotes", R, T_STR("TO:<\"a\x01\"@c.d>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "DEL in quotes", R, T_STR("TO:<\"a\x7f\"@c.d>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "NUL in quotes", R, T_STR("TO:<\"a\0\"@c.d>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "escape at the end", R, T_STR("TO:<\"a\\"), BADADDR, T_NONE, T_NONE,
      T_NONE, 0 },

    /* domains */

    { "hyphen inside", M, T_STR("FROM:<a@b-c.d-e>"), OK, T_STR("a@b-c.d-e"),
      T_STR("a"), T_STR("b-c.d-e"), 0 },
    { "single label", M, T_STR("FROM:<a@localhost>"), OK,
      T_STR("a@localhost"), T_STR("a"), T_STR("localhost"), 0 },
    { "numeric labels", M, T_STR("FROM:<a@1.2.3.4>"), OK, T_STR("a@1.2.3.4"),
      T_STR("a"), T_STR("1.2.3.4"), 0 },
    { "leading hyphen", M, T_STR("FROM:<a@-b.c>"), BADADDR, T_NONE, T_NONE,
      T_NONE, 0 },
    { "trailing hyphen", M, T_STR("FROM:<a@b-.c>"), BADADDR, T_NONE, T_NONE,
      T_NONE, 0 },
    { "hyphen ends the domain", M, T_STR("FROM:<a@b.c->"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "empty label", M, T_STR("FROM:<a@b..c>"), BADADDR, T_NONE, T_NONE,
      T_NONE, 0 },
    { "leading dot in domain", M, T_STR("FROM:<a@.b.c>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "trailing dot in domain", M, T_STR("FROM:<a@b.c.>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "underscore in domain", M, T_STR("FROM:<a@b_c.d>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "63-octet label", M, T_STR("FROM:<a@" D63 ".com>"), OK,
      T_STR("a@" D63 ".com"), T_STR("a"), T_STR(D63 ".com"), 0 },
    { "64-octet label", M, T_STR("FROM:<a@" D64 ".com>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "64-octet last label", M, T_STR("FROM:<a@b." D64 ">"), BADADDR,
      T_NONE, T_NONE, T_NONE, 0 },

    /* address literals */

    { "IPv4 literal", R, T_STR("TO:<a@[192.0.2.1]>"), OK,
      T_STR("a@[192.0.2.1]"), T_STR("a"), T_STR("[192.0.2.1]"), F_LITERAL },
    { "IPv4 literal 255", R, T_STR("TO:<a@[255.255.255.255]>"), OK,
      T_STR("a@[255.255.255.255]"), T_STR("a"), T_STR("[255.255.255.255]"),
      F_LITERAL },
    { "IPv4 literal 0", R, T_STR("TO:<a@[0.0.0.0]>"), OK,
      T_STR("a@[0.0.0.0]"), T_STR("a"), T_STR("[0.0.0.0]"), F_LITERAL },
    { "IPv4 octet 256", R, T_STR("TO:<a@[256.0.0.1]>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "IPv4 four digits", R, T_STR("TO:<a@[0001.0.0.1]>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "IPv4 three octets", R, T_STR("TO:<a@[1.2.3]>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "IPv4 five octets", R, T_STR("TO:<a@[1.2.3.4.5]>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "IPv4 empty octet", R, T_STR("TO:<a@[1..3.4]>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "IPv4 trailing dot", R, T_STR("TO:<a@[1.2.3.4.]>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "IPv4 letters", R, T_STR("TO:<a@[1.2.3.a]>"), BADADDR, T_NONE, T_NONE,
      T_NONE, 0 },
    { "empty literal", R, T_STR("TO:<a@[]>"), BADADDR, T_NONE, T_NONE,
      T_NONE, 0 },
    { "unclosed literal", R, T_STR("TO:<a@[1.2.3.4>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "text after literal", R, T_STR("TO:<a@[1.2.3.4]x>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "literal then label", R, T_STR("TO:<a@[1.2.3.4].com>"), BADADDR,
      T_NONE, T_NONE, T_NONE, 0 },
    { "label then literal", R, T_STR("TO:<a@b.[1.2.3.4]>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "space in literal", R, T_STR("TO:<a@[1.2.3. 4]>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "IPv6 loopback", R, T_STR("TO:<a@[IPv6:::1]>"), OK,
      T_STR("a@[IPv6:::1]"), T_STR("a"), T_STR("[IPv6:::1]"), F_LITERAL },
    { "IPv6 tag case", R, T_STR("TO:<a@[ipv6:2001:DB8::1]>"), OK,
      T_STR("a@[ipv6:2001:DB8::1]"), T_STR("a"), T_STR("[ipv6:2001:DB8::1]"),
      F_LITERAL },
    { "IPv6 full", R, T_STR("TO:<a@[IPv6:1:2:3:4:5:6:7:8]>"), OK,
      T_STR("a@[IPv6:1:2:3:4:5:6:7:8]"), T_STR("a"),
      T_STR("[IPv6:1:2:3:4:5:6:7:8]"), F_LITERAL },
    { "IPv6 all zero", R, T_STR("TO:<a@[IPv6:::]>"), OK,
      T_STR("a@[IPv6:::]"), T_STR("a"), T_STR("[IPv6:::]"), F_LITERAL },
    { "IPv6 trailing ::", R, T_STR("TO:<a@[IPv6:fe80::]>"), OK,
      T_STR("a@[IPv6:fe80::]"), T_STR("a"), T_STR("[IPv6:fe80::]"),
      F_LITERAL },
    { "IPv6 :: for one group", R, T_STR("TO:<a@[IPv6:1:2:3::5:6:7:8]>"), OK,
      T_STR("a@[IPv6:1:2:3::5:6:7:8]"), T_STR("a"),
      T_STR("[IPv6:1:2:3::5:6:7:8]"), F_LITERAL },
    { "IPv6 with IPv4 tail", R, T_STR("TO:<a@[IPv6:::ffff:192.0.2.1]>"), OK,
      T_STR("a@[IPv6:::ffff:192.0.2.1]"), T_STR("a"),
      T_STR("[IPv6:::ffff:192.0.2.1]"), F_LITERAL },
    { "IPv6 full with IPv4 tail", R,
      T_STR("TO:<a@[IPv6:1:2:3:4:5:6:1.2.3.4]>"), OK,
      T_STR("a@[IPv6:1:2:3:4:5:6:1.2.3.4]"), T_STR("a"),
      T_STR("[IPv6:1:2:3:4:5:6:1.2.3.4]"), F_LITERAL },
    { "IPv6 seven groups", R, T_STR("TO:<a@[IPv6:1:2:3:4:5:6:7]>"), BADADDR,
      T_NONE, T_NONE, T_NONE, 0 },
    { "IPv6 nine groups", R, T_STR("TO:<a@[IPv6:1:2:3:4:5:6:7:8:9]>"),
      BADADDR, T_NONE, T_NONE, T_NONE, 0 },
    { "IPv6 eight groups and ::", R, T_STR("TO:<a@[IPv6:1:2:3:4:5:6:7::8]>"),
      BADADDR, T_NONE, T_NONE, T_NONE, 0 },
    { "IPv6 two ::", R, T_STR("TO:<a@[IPv6:1::2::3]>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "IPv6 five hex digits", R, T_STR("TO:<a@[IPv6:12345::]>"), BADADDR,
      T_NONE, T_NONE, T_NONE, 0 },
    { "IPv6 leading single colon", R, T_STR("TO:<a@[IPv6::1]>"), BADADDR,
      T_NONE, T_NONE, T_NONE, 0 },
    { "IPv6 trailing single colon", R, T_STR("TO:<a@[IPv6:1:2:3:4:5:6:7:]>"),
      BADADDR, T_NONE, T_NONE, T_NONE, 0 },
    { "IPv6 :::", R, T_STR("TO:<a@[IPv6:1:::2]>"), BADADDR, T_NONE, T_NONE,
      T_NONE, 0 },
    { "IPv6 not hex", R, T_STR("TO:<a@[IPv6:g::1]>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "IPv6 zone", R, T_STR("TO:<a@[IPv6:fe80::1%eth0]>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "IPv6 empty", R, T_STR("TO:<a@[IPv6:]>"), BADADDR, T_NONE, T_NONE,
      T_NONE, 0 },
    { "IPv6 without tag", R, T_STR("TO:<a@[::1]>"), BADADDR, T_NONE, T_NONE,
      T_NONE, 0 },
    { "IPv6 IPv4 only", R, T_STR("TO:<a@[IPv6:1.2.3.4]>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "IPv6 IPv4 tail too many groups", R,
      T_STR("TO:<a@[IPv6:1:2:3:4:5:6:7:1.2.3.4]>"), BADADDR, T_NONE, T_NONE,
      T_NONE, 0 },
    { "IPv6 IPv4 tail not last", R, T_STR("TO:<a@[IPv6:::1.2.3.4:1]>"),
      BADADDR, T_NONE, T_NONE, T_NONE, 0 },
    { "IPv6 bad IPv4 tail", R, T_STR("TO:<a@[IPv6:::1.2.3.256]>"), BADADDR,
      T_NONE, T_NONE, T_NONE, 0 },
    { "general literal", R, T_STR("TO:<a@[x400:c=us]>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },

    /* UTF-8 (RFC 6531) */

    { "UTF-8 local part", R, T_STR("TO:<\xc3\xa9l\xc3\xa8ve@x.y>"), OK,
      T_STR("\xc3\xa9l\xc3\xa8ve@x.y"), T_STR("\xc3\xa9l\xc3\xa8ve"),
      T_STR("x.y"), F_UTF8 },
    { "UTF-8 after dot", R, T_STR("TO:<a.\xc3\xa9@x.y>"), OK,
      T_STR("a.\xc3\xa9@x.y"), T_STR("a.\xc3\xa9"), T_STR("x.y"), F_UTF8 },
    { "UTF-8 domain", R, T_STR("TO:<a@\xe4\xbe\x8b\xe3\x81\x88.jp>"), OK,
      T_STR("a@\xe4\xbe\x8b\xe3\x81\x88.jp"), T_STR("a"),
      T_STR("\xe4\xbe\x8b\xe3\x81\x88.jp"), F_UTF8 },
    { "4-octet UTF-8", R, T_STR("TO:<\xf0\x9f\x98\x80@x.y>"), OK,
      T_STR("\xf0\x9f\x98\x80@x.y"), T_STR("\xf0\x9f\x98\x80"), T_STR("x.y"),
      F_UTF8 },
    { "U+10FFFF", R, T_STR("TO:<\xf4\x8f\xbf\xbf@x.y>"), OK,
      T_STR("\xf4\x8f\xbf\xbf@x.y"), T_STR("\xf4\x8f\xbf\xbf"), T_STR("x.y"),
      F_UTF8 },
    { "ASCII is not UTF-8 flagged", R, T_STR("TO:<ascii@x.y>"), OK,
      T_STR("ascii@x.y"), T_STR("ascii"), T_STR("x.y"), 0 },
    { "lone continuation", R, T_STR("TO:<\x80@x.y>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "truncated 2-octet", R, T_STR("TO:<\xc3@x.y>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "truncated 3-octet", R, T_STR("TO:<\xe2\x82@x.y>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "truncated by the line end", R, T_STR("TO:<\xf0\x9f\x98"), BADADDR,
      T_NONE, T_NONE, T_NONE, 0 },
    { "overlong 2-octet", R, T_STR("TO:<\xc0\xaf@x.y>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "overlong C1", R, T_STR("TO:<\xc1\xbf@x.y>"), BADADDR, T_NONE, T_NONE,
      T_NONE, 0 },
    { "overlong 3-octet", R, T_STR("TO:<\xe0\x80\xaf@x.y>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "overlong 4-octet", R, T_STR("TO:<\xf0\x8f\xbf\xbf@x.y>"), BADADDR,
      T_NONE, T_NONE, T_NONE, 0 },
    { "surrogate", R, T_STR("TO:<\xed\xa0\x80@x.y>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "above U+10FFFF", R, T_STR("TO:<\xf4\x90\x80\x80@x.y>"), BADADDR,
      T_NONE, T_NONE, T_NONE, 0 },
    { "F5 lead", R, T_STR("TO:<\xf5\x80\x80\x80@x.y>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "FF octet", R, T_STR("TO:<\xff@x.y>"), BADADDR, T_NONE, T_NONE, T_NONE,
      0 },
    { "ASCII where continuation due", R, T_STR("TO:<\xc3" "a@x.y>"),
      BADADDR, T_NONE, T_NONE, T_NONE, 0 },
    { "bad UTF-8 in domain", R, T_STR("TO:<a@x\xc3.y>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "truncated UTF-8 ends domain", R, T_STR("TO:<a@x.y\xc3>"), BADADDR,
      T_NONE, T_NONE, T_NONE, 0 },
    { "Latin-1 octet", R, T_STR("TO:<caf\xe9@x.y>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },

    /* Postmaster (RFC 5321 4.1.1.3) */

    { "Postmaster", R, T_STR("TO:<Postmaster>"), OK, T_STR("Postmaster"),
      T_STR("Postmaster"), T_STR(""), 0 },
    { "postmaster", R, T_STR("TO:<postmaster>"), OK, T_STR("postmaster"),
      T_STR("postmaster"), T_STR(""), 0 },
    { "POSTMASTER", R, T_STR("TO:<POSTMASTER>"), OK, T_STR("POSTMASTER"),
      T_STR("POSTMASTER"), T_STR(""), 0 },
    { "Postmaster with a domain", R, T_STR("TO:<Postmaster@x.y>"), OK,
      T_STR("Postmaster@x.y"), T_STR("Postmaster"), T_STR("x.y"), 0 },
    { "Postmaster in MAIL", M, T_STR("FROM:<Postmaster>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "other local part alone", R, T_STR("TO:<postmistress>"), BADADDR,
      T_NONE, T_NONE, T_NONE, 0 },
    { "Postmaster prefix", R, T_STR("TO:<Postmaste>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "quoted Postmaster", R, T_STR("TO:<\"Postmaster\">"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },

    /* source routes: checked, then dropped */

    { "source route", M, T_STR("FROM:<@a.b:c@d.e>"), OK, T_STR("c@d.e"),
      T_STR("c"), T_STR("d.e"), F_ROUTE },
    { "two-hop source route", R, T_STR("TO:<@a.b,@c.d:x@y.z>"), OK,
      T_STR("x@y.z"), T_STR("x"), T_STR("y.z"), F_ROUTE },
    { "route to quoted", R, T_STR("TO:<@a:\"x y\"@z>"), OK,
      T_STR("\"x y\"@z"), T_STR("\"x y\""), T_STR("z"), F_ROUTE|F_QUOTED },
    { "route, no mailbox", R, T_STR("TO:<@a.b:>"), BADADDR, T_NONE, T_NONE,
      T_NONE, 0 },
    { "route, no colon", R, T_STR("TO:<@a.b>"), BADADDR, T_NONE, T_NONE,
      T_NONE, 0 },
    { "route, empty domain", R, T_STR("TO:<@:x@y.z>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "route, no @ after comma", R, T_STR("TO:<@a,b:x@y.z>"), BADADDR,
      T_NONE, T_NONE, T_NONE, 0 },
    { "route, bad domain", R, T_STR("TO:<@a.:x@y.z>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "route, literal", R, T_STR("TO:<@[1.2.3.4]:x@y.z>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "route, then null", M, T_STR("FROM:<@a:>"), BADADDR, T_NONE, T_NONE,
      T_NONE, 0 },

    /* lengths (RFC 5321 4.5.3.1) */

    { "64-octet local part", R, T_STR("TO:<" L64 "@x.y>"), OK,
      T_STR(L64 "@x.y"), T_STR(L64), T_STR("x.y"), 0 },
    { "65-octet local part", R, T_STR("TO:<" L64 "x@x.y>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "64-octet quoted local part", R, T_STR("TO:<\"" L62 "\"@x.y>"), OK,
      T_STR("\"" L62 "\"@x.y"), T_STR("\"" L62 "\""), T_STR("x.y"),
      F_QUOTED },
    { "65-octet quoted local part", R, T_STR("TO:<\"" L62 "x\"@x.y>"),
      BADADDR, T_NONE, T_NONE, T_NONE, 0 },
    { "256-octet path", R, T_STR("TO:<a@" D252 ">"), OK,
      T_STR("a@" D252), T_STR("a"), T_STR(D252), 0 },
    { "257-octet path", R, T_STR("TO:<ab@" D252 ">"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "overlong domain", R, T_STR("TO:<a@" D252 ".com>"), BADADDR, T_NONE,
      T_NONE, T_NONE, 0 },
    { "overlong with a route", R, T_STR("TO:<@" D63 "," "@" D63 "," "@" D63
                                        ":a@" D63 ">"),
      BADADDR, T_NONE, T_NONE, T_NONE, 0 },
    { "overlong, never closed", R, T_STR("TO:<" L64 L64 L64 L64 L64),
      BADADDR, T_NONE, T_NONE, T_NONE, 0 },
};


static void
check(ngx_uint_t n, ngx_str_t *arg, const char *how)
{
    ngx_int_t              rc;
    ngx_uint_t             flags;
    ngx_relay_mail_args_t  ma;

    if (cases[n].cmd == M) {
        rc = ngx_relay_parse_mail_from(arg, 0, &ma);

    } else {
        rc = ngx_relay_parse_rcpt_to(arg, &ma);
    }

    t_check_rc(how, rc, cases[n].rc);

    if (rc != NGX_OK || cases[n].rc != NGX_OK) {
        return;
    }

    t_check_str("addr", &ma.path.addr, (ngx_str_t *) &cases[n].addr);
    t_check_str("local", &ma.path.local, (ngx_str_t *) &cases[n].local);
    t_check_str("domain", &ma.path.domain, (ngx_str_t *) &cases[n].domain);

    flags = (ma.path.null ? F_NULL : 0)
            | (ma.path.utf8 ? F_UTF8 : 0)
            | (ma.path.quoted ? F_QUOTED : 0)
            | (ma.path.literal ? F_LITERAL : 0)
            | (ma.path.route ? F_ROUTE : 0);

    t_check_uint("flags", flags, cases[n].flags);

    /* no parameters: every parameter field is at its "absent" value */

    if (ma.size != -1 || ma.body || ma.ret || ma.notify || ma.smtputf8
        || ma.envid.len || ma.auth.len || ma.orcpt.len)
    {
        t_fail("%s: parameters set without parameters", how);
    }
}


static ngx_uint_t
plain(ngx_str_t *s)
{
    size_t  i;

    if (s->len == 0 || s->data[0] == ' ' || s->data[s->len - 1] == ' '
        || s->data[s->len - 1] == '\t')
    {
        return 0;
    }

    for (i = 0; i < s->len; i++) {
        if (s->data[i] == '\0' || s->data[i] == '\n') {
            return 0;
        }
    }

    return 1;
}


static void
run(ngx_uint_t n)
{
    ngx_str_t  arg;

    arg.len = cases[n].arg.len;
    arg.data = t_dup((ngx_str_t *) &cases[n].arg);

    check(n, &arg, "whole");

    free(arg.data);

    if (!plain((ngx_str_t *) &cases[n].arg)) {
        return;            /* the command parser would trim or refuse it */
    }

    t_framed_command(n, cases[n].cmd == M, (ngx_str_t *) &cases[n].arg,
                     check);
}


int
main(void)
{
    ngx_uint_t  n;

    for (n = 0; n < sizeof(cases) / sizeof(cases[0]); n++) {
        t_begin(cases[n].label);
        run(n);
        t_end();
    }

    return t_summary("test_path");
}
