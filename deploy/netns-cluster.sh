#!/usr/bin/env bash
# A cairn cluster on this machine with every node in its own network namespace, for tests that
# cut a node off the network (root only). Same commands and files as deploy/local-cluster.sh:
#
#   deploy/netns-cluster.sh up [--workers N] [--dir DIR] [--test-clock] [--base-port P] [--subnet K]
#   deploy/netns-cluster.sh status | env | down [--dir DIR]
#   deploy/netns-cluster.sh cut NODE [--dir DIR]     link of NODE (coordinator, w1..wN) down
#   deploy/netns-cluster.sh heal NODE [--dir DIR]    and up again
#
# Network: namespace cairn-<node>-<hash of DIR> per node, joined by a veth pair to the bridge
# cb-<hash> in the root namespace. Addresses 10.213.K.0/24 (K = --subnet, default 0), a private
# range used only inside the namespaces this script creates: coordinator .1, worker wI .(10+I),
# the bridge .254 (so the `cairn` CLI in the root namespace reaches the coordinator). Give two
# clusters that run at the same time different --dir and --subnet. Ports as local-cluster.sh
# (default base 17300): client P, worker endpoint P+1, worker wI's peer P+10+I.
# `down` stops the pids in DIR/pids, then deletes the namespaces, veths and bridge it created.
set -euo pipefail
export CAIRN_CLUSTER_NETNS=1 CAIRN_CLUSTER_PROG=deploy/netns-cluster.sh
exec bash "$(dirname "${BASH_SOURCE[0]}")/local-cluster.sh" "$@"
