
/*
 * Copyright (C) The relay authors
 */


/*
 * lib/relay_queue.c, the format: parsing queue files a real relay wrote
 * (data/fresh.q: just queued, with tenant, 8BITMIME, SMTPUTF8, RET, ENVID,
 * ORCPT and every NOTIFY form; data/deferred.q: tried once, with its last
 * error), files written before the "delay-warned", "hold" and "error"
 * lines, truncated and damaged files (cut at every octet), rendering a
 * header byte for byte as the spool writes it, and every in-place update.
 */


#include "t.h"


static t_spool_t  sp;


/* a queue file from text without its trailer: the trailer added */

static unsigned char *
t_finish(const char *text, size_t len, size_t *out)
{
    unsigned char  *buf;

    buf = malloc(len + RELAY_QUEUE_TRAILER_LEN + 1);
    if (buf == NULL) {
        exit(1);
    }

    memcpy(buf, text, len);
    (void) snprintf((char *) buf + len, RELAY_QUEUE_TRAILER_LEN + 1,
                    "\nRELAY-END %020zu\n", len);
    *out = len + RELAY_QUEUE_TRAILER_LEN;

    return buf;
}


/* the real file's text, trailer cut off, without the lines starting so */

static char *
t_strip(const unsigned char *data, size_t len, const char *const *drop)
{
    char         *out, *q;
    size_t        i;
    const char   *p, *eol, *end, *body;

    out = malloc(len + 1);
    if (out == NULL) {
        exit(1);
    }

    end = (const char *) data + len - RELAY_QUEUE_TRAILER_LEN;
    body = strstr((const char *) data, "\n\n") + 1;
    q = out;

    for (p = (const char *) data; p < body; p = eol + 1) {
        eol = memchr(p, '\n', body - p);

        for (i = 0; drop[i]; i++) {
            if (strncmp(p, drop[i], strlen(drop[i])) == 0) {
                break;
            }
        }

        if (drop[i] == NULL) {
            memcpy(q, p, eol + 1 - p);
            q += eol + 1 - p;
        }
    }

    memcpy(q, body, end - body);
    q += end - body;
    *q = '\0';

    return out;
}


static int
t_load(const char *name, const void *data, size_t len, relay_queue_msg_t *m,
    int *err)
{
    int  fd, rc;

    t_put(&sp, name, data, len);
    fd = t_open(&sp, name, O_RDONLY);
    rc = relay_queue_read(fd, m, err);
    (void) close(fd);

    return rc;
}


static void
test_fresh(void)
{
    int                 err;
    size_t              len;
    unsigned char      *data;
    relay_queue_msg_t   m;
    relay_queue_rcpt_t *r;

    data = t_read_data("fresh.q", &len);

    t_begin("a file the spool wrote: envelope");

    t_expect(t_load("fresh", data, len, &m, &err) == RELAY_QUEUE_OK,
             "read: errno %d", err);
    t_expect(t_str_is(&m.id, "6b1132a80feP6c8fSe948"), "id %s", t_show(&m.id));
    t_expect(m.arrival == 1796289192, "arrival %lld",
             (long long) m.arrival);
    t_expect(t_str_is(&m.client, "127.0.0.1"), "client %s",
             t_show(&m.client));
    t_expect(t_str_is(&m.helo, "capture.example"), "helo");
    t_expect(m.auth.len == 0, "auth \"-\" is none");
    t_expect(m.body == RELAY_QUEUE_BODY_8BITMIME && m.eightbit, "body");
    t_expect(m.smtputf8, "smtputf8");
    t_expect(m.ret == RELAY_QUEUE_RET_HDRS, "ret %u", m.ret);
    t_expect(t_str_is(&m.envid, "abc+2Bdef"), "envid %s", t_show(&m.envid));
    t_expect(t_str_is(&m.tenant, "acme"), "tenant");
    t_expect(t_str_is(&m.sender, "sender@example.org"), "sender");
    t_expect(m.next == 0 && m.attempts == 0, "next %lld attempts %u",
             (long long) m.next, m.attempts);
    t_expect(m.next_offset && memcmp(data + m.next_offset, "0000000000 0000",
                                     15) == 0, "next offset");
    t_expect(m.warned_offset && data[m.warned_offset] == '0'
             && !m.delay_warned, "delay-warned");
    t_expect(m.hold_offset && data[m.hold_offset] == '0' && !m.held,
             "hold");
    t_expect(m.error_offset && m.last_error.len == 0, "error: empty");
    t_expect(m.size == (off_t) len, "size");
    t_end();

    t_begin("a file the spool wrote: recipients and message");

    t_expect(m.nrcpts == 4, "nrcpts %zu", m.nrcpts);

    if (m.nrcpts == 4) {
        r = m.rcpts;
        t_expect(r[0].state == 'P' && data[r[0].state_offset] == 'P',
                 "state");
        t_expect(r[0].notify == (RELAY_QUEUE_NOTIFY_SUCCESS
                                 |RELAY_QUEUE_NOTIFY_FAILURE), "notify 0");
        t_expect(t_str_is(&r[0].orcpt, "rfc822;one@cap.test"), "orcpt");
        t_expect(t_str_is(&r[0].addr, "one@cap.test"), "addr 0");
        t_expect(r[1].notify == 0 && r[1].orcpt.len == 0
                 && t_str_is(&r[1].addr, "two@cap.test"), "rcpt 1");
        t_expect(r[2].notify == RELAY_QUEUE_NOTIFY_NEVER, "NEVER");
        t_expect(r[3].notify == RELAY_QUEUE_NOTIFY_DELAY
                 && t_str_is(&r[3].addr, "four@other.test"), "DELAY");
    }

    t_expect(memcmp(data + m.message_offset, "Received: from ", 15) == 0,
             "message offset");
    t_expect(m.message_offset + m.message_size + RELAY_QUEUE_TRAILER_LEN
             == (off_t) len, "message size");
    t_end();

    relay_queue_free(&m);
    free(data);
}


