
/*
 * Copyright (C) The relay authors
 */


/*
 * relayctl's diagnosis of a call that could not get through: gRPC says
 * UNAVAILABLE for a controld that is down, a wrong address, plaintext
 * against TLS, a wrong CA and a missing client certificate alike.  This
 * file finds out which, with its own connection: resolve, connect (with
 * the call's deadline, 5 s at most), then a TLS handshake as gRPC would
 * make it (ALPN h2, the server's name checked, the operator's certificate
 * sent), and for TLS 1.3, where the server judges the client certificate
 * after the handshake, the HTTP/2 preface and one read for its answer.
 * It says what it found as one line and a hint; it never changes what the
 * call returned, and it runs once, after the call failed, never before.
 */


#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <arpa/inet.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "relayctl.h"


#define CTLD_DIAG_MAX_MS  5000

#define CTLD_DIAG_HINT_DOWN                                                   \
    "is controld running and listening there? (systemctl status "            \
    "nginx-relay-controld; -s HOST:PORT or RELAYCTL_SERVER)"
#define CTLD_DIAG_HINT_CERT                                                   \
    "give an operator certificate (CN operator:NAME) signed by controld's "  \
    "CA: --cert and --key, or RELAYCTL_CERT and RELAYCTL_KEY"


static int ctld_diag_split(const char *server, char *host, size_t hlen,
    char *port, size_t plen);
static int ctld_diag_connect(const char *server, const char *host,
    const char *port, int ms);
static void ctld_diag_plain(const char *server, int fd, const char *cert);
static void ctld_diag_tls(const char *server, const char *host, int fd,
    const char *ca, const char *cert, const char *key);
static SSL *ctld_diag_handshake(SSL_CTX *ctx, int fd, const char *host,
    int *rc);
static int ctld_diag_alert(void);
static void ctld_diag_names(X509 *x, char *buf, size_t len);


void
ctld_cli_diagnose(const char *server, const char *ca, const char *cert,
    const char *key, double timeout)
{
    int               fd, ms;
    char              host[256], port[32];
    struct sigaction  sa, old;

    if (ctld_diag_split(server, host, sizeof(host), port, sizeof(port))
        != 0)
    {
        return;                     /* unix:, dns:///...: gRPC's own words */
    }

    ms = (timeout * 1000 < CTLD_DIAG_MAX_MS) ? (int) (timeout * 1000)
                                              : CTLD_DIAG_MAX_MS;

    fd = ctld_diag_connect(server, host, port, ms);
    if (fd == -1) {
        return;
    }

    /* a server that hangs up mid-write is an answer, not a SIGPIPE */

    sa.sa_handler = SIG_IGN;
    sa.sa_flags = 0;
    sigemptyset(&sa.sa_mask);
    (void) sigaction(SIGPIPE, &sa, &old);

    if (ca && ca[0]) {
        ctld_diag_tls(server, host, fd, ca, cert, key);

    } else {
        ctld_diag_plain(server, fd, cert);
    }

    (void) sigaction(SIGPIPE, &old, NULL);
    close(fd);
}


/* "host:port", "[v6]:port" */

static int
ctld_diag_split(const char *server, char *host, size_t hlen, char *port,
    size_t plen)
{
    size_t       n;
    const char  *colon, *h;

    if (server[0] == '[') {
        h = server + 1;
        colon = strstr(h, "]:");
        n = colon ? (size_t) (colon - h) : 0;
        colon = colon ? colon + 1 : NULL;

    } else {
        h = server;
        colon = strrchr(server, ':');
        n = colon ? (size_t) (colon - h) : 0;

        if (colon && memchr(h, ':', n) != NULL) {
            return -1;                  /* a bare IPv6 address */
        }
    }

    if (colon == NULL || n == 0 || n >= hlen || strlen(colon + 1) == 0
        || strlen(colon + 1) >= plen
        || strspn(colon + 1, "0123456789") != strlen(colon + 1))
    {
        return -1;
    }

    memcpy(host, h, n);
    host[n] = '\0';
    strcpy(port, colon + 1);

    return 0;
}


/* a connected socket, or -1 when it said why not */

