#!/usr/bin/env bash
#
# Runs Debian's nginx with the relay module from a private prefix, in the
# foreground.  Used by "./build.sh run".  Makes a development certificate
# and a demo user on first run.
#
#   deploy/run-dev.sh PREFIX MODULE.so

set -euo pipefail

prefix=$(mkdir -p "$1" && cd "$1" && pwd)
module=$2
top=$(cd "$(dirname "$0")/.." && pwd)

mkdir -p "$prefix"/{conf,logs,spool,maildir}

if [ ! -f "$prefix/conf/cert.pem" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 365 \
        -subj "/CN=relay.example.test" \
        -addext "subjectAltName=DNS:relay.example.test,DNS:localhost,IP:127.0.0.1" \
        -keyout "$prefix/conf/key.pem" -out "$prefix/conf/cert.pem" \
        2>/dev/null
    chmod 644 "$prefix/conf/key.pem"
fi

if [ ! -f "$prefix/conf/users" ]; then
    printf 'demo@example.test:%s\n' "$(openssl passwd -6 demo-password)" \
        > "$prefix/conf/users"
fi

sed -e "s|@MODULE@|$module|" -e "s|@PREFIX@|$prefix|" \
    "$top/config/nginx.conf.in" > "$prefix/nginx.conf"

/usr/sbin/nginx -p "$prefix/" -c nginx.conf -t -q

cat <<MSG
relay running from $prefix (Ctrl-C stops it)
  SMTP        127.0.0.1:2525  (local domain example.test, relaying for 127.0.0.0/8)
  submission  127.0.0.1:2587  (STARTTLS, then AUTH demo@example.test / demo-password)
  POP3        127.0.0.1:2110  (STLS, then USER/PASS demo@example.test / demo-password)
  Maildirs    $prefix/maildir/example.test/<user>/new/
  logs        $prefix/logs/error.log, $prefix/logs/smtp.log
try:
  swaks --server 127.0.0.1:2525 --to demo@example.test --from you@example.org
  swaks --server 127.0.0.1:2587 --tls --auth PLAIN --auth-user demo@example.test \\
        --auth-password demo-password --to someone@example.org
  curl -v --ssl-reqd -k pop3://127.0.0.1:2110/1 -u demo@example.test:demo-password
MSG

# nginx in the foreground; Ctrl-C (SIGINT) makes it stop its workers
exec /usr/sbin/nginx -p "$prefix/" -c nginx.conf -g 'daemon off;'