static void
test_deferred(void)
{
    int                 err;
    size_t              len;
    unsigned char      *data;
    relay_queue_msg_t   m;

    data = t_read_data("deferred.q", &len);

    t_begin("a file tried once: schedule and last error");

    t_expect(t_load("deferred", data, len, &m, &err) == RELAY_QUEUE_OK,
             "read: errno %d", err);
    t_expect(m.attempts == 1 && m.next == 1796292786, "next %lld %u",
             (long long) m.next, m.attempts);
    t_expect(t_str_is(&m.last_error, "<one@cap.test> 127.0.0.1[127.0.0.1]:1:"
                      " 4.4.1 connect failed: Connection refused"),
             "last error %s", t_show(&m.last_error));
    t_expect(m.body == RELAY_QUEUE_BODY_NONE && !m.smtputf8, "body");
    t_end();

    relay_queue_free(&m);
    free(data);
}


/* the spool's own header, rebuilt from what it says */

static void
test_render(void)
{
    int                      err;
    size_t                   len, i, hlen, n;
    unsigned char           *data, *buf, *p;
    relay_queue_msg_t        m;
    relay_queue_envelope_t   env;

    static const char  *files[] = { "fresh.q", "deferred.q" };

    for (i = 0; i < 2; i++) {
        data = t_read_data(files[i], &len);

        t_begin(i == 0 ? "render: fresh.q byte for byte"
                       : "render: deferred.q as it was queued");

        if (t_load("render", data, len, &m, &err) != RELAY_QUEUE_OK) {
            t_fail("read: errno %d", err);
            t_end();
            free(data);
            continue;
        }

        memset(&env, 0, sizeof(env));
        env.id = m.id;
        env.arrival = m.arrival;
        env.client = m.client;
        env.helo = m.helo;
        env.auth = m.auth;
        env.body = m.body;
        env.smtputf8 = m.smtputf8;
        env.ret = m.ret;
        env.envid = m.envid;
        env.tenant = m.tenant;
        env.sender = m.sender;

        hlen = relay_queue_envelope_len(&env);
        for (n = 0; n < m.nrcpts; n++) {
            hlen += relay_queue_rcpt_len(m.rcpts[n].notify, &m.rcpts[n].orcpt,
                                         &m.rcpts[n].addr);
        }

        buf = malloc(hlen + 1 + RELAY_QUEUE_TRAILER_LEN);

        p = relay_queue_render_envelope(buf, &env);
        t_expect((size_t) (p - buf) == relay_queue_envelope_len(&env),
                 "envelope_len %zu, rendered %zu",
                 relay_queue_envelope_len(&env), (size_t) (p - buf));

        for (n = 0; n < m.nrcpts; n++) {
            p = relay_queue_render_rcpt(p, m.rcpts[n].notify,
                                        &m.rcpts[n].orcpt, &m.rcpts[n].addr);
        }

        *p++ = '\n';

        t_expect((size_t) (p - buf) == hlen + 1, "lengths %zu %zu",
                 (size_t) (p - buf), hlen + 1);

        if (i == 0) {
            t_expect((off_t) (p - buf) == m.message_offset
                     && memcmp(buf, data, p - buf) == 0,
                     "header differs:\n%.*s", (int) (p - buf), buf);

        } else {
            /* the same but for what the first attempt rewrote */
            t_expect(memcmp(buf, data, m.next_offset) == 0
                     && memcmp(p - 100, data + m.message_offset - 100, 100)
                        == 0, "header differs");
        }

        p = relay_queue_render_trailer(buf, len - RELAY_QUEUE_TRAILER_LEN);
        t_expect(p - buf == RELAY_QUEUE_TRAILER_LEN
                 && memcmp(buf, data + len - RELAY_QUEUE_TRAILER_LEN,
                           RELAY_QUEUE_TRAILER_LEN) == 0, "trailer");

        t_end();

        relay_queue_free(&m);
        free(buf);
        free(data);
    }
}


