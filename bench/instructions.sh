#!/bin/bash
# Instructions the daemon executes per injected message, counted by callgrind: repeatable where
# timings are not (a shared, noisy machine), so two trees can be compared with a single run each.
#
#   bench/instructions.sh [ROOT] [keep|reconnect] [MESSAGES]      (defaults: this tree, keep, 2000)
#
# Starts `python -m mailerq_gevent` from ROOT (smtp-threads 1, embedded queue, no console, nothing
# consuming the inbox) under valgrind with instrumentation off, turns it on for the load only
# (smtp-source, 20 sessions, a 1.5 KB message; `-d` kept open unless reconnect), and prints
# "Ir_per_msg=N". Needs valgrind and smtp-source (../shared/bench/postfix-peer.sh installs it).
# A difference under 1% is noise (SQLite's group commits vary with timing).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
root=$(cd "${1:-$here}" && pwd); mode=${2:-keep}; n=${3:-2000}
python=${PYTHON:-$here/.venv/bin/python}
tmp=$(mktemp -d); port=$((20000 + RANDOM % 20000))
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/mailerq.conf" <<CONF
database: sqlite:///$tmp/db.sqlite
rabbitmq-address: sqlite:///$tmp/queue.sqlite
rabbitmq-inbox: inbox
rabbitmq-outbox: outbox
rabbitmq-results:
rabbitmq-success:
rabbitmq-failure:
rabbitmq-retry:
rabbitmq-dsn:
rabbitmq-reports:
rabbitmq-local:
smtp-port: $port
smtp-threads: 1
www-port:
log-level: info
CONF
cd "$tmp"
PYTHONPATH=$root valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$tmp/cg.out" \
  "$python" -m mailerq_gevent --config "$tmp/mailerq.conf" > "$tmp/log" 2>&1 &
pid=$!
for _ in $(seq 1200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
sleep 2
{ printf 'From: a@example.com\nTo: b@example.org\nSubject: x\n\n'; head -c 1500 /dev/zero | tr '\0' x | fold -w 70; echo; } > "$tmp/msg"
callgrind_control -i on "$pid" >/dev/null
keep=(); [ "$mode" = keep ] && keep=(-d)
smtp-source -s 20 -m "$n" "${keep[@]}" -F "$tmp/msg" -M bench.example -f a@example.com \
  -t rcpt@example.org "127.0.0.1:$port"
callgrind_control -i off "$pid" >/dev/null
kill "$pid"; wait "$pid" || true
ir=$(grep -o "Collected : [0-9]*" "$tmp/log" | awk '{print $3}')
echo "$root $mode Ir_per_msg=$((ir / n))"
