#!/usr/bin/env bash
# SPEC §11, issue "SOC staff in the group can read (and hand-insert) as the seed shows":
# a member of the suite's group runs every sqlite3 query of the seed guide (as printed, and with
# -readonly), the seed's manual INSERT/DELETE of a pending withdrawal, and mtctl's read commands
# on the database a daemon running as the suite's user writes:
#   1. daemons stopped (the member's sqlite3 creates the -wal/-shm files itself),
#   2. a daemon running (mt-webhook-receiver accepting webhooks meanwhile),
#   3. the daemon started while the member holds a sqlite3 session open (so the -wal/-shm
#      files belong to the member): the daemon must still work.
# The layout is the one the units and magic-transit.tmpfiles.conf give: the state directory
# 2770 (setgid) in the group, the daemons' UMask=0007, the database 0660.
#
# Usage (as root, from the repository): tests/group-access.sh [TARGET_DIR]   (default target/debug)
# Needs: sqlite3, python3 (to read the seed queries' TOML), runuser and setpriv (util-linux),
# useradd/usermod, systemd-sysusers. It leaves the users `magic-transit` (from the project's
# sysusers file, as an installation would) and `mt-soc-member` (in its group) on the machine.
# `--old-layout` runs it with the previous layout (0750 directory, UMask=0027) to show it fails.
set -euo pipefail
cd "$(dirname "$0")/.."

old_layout=false
if [ "${1:-}" = "--old-layout" ]; then
  old_layout=true
  shift
fi
bin=$(realpath "${1:-target/debug}")
suite=magic-transit
member=mt-soc-member

if [ "$(id -u)" != 0 ]; then
  echo "group-access: needs root (creates the suite's user and a member, runs as both)" >&2
  exit 2
fi
for tool in sqlite3 python3 runuser setpriv useradd usermod systemd-sysusers; do
  command -v "$tool" >/dev/null || { echo "group-access: $tool is missing" >&2; exit 2; }
done
for b in mtctl mt-webhook-receiver; do
  [ -x "$bin/$b" ] || { echo "group-access: $bin/$b not built" >&2; exit 2; }
done

# The suite's user from the project's own sysusers file; a member in its group.
getent passwd "$suite" >/dev/null || systemd-sysusers "$PWD/systemd/magic-transit.sysusers.conf"
getent passwd "$member" >/dev/null || useradd --no-create-home --shell /bin/sh "$member"
usermod -aG "$suite" "$member"