/* what no real file had yet: every NOTIFY set, "-" fields, no tenant */

static void
test_render_round_trip(void)
{
    int                      err;
    size_t                   len, hlen;
    unsigned char            buf[4096], *p, *file;
    relay_queue_msg_t        m;
    relay_queue_envelope_t   env;

    static relay_str_t  orcpt = T_STR("rfc822;x@y"), none = { 0, NULL },
                        a1 = T_STR("\"a b\"@example.com"),
                        a2 = T_STR("c@example.net");

    t_begin("render and parse back: no auth, envid, tenant; NOTIFY sets");

    memset(&env, 0, sizeof(env));
    env.id.data = (unsigned char *) "QID1";
    env.id.len = 4;
    env.arrival = 7;
    env.client.data = (unsigned char *) "::1";
    env.client.len = 3;
    env.body = RELAY_QUEUE_BODY_BINARYMIME;
    env.ret = RELAY_QUEUE_RET_FULL;

    p = relay_queue_render_envelope(buf, &env);
    hlen = p - buf;
    t_expect(hlen == relay_queue_envelope_len(&env), "envelope_len");

    p = relay_queue_render_rcpt(p, RELAY_QUEUE_NOTIFY_SUCCESS
                                   |RELAY_QUEUE_NOTIFY_FAILURE
                                   |RELAY_QUEUE_NOTIFY_DELAY, &orcpt, &a1);
    t_expect((size_t) (p - buf - hlen)
             == relay_queue_rcpt_len(RELAY_QUEUE_NOTIFY_SUCCESS
                                     |RELAY_QUEUE_NOTIFY_FAILURE
                                     |RELAY_QUEUE_NOTIFY_DELAY, &orcpt, &a1),
             "rcpt_len");
    p = relay_queue_render_rcpt(p, RELAY_QUEUE_NOTIFY_DELAY
                                   |RELAY_QUEUE_NOTIFY_FAILURE, &none, &a2);
    *p++ = '\n';
    memcpy(p, "hello\r\n", 7);
    p += 7;

    t_expect(strstr((char *) buf, "auth -\n") && strstr((char *) buf,
             "envid -\n") && !strstr((char *) buf, "tenant")
             && strstr((char *) buf, "body BINARYMIME\nsmtputf8 0\nret FULL\n")
             && strstr((char *) buf, "sender \nnext 0000000000 0000\n"),
             "text:\n%.*s", (int) (p - buf), buf);
    t_expect(strstr((char *) buf, "rcpt P SUCCESS,FAILURE,DELAY rfc822;x@y "
                    "\"a b\"@example.com\nrcpt P FAILURE,DELAY - "
                    "c@example.net\n\n") != NULL, "rcpt lines");

    file = t_finish((char *) buf, p - buf, &len);

    if (t_load("roundtrip", file, len, &m, &err) != RELAY_QUEUE_OK) {
        t_fail("read back: errno %d", err);

    } else {
        t_expect(t_str_is(&m.id, "QID1") && m.arrival == 7
                 && t_str_is(&m.client, "::1") && m.helo.len == 0
                 && m.auth.len == 0 && m.envid.len == 0 && m.tenant.len == 0
                 && m.sender.len == 0, "fields");
        t_expect(m.body == RELAY_QUEUE_BODY_BINARYMIME && !m.eightbit
                 && m.ret == RELAY_QUEUE_RET_FULL, "body, ret");
        t_expect(m.nrcpts == 2
                 && m.rcpts[0].notify == (RELAY_QUEUE_NOTIFY_SUCCESS
                                          |RELAY_QUEUE_NOTIFY_FAILURE
                                          |RELAY_QUEUE_NOTIFY_DELAY)
                 && t_str_is(&m.rcpts[0].addr, "\"a b\"@example.com")
                 && t_str_is(&m.rcpts[0].orcpt, "rfc822;x@y")
                 && m.rcpts[1].orcpt.len == 0, "rcpts");
        t_expect(m.message_size == 7, "message size %lld",
                 (long long) m.message_size);
    }

    relay_queue_free(&m);
    free(file);
    t_end();
}