static int
ctld_diag_connect(const char *server, const char *host, const char *port,
    int ms)
{
    int               fd, rc, err, refused, timedout;
    socklen_t         len;
    struct pollfd     pfd;
    struct timeval    tv;
    struct addrinfo   hints, *res, *ai;

    memset(&hints, 0, sizeof(struct addrinfo));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;

    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        ctld_cli_error("cannot reach controld at %s: %s: %s; check -s "
                       "HOST:PORT or RELAYCTL_SERVER", server, host,
                       gai_strerror(rc));
        return -1;
    }

    refused = 0;
    timedout = 0;
    err = 0;
    fd = -1;

    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd == -1) {
            err = errno;
            continue;
        }

        (void) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);

        rc = connect(fd, ai->ai_addr, ai->ai_addrlen);

        if (rc == -1 && errno == EINPROGRESS) {
            pfd.fd = fd;
            pfd.events = POLLOUT;

            rc = poll(&pfd, 1, ms);

            if (rc == 0) {
                timedout = 1;
                rc = -1;

            } else if (rc == 1) {
                len = sizeof(int);
                (void) getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
                errno = err;
                rc = err ? -1 : 0;
            }
        }

        if (rc == 0) {
            break;
        }

        refused |= (errno == ECONNREFUSED);
        err = errno;
        close(fd);
        fd = -1;
    }

    freeaddrinfo(res);

    if (fd == -1) {
        if (refused) {
            ctld_cli_error("cannot reach controld at %s: connection refused: "
                           "nothing listens there; " CTLD_DIAG_HINT_DOWN,
                           server);

        } else if (timedout) {
            ctld_cli_error("cannot reach controld at %s: no answer in %d ms "
                           "(a firewall, or the wrong address); "
                           CTLD_DIAG_HINT_DOWN, server, ms);

        } else {
            ctld_cli_error("cannot reach controld at %s: %s; "
                           CTLD_DIAG_HINT_DOWN, server, strerror(err));
        }

        return -1;
    }

    (void) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);

    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    (void) setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void) setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));

    return fd;
}


/* relayctl spoke plaintext: does controld want TLS? */

static void
ctld_diag_plain(const char *server, int fd, const char *cert)
{
    int       rc;
    SSL      *ssl;
    SSL_CTX  *ctx;

    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        return;
    }

    ssl = ctld_diag_handshake(ctx, fd, NULL, &rc);

    if (rc == 1 || ctld_diag_alert() != -1) {
        ctld_cli_error("controld at %s speaks TLS and relayctl spoke "
                       "plaintext: give controld's CA with --ca FILE or "
                       "RELAYCTL_CA%s", server,
                       (cert && cert[0]) ? " (--cert and --key are used "
                       "only with a CA)" : ", and " CTLD_DIAG_HINT_CERT);
    }

    SSL_free(ssl);
    SSL_CTX_free(ctx);
}


static void
ctld_diag_tls(const char *server, const char *host, int fd, const char *ca,
    const char *cert, const char *key)
{
    int                   n, rc, alert;
    SSL                  *ssl;
    char                  buf[64], names[256];
    long                  vr;
    X509                 *x;
    SSL_CTX              *ctx;
    unsigned              alen;
    struct timeval        tv;
    const unsigned char  *alpn;

    /* an HTTP/2 client preface and an empty SETTINGS frame */
    static const char  preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                                   "\0\0\0\4\0\0\0\0\0";

    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        return;
    }

    ssl = NULL;

    if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
        ctld_cli_error("--ca %s: no CA certificate in it (PEM expected)", ca);
        goto done;
    }

    if (cert && cert[0]) {
        if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
            ctld_cli_error("--cert %s: no certificate in it (PEM expected)",
                           cert);
            goto done;
        }

        if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1
            || SSL_CTX_check_private_key(ctx) != 1)
        {
            ctld_cli_error("--key %s: not the key of --cert %s", key, cert);
            goto done;
        }
    }

    ssl = ctld_diag_handshake(ctx, fd, host, &rc);
    if (ssl == NULL) {
        goto done;
    }

    if (rc != 1) {
        alert = ctld_diag_alert();

        if (alert == -1) {
            ctld_cli_error("controld at %s does not answer TLS: is it "
                           "started with --insecure (then drop --ca and "
                           "RELAYCTL_CA), or is another server on that "
                           "port?", server);

        } else if (cert == NULL || cert[0] == '\0') {
            ctld_cli_error("controld at %s wants a client certificate "
                           "(TLS alert \"%s\"): " CTLD_DIAG_HINT_CERT,
                           server, SSL_alert_desc_string_long(alert));

        } else {
            ctld_cli_error("controld at %s refused the TLS handshake (alert "
                           "\"%s\"): is %s signed by the CA controld trusts "
                           "(its tls_ca)?", server,
                           SSL_alert_desc_string_long(alert), cert);
        }

        goto done;
    }

    vr = SSL_get_verify_result(ssl);

    if (vr != X509_V_OK) {
        x = SSL_get1_peer_certificate(ssl);
        ctld_diag_names(x, names, sizeof(names));
        X509_free(x);

        if (vr == X509_V_ERR_HOSTNAME_MISMATCH
            || vr == X509_V_ERR_IP_ADDRESS_MISMATCH)
        {
            ctld_cli_error("controld's certificate does not name \"%s\" "
                           "(it names %s): call it by one of those names "
                           "(-s NAME:PORT), or give it a certificate with "
                           "that name", host, names);

        } else {
            ctld_cli_error("controld's certificate (%s) does not verify "
                           "with --ca %s: %s; is that the CA that signed "
                           "it?", names, ca,
                           X509_verify_cert_error_string(vr));
        }

        goto done;
    }

    SSL_get0_alpn_selected(ssl, &alpn, &alen);

    if (alen != 2 || memcmp(alpn, "h2", 2) != 0) {
        ctld_cli_error("the TLS server at %s does not speak HTTP/2 (no ALPN "
                       "\"h2\"): is it controld?", server);
        goto done;
    }

    /*
     * TLS 1.3: the verdict on our certificate comes after the handshake:
     * the server's HTTP/2 SETTINGS, or an alert, or (gRPC) a hang-up.  A
     * server that waits for the client's preface first gets it after a
     * second.
     */

    ERR_clear_error();

    tv.tv_sec = 1;
    tv.tv_usec = 0;
    (void) setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));

    n = SSL_read(ssl, buf, sizeof(buf));

    if (n <= 0 && SSL_get_error(ssl, n) == SSL_ERROR_WANT_READ) {
        ERR_clear_error();

        if (SSL_write(ssl, preface, sizeof(preface) - 1) > 0) {
            n = SSL_read(ssl, buf, sizeof(buf));
        }
    }

    if (n > 0 || SSL_get_error(ssl, n) == SSL_ERROR_WANT_READ) {
        goto done;                  /* TLS is fine: gRPC's words stand */
    }

    alert = ctld_diag_alert();

    if (alert != -1) {
        snprintf(names, sizeof(names), "sent the TLS alert \"%s\"",
                 SSL_alert_desc_string_long(alert));

    } else {
        snprintf(names, sizeof(names), "hung up after the TLS handshake");
    }

    if (cert == NULL || cert[0] == '\0') {
        ctld_cli_error("controld at %s %s: it wants a client certificate; "
                       CTLD_DIAG_HINT_CERT, server, names);

    } else {
        ctld_cli_error("controld at %s %s: it does not accept the client "
                       "certificate %s; is it signed by the CA controld "
                       "trusts (its tls_ca)?", server, names, cert);
    }

