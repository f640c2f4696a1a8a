#!/usr/bin/env bash
# A cluster with every node in its own network namespace (deploy/netns-cluster.sh): cutting a worker's
# link makes the coordinator declare it dead, healing it brings it back, and `down` removes every
# namespace, veth and bridge it created. Skipped (exit 0, not counted as passed) only when network
# namespaces cannot be made here.
source "$(dirname "$0")/lib/common.sh"
CL_SCRIPT=$CAIRN_SRC/deploy/netns-cluster.sh
source "$(dirname "$0")/lib/cluster.sh"

PROBE=cairn-probe-$$
if ! ip netns add "$PROBE" 2>"$T/probe.err"; then
  echo "SKIPPED: cannot create a network namespace here ($(cat "$T/probe.err")); test_cluster_netns needs root and ip netns"
  exit 0
fi
ip netns del "$PROBE"

HB_TIMEOUT_MS=5000
SLACK_MS=3000
SUBNET=$(( (RANDOM % 200) + 20 ))   # a /24 of 10.213.0.0/16 of our own (parallel clusters)
ns_names() { ip netns list 2>/dev/null | awk '{print $1}' | sort; }
link_names() { ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | sort; }
NS_BEFORE=$(ns_names)
LINKS_BEFORE=$(link_names)

cluster_up nsc --workers 3 --subnet "$SUBNET" || { bad "netns cluster up"; cluster_down; finish; exit 1; }
HASH=$(printf '%s' "$CL_DIR" | sha256sum | cut -c1-8)
check "the coordinator is reached through the bridge (10.213.$SUBNET.1)" grep -qF "10.213.$SUBNET.1:" <<<"$CAIRN_COORDINATOR"
alive3() { [ "$(alive_count)" = 3 ]; }
check "3 workers alive" wait_for 20 "3 alive" alive3
NEW_NS=$(comm -13 <(echo "$NS_BEFORE") <(ns_names))
NEW_LINKS=$(comm -13 <(echo "$LINKS_BEFORE") <(link_names))
echo "# namespaces: $(echo $NEW_NS)"
echo "# links: $(echo $NEW_LINKS)"
check "one namespace per node (4)" test "$(grep -c "$HASH" <<<"$NEW_NS")" = 4
check "a bridge and 4 veths in the root namespace" test "$(grep -c "$HASH" <<<"$NEW_LINKS")" = 5
check "each node runs in its namespace" sh -c "ip netns pids cairn-w2-$HASH | grep -qx '$(cluster_pid w2)'"
cj S cluster status
check "workers advertise their namespace addresses" test "$(jget "$S" "sorted(w['addr'].split('/')[2].split(':')[0] for w in j['workers'])")" = \
  "[\"10.213.$SUBNET.11\", \"10.213.$SUBNET.12\", \"10.213.$SUBNET.13\"]"
cj J job submit noop --worker w2 --wait 10000
check "a job runs on w2" test "$(jget "$J" "j['state']")" = succeeded

# ---- cut w2's link: declared dead ----
"$CL_SCRIPT" cut w2 --dir "$CL_DIR" 2>/dev/null
t_cut=$(now_ms)
wait_for $(( (HB_TIMEOUT_MS + SLACK_MS + 5000) / 1000 )) "w2 dead" worker_dead w2 || true
elapsed=$(( $(now_ms) - t_cut ))
echo "# w2 declared dead ${elapsed} ms after its link was cut"
check "w2 declared dead after its link was cut" worker_dead w2
check "... within heartbeat_timeout + ${SLACK_MS} ms (${elapsed} ms)" test "$elapsed" -le $(( HB_TIMEOUT_MS + SLACK_MS ))
check "w2's process still runs (only its link is down)" pid_running "$(cluster_pid w2)"
check "w1 stays alive" worker_alive w1
check "w3 stays alive" worker_alive w3
cj J job submit noop --worker w2 --wait 10000
check "a job pinned to w2 fails with EUNAVAILABLE" test "$CJ_RC" = 21
cj J job submit noop --wait 10000
check "other jobs still run" test "$(jget "$J" "j['state'] + ':' + str(j.get('worker') != 'w2')")" = succeeded:True

# ---- heal: alive again ----
"$CL_SCRIPT" heal w2 --dir "$CL_DIR" 2>/dev/null
t_heal=$(now_ms)
wait_for 40 "w2 alive again" worker_alive w2 || true
echo "# w2 alive again $(( $(now_ms) - t_heal )) ms after heal"
check "w2 alive again after heal" worker_alive w2
cj J job submit noop --worker w2 --wait 15000
check "jobs pinned to w2 run again" test "$(jget "$J" "j['state']")" = succeeded

# ---- down: no process, namespace, veth or bridge left ----
PIDS=$(cluster_pids)
cluster_down
still=""; for p in $PIDS; do pid_running "$p" && still="$still $p:$(ps -o stat=,cmd= -p "$p" | head -c 120)"; done
check "every process stopped${still:+ (left:$still)}" test -z "$still"
check "no namespace of this cluster left (ip netns list)" sh -c "! ip netns list | grep -q '$HASH'"
check "no veth or bridge of this cluster left (ip link)" sh -c "! ip -o link show | grep -q '$HASH'"
check "namespaces as before the test" test "$(comm -13 <(echo "$NS_BEFORE") <(ns_names) | grep -c "$HASH")" = 0
finish