/* files written before "delay-warned", "hold" or "error" existed */

static const struct {
    const char  *label;
    const char  *drop[4];
    int          warned;
    int          hold;
    int          error;
} t_older[] = {
    { "older file: no hold line", { "hold ", NULL }, 1, 0, 1 },
    { "older file: no delay-warned, no hold",
      { "delay-warned ", "hold ", NULL }, 0, 0, 1 },
    { "older file: no error, delay-warned, hold",
      { "error ", "delay-warned ", "hold ", NULL }, 0, 0, 0 },
    { "older file: no error line", { "error ", NULL }, 1, 1, 0 }
};


static void
test_older(void)
{
    int                 fd, err;
    char               *text;
    size_t              len, flen, alen, i;
    unsigned char      *data, *file, *after;
    relay_queue_msg_t   m;

    data = t_read_data("deferred.q", &len);

    for (i = 0; i < sizeof(t_older) / sizeof(t_older[0]); i++) {
        t_begin(t_older[i].label);

        text = t_strip(data, len, t_older[i].drop);
        file = t_finish(text, strlen(text), &flen);

        if (t_load("older", file, flen, &m, &err) != RELAY_QUEUE_OK) {
            t_fail("read: errno %d", err);
            t_end();
            free(text);
            free(file);
            continue;
        }

        t_expect(!!m.warned_offset == t_older[i].warned, "delay-warned");
        t_expect(!!m.hold_offset == t_older[i].hold && !m.held, "hold");
        t_expect(!!m.error_offset == t_older[i].error, "error");
        t_expect(t_older[i].error || m.last_error.len == 0, "no last error");
        t_expect(m.attempts == 1 && memcmp(file + m.next_offset,
                                           "1796292786 0001", 15) == 0,
                 "next");
        t_expect(m.nrcpts == 4
                 && file[m.rcpts[3].state_offset] == 'P'
                 && t_str_is(&m.rcpts[3].addr, "four@other.test"), "rcpts");
        t_expect(memcmp(file + m.message_offset, "Received: ", 10) == 0,
                 "message offset");

        /* the missing lines are never written */

        fd = t_open(&sp, "older", O_RDWR);

        if (!t_older[i].hold) {
            t_expect(relay_queue_set_hold(fd, &m, 1, &err)
                     == RELAY_QUEUE_ABSENT, "set_hold");
        }

        if (!t_older[i].warned) {
            t_expect(relay_queue_set_delay_warned(fd, &m, &err)
                     == RELAY_QUEUE_ABSENT, "set_delay_warned");
        }

        if (!t_older[i].error) {
            t_expect(relay_queue_set_error(fd, &m, (unsigned char *) "x", 1,
                                           &err)
                     == RELAY_QUEUE_ABSENT, "set_error");
        }

        (void) close(fd);

        after = t_get(&sp, "older", &alen);
        t_expect(after && alen == flen && memcmp(after, file, flen) == 0,
                 "file changed");
        free(after);

        relay_queue_free(&m);
        free(text);
        free(file);
        t_end();
    }

    free(data);
}