work=$(mktemp -d /tmp/mt-group-access.XXXXXX)
receiver_pid=""
session_pid=""
cleanup() {
  [ -n "$receiver_pid" ] && kill "$receiver_pid" 2>/dev/null || true
  [ -n "$session_pid" ] && kill "$session_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
chmod 0755 "$work"
# The binaries are copied out of the build tree, which the two users may not be able to reach
# (a checkout under a 0700 directory).
install -d -m 0755 "$work/bin"
install -m 0755 "$bin/mtctl" "$bin/mt-webhook-receiver" "$work/bin/"
bin=$work/bin
state=$work/state
install -d -o "$suite" -g "$suite" -m 2770 "$state"
install -d -o "$suite" -g "$suite" -m 2770 "$state/webhooks"
umask_daemon=0007
if $old_layout; then
  chmod 0750 "$state" "$state/webhooks"
  umask_daemon=0027
fi
db=$state/magic_transit.db
port=""
for candidate in $(seq $(( 20000 + $$ % 20000 )) $(( 20099 + $$ % 20000 ))); do
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
    port=$candidate
    break
  fi
done
[ -n "$port" ] || { echo "group-access: no free port" >&2; exit 2; }
config=$work/config.toml
cat > "$config" <<EOF
[database]
path = "$db"
[webhook]
listen = "127.0.0.1:$port"
archive_dir = "$state/webhooks"
[telegram]
enabled = false
[cloudflare]
account_id = "4f3a9c2e81d64b7a9e0c5d1f2a3b4c5d"
[[prefixes]]
cidr = "203.0.113.0/24"
prefix_id = "p24"
bgp_prefix_id = "b-p24"
EOF
chmod 0644 "$config"

as_suite() { runuser -u "$suite" -- sh -c "umask $umask_daemon; exec \"\$@\"" sh "$@"; }
as_member() { runuser -u "$member" -- "$@"; }
fail() { echo "group-access: FAILED: $*" >&2; exit 1; }
step() { printf '\n-- %s\n' "$*"; }

mode_of() { stat -c '%a %G' "$1"; }
check_modes() {
  $old_layout && return 0 # show what the member hits, not the modes
  for f in "$db" "$db-wal" "$db-shm"; do
    [ -e "$f" ] || continue
    [ "$(mode_of "$f")" = "660 $suite" ] || fail "$f is $(mode_of "$f"), expected 660 $suite"
  done
}

# The seed's queries, verbatim (crates/mt-store/tests/fixtures/seed_queries.toml).
mapfile -d '' queries < <(python3 -c '
import sys, tomllib
with open("crates/mt-store/tests/fixtures/seed_queries.toml", "rb") as f:
    for q in tomllib.load(f)["query"]:
        sys.stdout.write(q["sql"] + "\0")
')
[ "${#queries[@]}" -ge 10 ] || fail "seed queries not read"

member_session() {
  local label=$1
  for sql in "${queries[@]}"; do
    as_member sqlite3 "$db" "$sql" >/dev/null || fail "$label: seed query as member: $sql"
    case "$(echo "$sql" | tr -d ' \n' | cut -c1-6 | tr '[:lower:]' '[:upper:]')" in
      SELECT) as_member sqlite3 -readonly "$db" "$sql" >/dev/null || fail "$label: seed query (-readonly) as member: $sql" ;;
    esac
  done
  as_member sqlite3 "$db" "INSERT INTO pending_withdrawals (prefix, withdraw_after, status)
     VALUES ('185.54.82.0/24', datetime('now', '+1 minute'), 'pending')" || fail "$label: the seed's manual INSERT"
  [ "$(as_member sqlite3 "$db" "SELECT COUNT(*) FROM pending_withdrawals WHERE prefix='185.54.82.0/24'")" = 1 ] \
    || fail "$label: the inserted request is not there"
  as_member sqlite3 "$db" "DELETE FROM pending_withdrawals WHERE prefix='185.54.82.0/24'" || fail "$label: the seed's manual DELETE"
  for cmd in status history events stats "webhooks recent" "webhooks stats" notifications audit; do
    # shellcheck disable=SC2086
    as_member "$bin/mtctl" --config "$config" $cmd >/dev/null || fail "$label: mtctl $cmd as member"
  done
  check_modes
  echo "ok: $label: ${#queries[@]} seed queries (twice), manual INSERT/DELETE, 8 mtctl reads"
}

post_webhook() {
  local body='{"name":"group test","text":"t","alert_type":"dos_attack_l4","alert_event":"ALERT_STATE_EVENT_START","ts":'"$1"',"data":{"attack_id":"group-'"$1"'","target_ip":"203.0.113.7"}}'
  local status
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf 'POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\ncf-webhook-auth: group-test-secret\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' "${#body}" "$body" >&3
  read -r -t 10 _ status _ <&3 || true
  exec 3>&-
  [ "$status" = 200 ] || fail "webhook answered ${status:-nothing}"
}

start_receiver() {
  # setpriv execs (no process in between), so $! is the daemon itself and gets the SIGTERM.
  MT_WEBHOOK_SECRET=group-test-secret RUST_LOG=warn \
    setpriv --reuid="$suite" --regid="$suite" --init-groups -- \
    sh -c "umask $umask_daemon; exec \"\$@\"" sh "$bin/mt-webhook-receiver" --config "$config" 4>&- &
  receiver_pid=$!
  for _ in $(seq 100); do
    kill -0 "$receiver_pid" 2>/dev/null || fail "mt-webhook-receiver exited at start"
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  fail "mt-webhook-receiver did not listen"
}

stop_receiver() {
  kill -TERM "$receiver_pid"
  wait "$receiver_pid" || fail "mt-webhook-receiver did not exit cleanly"
  receiver_pid=""
}

step "the suite's user creates the database (what a daemon's first start does)"
as_suite "$bin/mtctl" --config "$config" migrate >/dev/null
check_modes
[ "$(mode_of "$state")" = "2770 $suite" ] || $old_layout || fail "state directory is $(mode_of "$state")"

step "1. daemons stopped"
[ ! -e "$db-shm" ] || fail "a -shm file is left with no daemon running"
member_session "daemons stopped"

step "2. a daemon running"
start_receiver
post_webhook 1
member_session "daemon running"
post_webhook 2
[ "$(as_member sqlite3 "$db" "SELECT COUNT(*) FROM webhook_events WHERE alert_id LIKE 'group-%'")" = 2 ] \
  || fail "the member does not see the daemon's rows"
stop_receiver

step "3. the daemon started while a member holds a sqlite3 session open"
fifo=$work/session.fifo
mkfifo "$fifo"
chmod 0666 "$fifo"
runuser -u "$member" -- sqlite3 "$db" < "$fifo" > "$work/session.out" 2>&1 &
session_pid=$!
exec 4>"$fifo"
echo "SELECT COUNT(*) FROM webhook_events;" >&4
for _ in $(seq 50); do [ -s "$work/session.out" ] && break; sleep 0.1; done
[ -e "$db-shm" ] || fail "the member's session did not open the database"
echo "member's -shm: $(stat -c '%a %U:%G' "$db-shm")"
start_receiver
post_webhook 3
post_webhook 4
echo "SELECT COUNT(*) FROM webhook_events WHERE alert_id LIKE 'group-%';" >&4
exec 4>&-
wait "$session_pid" || fail "the member's sqlite3 session failed: $(cat "$work/session.out")"
session_pid=""
[ "$(tail -n 1 "$work/session.out")" = 4 ] || fail "the member's open session did not see the daemon's rows: $(cat "$work/session.out")"
member_session "daemon started during a member's session"
stop_receiver
check_modes

echo
echo "group-access: ok (the member read, inserted and ran mtctl with the daemons stopped, running, and started during its session)"
