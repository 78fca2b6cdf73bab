#!/usr/bin/env bash
#
# Runs Debian's nginx with the relay module from a private prefix, in the
# foreground, and controld next to it.  Used by "./build.sh run".  Makes a
# development certificate, a demo user and a development CA with controld,
# node and operator certificates on first run.
#
#   deploy/run-dev.sh PREFIX MODULE.so CONTROLD_DIR

set -euo pipefail

prefix=$(mkdir -p "$1" && cd "$1" && pwd)
module=$2
ctld_dir=$3
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

if [ ! -f "$prefix/conf/bounce-rules" ]; then
    cp "$top/config/bounce-rules.example" "$prefix/conf/bounce-rules"
fi

if [ ! -f "$prefix/conf/users" ]; then
    printf 'demo@example.test:%s\n' "$(openssl passwd -6 demo-password)" \
        > "$prefix/conf/users"
fi

"$top/deploy/dev-certs.sh" "$prefix/certs" dev-node >/dev/null

sed -e "s|@MODULE@|$module|" -e "s|@PREFIX@|$prefix|" \
    "$top/config/nginx.conf.in" > "$prefix/nginx.conf"

/usr/sbin/nginx -p "$prefix/" -c nginx.conf -t -q

# controld first: the node subscribes at start (and would wait for it)
"$ctld_dir/controld" --listen 127.0.0.1:7443 \
    --data-dir "$prefix/controld-data" --ca "$prefix/certs/ca.pem" \
    --cert "$prefix/certs/controld.pem" --key "$prefix/certs/controld.key" \
    --metrics-listen 127.0.0.1:9026 \
    2>>"$prefix/logs/controld.log" &
ctld_pid=$!

stop() {
    [ -n "${nginx_pid:-}" ] && kill -QUIT "$nginx_pid" 2>/dev/null
    kill -TERM "$ctld_pid" 2>/dev/null
    wait
}
trap stop INT TERM

cat <<MSG
relay running from $prefix (Ctrl-C stops it)
  SMTP        127.0.0.1:2525  (local domain example.test, relaying for 127.0.0.0/8)
  submission  127.0.0.1:2587  (STARTTLS, then AUTH demo@example.test / demo-password)
  POP3        127.0.0.1:2110  (STLS, then USER/PASS demo@example.test / demo-password)
  Maildirs    $prefix/maildir/example.test/<user>/new/
  logs        $prefix/logs/error.log, $prefix/logs/smtp.log,
              $prefix/logs/accounting.log (one JSON object per line)
  metrics     http://127.0.0.1:9025/metrics (relay), http://127.0.0.1:9026/metrics (controld)
try:
  swaks --server 127.0.0.1:2525 --to demo@example.test --from you@example.org
  swaks --server 127.0.0.1:2587 --tls --auth PLAIN --auth-user demo@example.test \\
        --auth-password demo-password --to someone@example.org
  curl -v --ssl-reqd -k pop3://127.0.0.1:2110/1 -u demo@example.test:demo-password
  curl -s http://127.0.0.1:9025/metrics
  curl -s http://127.0.0.1:9026/metrics
controld    127.0.0.1:7443  (log $prefix/logs/controld.log), operator CLI:
  export RELAYCTL_CA=$prefix/certs/ca.pem RELAYCTL_CERT=$prefix/certs/operator.pem \\
         RELAYCTL_KEY=$prefix/certs/operator.key
  $ctld_dir/relayctl apply $top/config/policy.dev
  $ctld_dir/relayctl nodes
  $ctld_dir/relayctl stats
the queue on disk (nginx up or down):
  $ctld_dir/relayctl --spool $prefix/spool queue list
  $ctld_dir/relayctl --spool $prefix/spool queue summary
MSG

# nginx in the foreground; Ctrl-C stops nginx and controld
/usr/sbin/nginx -p "$prefix/" -c nginx.conf -g 'daemon off;' &
nginx_pid=$!
wait "$nginx_pid" || true
kill -TERM "$ctld_pid" 2>/dev/null || true
wait