/* a file cut anywhere is incomplete; a trailer on a cut header is no file */

static void
test_truncated(void)
{
    int                 err, rc, bad;
    size_t              len, k, flen;
    unsigned char      *data, *file;
    relay_queue_msg_t   m, whole;

    data = t_read_data("fresh.q", &len);

    if (t_load("whole", data, len, &whole, &err) != RELAY_QUEUE_OK) {
        printf("FAIL fresh.q does not read\n");
        exit(1);
    }

    t_begin("cut at every octet: incomplete");

    for (k = 0; k < len; k++) {
        rc = t_load("cut", data, k, &m, &err);
        t_expect(rc == RELAY_QUEUE_INCOMPLETE && m.size == (off_t) k,
                 "cut at %zu: %d", k, rc);
        relay_queue_free(&m);
    }

    t_end();

    t_begin("cut at every octet, a right trailer added");

    bad = 0;

    for (k = 0; k < len - RELAY_QUEUE_TRAILER_LEN; k++) {
        file = t_finish((char *) data, k, &flen);
        rc = t_load("cut", file, flen, &m, &err);

        if (k < (size_t) whole.message_offset) {
            if (rc != RELAY_QUEUE_ERROR || err != EINVAL) {
                t_fail("header cut at %zu: %d, errno %d", k, rc, err);
                bad++;
            }

        } else if (rc != RELAY_QUEUE_OK
                   || m.message_size != (off_t) k - whole.message_offset)
        {
            t_fail("message cut at %zu: %d", k, rc);
            bad++;
        }

        relay_queue_free(&m);
        free(file);

        if (bad > 4) {
            break;
        }
    }

    t_end();

    relay_queue_free(&whole);
    free(data);
}


static const struct {
    const char  *label;
    const char  *from;
    const char  *to;
    int          rc;
} t_damaged[] = {
    { "another magic", "RELAY-QUEUE 1\n", "RELAY-QUEUE 2\n",
      RELAY_QUEUE_ERROR },
    { "no id", "\nid 6b1132a80feP6c8fSe948\n", "\n",
      RELAY_QUEUE_ERROR },
    { "no recipient",
      "rcpt P SUCCESS,FAILURE rfc822;one@cap.test one@cap.test\n"
      "rcpt P - - two@cap.test\nrcpt P NEVER - three@cap.test\n"
      "rcpt P DELAY - four@other.test\n", "", RELAY_QUEUE_ERROR },
    { "a recipient line too short", "rcpt P - - two@cap.test", "rcpt P -",
      RELAY_QUEUE_ERROR },
    { "a recipient without address", "rcpt P - - two@cap.test",
      "rcpt P - two@cap.test", RELAY_QUEUE_ERROR },
    { "next with a letter", "next 0000000000", "next 00000x0000",
      RELAY_QUEUE_ERROR },
    { "arrival with a letter", "arrival 17", "arrival x7",
      RELAY_QUEUE_ERROR },
    { "next of another width is not next", "next 0000000000 0000",
      "next 0 0", RELAY_QUEUE_OK },
    { "an unknown key is skipped", "\nsender ", "\nfrob 1 2\nsender ",
      RELAY_QUEUE_OK },
    { "a hold line of another width is not hold", "hold 0\n", "hold 00\n",
      RELAY_QUEUE_OK },
    { "trailer offset off by one", "RELAY-END 0000", "RELAY-END 0001",
      RELAY_QUEUE_INCOMPLETE },
    { "trailer with a letter", "RELAY-END 0000", "RELAY-END x000",
      RELAY_QUEUE_INCOMPLETE },
    { "trailer without its line end", "RELAY-END 0000", "RELAY-END 000\n",
      RELAY_QUEUE_INCOMPLETE }
};


/*
 * data with "from" replaced by "to"; a change in the header gets a trailer
 * for the new length, a change in the trailer is what is tested
 */