done:

    SSL_free(ssl);
    SSL_CTX_free(ctx);
}


/* a handshake as gRPC makes it; *rc is SSL_connect()'s */

static SSL *
ctld_diag_handshake(SSL_CTX *ctx, int fd, const char *host, int *rc)
{
    SSL                 *ssl;
    X509_VERIFY_PARAM   *vp;
    unsigned char        addr[16];

    static const unsigned char  alpn[] = "\x02h2";

    *rc = 0;

    ssl = SSL_new(ctx);
    if (ssl == NULL) {
        return NULL;
    }

    SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);     /* judged after */
    (void) SSL_set_alpn_protos(ssl, alpn, sizeof(alpn) - 1);

    if (host) {
        vp = SSL_get0_param(ssl);

        if (inet_pton(AF_INET, host, addr) == 1
            || inet_pton(AF_INET6, host, addr) == 1)
        {
            (void) X509_VERIFY_PARAM_set1_ip_asc(vp, host);

        } else {
            (void) SSL_set_tlsext_host_name(ssl, host);
            (void) X509_VERIFY_PARAM_set1_host(vp, host, 0);
        }
    }

    if (SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        return NULL;
    }

    ERR_clear_error();
    *rc = SSL_connect(ssl);

    return ssl;
}


/* the TLS alert the server sent, from OpenSSL's error queue, or -1 */

static int
ctld_diag_alert(void)
{
    int            reason;
    unsigned long  e;

    while ((e = ERR_get_error()) != 0) {
        reason = ERR_GET_REASON(e);

        if (ERR_GET_LIB(e) == ERR_LIB_SSL && reason >= SSL_AD_REASON_OFFSET
            && reason < SSL_AD_REASON_OFFSET + 256)
        {
            ERR_clear_error();
            return reason - SSL_AD_REASON_OFFSET;
        }
    }

    return -1;
}


/* "CN controld, DNS:localhost, IP:127.0.0.1" */

static void
ctld_diag_names(X509 *x, char *buf, size_t len)
{
    int                     i, n;
    char                    cn[128], ip[INET6_ADDRSTRLEN];
    size_t                  used;
    const unsigned char    *p;
    GENERAL_NAME           *gn;
    GENERAL_NAMES          *sans;

    used = 0;
    buf[0] = '\0';

    if (x == NULL) {
        snprintf(buf, len, "no certificate");
        return;
    }

    if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName,
                                  cn, sizeof(cn))
        > 0)
    {
        used = snprintf(buf, len, "CN %s", cn);
    }

    sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    n = sans ? sk_GENERAL_NAME_num(sans) : 0;

    for (i = 0; i < n && used < len; i++) {
        gn = sk_GENERAL_NAME_value(sans, i);

        if (gn->type == GEN_DNS) {
            used += snprintf(buf + used, len - used, "%sDNS:%s",
                             used ? ", " : "",
                             (const char *)
                                 ASN1_STRING_get0_data(gn->d.dNSName));

        } else if (gn->type == GEN_IPADD) {
            p = ASN1_STRING_get0_data(gn->d.iPAddress);

            if (inet_ntop(ASN1_STRING_length(gn->d.iPAddress) == 16
                          ? AF_INET6 : AF_INET, p, ip, sizeof(ip))
                != NULL)
            {
                used += snprintf(buf + used, len - used, "%sIP:%s",
                                 used ? ", " : "", ip);
            }
        }
    }

    GENERAL_NAMES_free(sans);
}