static unsigned char *
t_replace(const unsigned char *data, size_t len, const char *from,
    const char *to, size_t *flen)
{
    char           *text, *at;
    size_t          n, end;
    unsigned char  *file;

    at = strstr((char *) data, from);
    if (at == NULL) {
        return NULL;
    }

    end = strncmp(from, "RELAY-END", 9) == 0 ? len
                                             : len - RELAY_QUEUE_TRAILER_LEN;
    n = at - (char *) data;

    text = malloc(end + strlen(to) + 1);
    memcpy(text, data, n);
    memcpy(text + n, to, strlen(to));
    memcpy(text + n + strlen(to), at + strlen(from),
           end - n - strlen(from));
    n = end - strlen(from) + strlen(to);

    if (end == len) {
        *flen = n;
        return (unsigned char *) text;
    }

    file = t_finish(text, n, flen);
    free(text);

    return file;
}


static void
test_damaged(void)
{
    int                 err, rc;
    size_t              len, i, flen;
    unsigned char      *data, *file;
    relay_queue_msg_t   m;

    data = t_read_data("fresh.q", &len);

    for (i = 0; i < sizeof(t_damaged) / sizeof(t_damaged[0]); i++) {
        t_begin(t_damaged[i].label);

        file = t_replace(data, len, t_damaged[i].from, t_damaged[i].to,
                         &flen);
        if (file == NULL) {
            t_fail("no \"%s\" in fresh.q", t_damaged[i].from);
            t_end();
            continue;
        }

        rc = t_load("damaged", file, flen, &m, &err);

        t_expect(rc == t_damaged[i].rc, "rc %d, want %d", rc,
                 t_damaged[i].rc);
        t_expect(rc != RELAY_QUEUE_ERROR || err == EINVAL, "errno %d", err);

        if (rc == RELAY_QUEUE_OK && strcmp(t_damaged[i].to, "next 0 0") == 0)
        {
            t_expect(m.next_offset == 0 && m.attempts == 0, "next offset");
        }

        if (rc == RELAY_QUEUE_OK && strcmp(t_damaged[i].to, "hold 00\n") == 0)
        {
            t_expect(m.hold_offset == 0, "hold offset");
        }

        relay_queue_free(&m);
        free(file);
        t_end();
    }

    free(data);
}


/* each update: the field's octets change, and nothing else */

static int
t_only(const unsigned char *a, const unsigned char *b, size_t len,
    off_t from, size_t n)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (a[i] != b[i] && (i < (size_t) from || i >= from + n)) {
            return 0;
        }
    }

    return 1;
}


static void
test_updates(void)
{
    int                 fd, err;
    char                want[RELAY_QUEUE_ERROR_LEN + 1], big[300];
    size_t              len, alen, i;
    unsigned char      *data, *after;
    relay_queue_msg_t   m, back;

    static const struct {
        const char  *label;
        time_t       next;
        unsigned     attempts;
        const char  *text;
    } sched[] = {
        { "schedule: next and attempts", 1796300000, 3, "1796300000 0003" },
        { "schedule: negative and huge", -5, 12345, "0000000000 9999" },
        { "schedule: past 10 digits", (time_t) 99999999999LL, 1,
          "9999999999 0001" }
    };

    data = t_read_data("deferred.q", &len);
    t_put(&sp, "upd", data, len);

    fd = t_open(&sp, "upd", O_RDWR);

    if (relay_queue_read(fd, &m, &err) != RELAY_QUEUE_OK) {
        printf("FAIL deferred.q does not read\n");
        exit(1);
    }

    t_begin("set_state: one octet");
    t_expect(relay_queue_set_state(fd, &m.rcpts[2], 'D', &err)
             == RELAY_QUEUE_OK && m.rcpts[2].state == 'D', "rc");
    after = t_get(&sp, "upd", &alen);
    t_expect(alen == len && after[m.rcpts[2].state_offset] == 'D'
             && t_only(data, after, len, m.rcpts[2].state_offset, 1),
             "bytes");
    free(after);
    t_end();

    for (i = 0; i < sizeof(sched) / sizeof(sched[0]); i++) {
        t_begin(sched[i].label);

        free(data);
        data = t_get(&sp, "upd", &len);

        t_expect(relay_queue_set_schedule(fd, &m, sched[i].next,
                                          sched[i].attempts, &err)
                 == RELAY_QUEUE_OK, "rc");
        after = t_get(&sp, "upd", &alen);
        t_expect(alen == len
                 && memcmp(after + m.next_offset, sched[i].text, 15) == 0
                 && t_only(data, after, len, m.next_offset, 15),
                 "bytes: %.15s", after + m.next_offset);
        free(after);
        t_end();
    }

    t_begin("set_error: control characters, padding");
    free(data);
    data = t_get(&sp, "upd", &len);
    t_expect(relay_queue_set_error(fd, &m, (unsigned char *) "x\r\ny\tz\x7f",
                                   7, &err) == RELAY_QUEUE_OK, "rc");
    memset(want, ' ', RELAY_QUEUE_ERROR_LEN);
    memcpy(want, "x  y z", 6);
    after = t_get(&sp, "upd", &alen);
    t_expect(alen == len && memcmp(after + m.error_offset, want,
                                   RELAY_QUEUE_ERROR_LEN) == 0
             && after[m.error_offset + RELAY_QUEUE_ERROR_LEN] == '\n'
             && t_only(data, after, len, m.error_offset,
                       RELAY_QUEUE_ERROR_LEN), "bytes");
    t_expect(t_str_is(&m.last_error, "x  y z"), "last_error %s",
             t_show(&m.last_error));
    free(after);
    t_end();

    t_begin("set_error: cut to 200 octets");
    memset(big, 'a', sizeof(big));
    t_expect(relay_queue_set_error(fd, &m, (unsigned char *) big, sizeof(big),
                                   &err) == RELAY_QUEUE_OK, "rc");
    after = t_get(&sp, "upd", &alen);
    t_expect(alen == len && after[m.error_offset + 199] == 'a'
             && after[m.error_offset + 200] == '\n', "bytes");
    t_expect(m.last_error.len == RELAY_QUEUE_ERROR_LEN, "last_error");
    free(after);
    t_end();

    t_begin("set_error: empty");
    t_expect(relay_queue_set_error(fd, &m, (unsigned char *) "", 0, &err)
             == RELAY_QUEUE_OK && m.last_error.len == 0, "rc");
    t_end();

    t_begin("set_delay_warned");
    free(data);
    data = t_get(&sp, "upd", &len);
    t_expect(relay_queue_set_delay_warned(fd, &m, &err) == RELAY_QUEUE_OK
             && m.delay_warned, "rc");
    after = t_get(&sp, "upd", &alen);
    t_expect(after[m.warned_offset] == '1'
             && t_only(data, after, len, m.warned_offset, 1), "bytes");
    free(after);
    t_end();

    t_begin("set_hold: 1, then 0");
    free(data);
    data = t_get(&sp, "upd", &len);
    t_expect(relay_queue_set_hold(fd, &m, 1, &err) == RELAY_QUEUE_OK
             && m.held, "rc");
    after = t_get(&sp, "upd", &alen);
    t_expect(after[m.hold_offset] == '1'
             && t_only(data, after, len, m.hold_offset, 1), "bytes");
    free(after);
    t_expect(relay_queue_set_hold(fd, &m, 0, &err) == RELAY_QUEUE_OK
             && !m.held, "rc 0");
    after = t_get(&sp, "upd", &alen);
    t_expect(after[m.hold_offset] == '0', "bytes 0");
    free(after);
    t_end();

    t_begin("every update read back");
    (void) relay_queue_set_hold(fd, &m, 1, &err);
    (void) relay_queue_set_error(fd, &m, (unsigned char *) "451 later", 9,
                                 &err);
    (void) relay_queue_set_schedule(fd, &m, 1800000000, 2, &err);

    if (relay_queue_read(fd, &back, &err) != RELAY_QUEUE_OK) {
        t_fail("read back: errno %d", err);

    } else {
        t_expect(back.held && back.delay_warned && back.next == 1800000000
                 && back.attempts == 2
                 && t_str_is(&back.last_error, "451 later")
                 && back.rcpts[2].state == 'D' && back.rcpts[1].state == 'P',
                 "fields");
    }

    relay_queue_free(&back);
    t_end();

    relay_queue_free(&m);
    (void) close(fd);
    free(data);
}


int
main(void)
{
    t_spool_make(&sp, "format");

    test_fresh();
    test_deferred();
    test_render();
    test_render_round_trip();
    test_older();
    test_truncated();
    test_damaged();
    test_updates();

    t_spool_free(&sp);

    return t_summary("test_format");
}
