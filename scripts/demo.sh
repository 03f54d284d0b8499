#!/usr/bin/env bash
# weft demo: two nodes on one L2 segment, an etcd host and an "outside" host,
# each in its own network namespace; pods on both nodes get addresses from
# 172.7.0.0/16 through the weft CNI plugin, reach each other with their own
# source IP, and reach the outside host masqueraded to their node's IP.
#
#   scripts/demo.sh [up]    build the topology, run the demo, tear it down
#   KEEP=1 scripts/demo.sh  leave it running; poke with `ip netns exec ...`
#   scripts/demo.sh down    remove a kept demo (namespaces and processes)
#
# Environment:
#   PREFIX=weftdemo     namespace prefix: namespaces are <PREFIX>-<name>
#   KEEP=1              do not tear down on exit
#   ETCD_ENDPOINTS=...  use this etcd instead of starting bin/weft-devetcd on
#                       10.4.7.12 (it must be reachable from the node
#                       namespaces, i.e. on 10.4.7.0/24)
#
# Needs root, iproute2, and Go (or prebuilt bin/). Touches nothing in the
# root network namespace.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/topo.sh
source "$ROOT/scripts/lib/topo.sh"

PREFIX=${PREFIX:-weftdemo}
KEEP=${KEEP:-0}
BIN=$ROOT/bin

SEGMENT_ADDR=10.4.7.0/24
ETCD_ADDR=10.4.7.12
NODE21_ADDR=10.4.7.21
NODE22_ADDR=10.4.7.22
OUTSIDE_ADDR=10.4.7.50
CLUSTER_NETWORK=172.7.0.0/16
OUTSIDE_PORT=8080

usage() {
	sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
	exit 2
}

need_root() {
	if ((EUID != 0)); then
		echo "demo: needs root (network namespaces)" >&2
		exit 1
	fi
}

# build_bins NAME...: build bin/NAME from its package when Go is here, else
# require a prebuilt one.
build_bins() {
	local name pkg
	for name in "$@"; do
		case $name in
		weft-devetcd) pkg=./internal/cmd/weft-devetcd ;;
		srcip) pkg=./integration/cmd/srcip ;;
		weft) pkg=./plugins/weft ;;
		weft-ipam) pkg=./ipam/weft-ipam ;;
		*) pkg=./cmd/$name ;;
		esac
		if command -v go >/dev/null; then
			(cd "$ROOT" && go build -o "bin/$name" "$pkg")
		elif [[ ! -x $BIN/$name ]]; then
			echo "demo: bin/$name missing and no Go to build it" >&2
			exit 1
		fi
	done
}

# start_etcd: bin/weft-devetcd in the etcd host on $ETCD_ADDR:2379, unless
# ETCD_ENDPOINTS is set. Exports ETCD_ENDPOINTS.
start_etcd() {
	if [[ -n ${ETCD_ENDPOINTS:-} ]]; then
		echo "using etcd at $ETCD_ENDPOINTS"
		return
	fi
	mkdir -p "$TOPO_STATE/etcd"
	start_bg etcd etcd "$BIN/weft-devetcd" --data-dir "$TOPO_STATE/etcd" \
		--listen-client-urls "http://$ETCD_ADDR:2379"
	if ! wait_for 60 "etcd to print ready" grep -q '^ready ' "$(log_of etcd)"; then
		cat "$(log_of etcd)" >&2
		return 1
	fi
	ETCD_ENDPOINTS=$(awk '/^ready / { print $2; exit }' "$(log_of etcd)")
	export ETCD_ENDPOINTS
	echo "etcd serving at $ETCD_ENDPOINTS (log: $(log_of etcd))"
}

# probe_ping FROM IP: one ICMP echo from netns <prefix>-FROM.
probe_ping() { in_ns "$1" "$BIN/srcip" ping -t 1s "$2"; }

# probe_srcip FROM ADDR:PORT: the source IP a srcip server at ADDR:PORT sees
# for a connection from netns <prefix>-FROM.
probe_srcip() { in_ns "$1" "$BIN/srcip" dial -t 3s "$2"; }

# check WHAT CMD...: print ok/FAIL for one check; count failures.
FAILED=0
check() {
	local what=$1
	shift
	if "$@"; then
		printf '  ok    %s\n' "$what"
	else
		printf '  FAIL  %s\n' "$what"
		FAILED=$((FAILED + 1))
	fi
}

on_exit() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ $KEEP == 1 ]]; then
		section "kept"
		echo "namespaces: $(topo_list | tr '\n' ' ')"
		echo "state, pids and logs: $TOPO_STATE"
		if [[ $PREFIX == weftdemo ]]; then
			echo "remove with: $0 down"
		else
			echo "remove with: PREFIX=$PREFIX $0 down"
		fi
	else
		section "teardown"
		if topo_down; then
			echo "removed namespaces and processes of '$PREFIX'"
		else
			rc=1
		fi
	fi
	exit "$rc"
}

up() {
	need_root
	topo_init "$PREFIX"
	build_bins weft-devetcd srcip
	topo_create
	trap on_exit EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM

	section "topology"
	mk_segment lan
	mk_host etcd "$ETCD_ADDR/24"
	mk_host node21 "$NODE21_ADDR/24"
	mk_host node22 "$NODE22_ADDR/24"
	mk_host outside "$OUTSIDE_ADDR/24"
	printf '  %-8s %s\n' segment "$(topo_ns seg-lan) (bridge br0, $SEGMENT_ADDR)" \
		etcd "$(topo_ns etcd) $ETCD_ADDR" \
		node21 "$(topo_ns node21) $NODE21_ADDR" \
		node22 "$(topo_ns node22) $NODE22_ADDR" \
		outside "$(topo_ns outside) $OUTSIDE_ADDR (not in $CLUSTER_NETWORK)"
	start_etcd

	# The outside host reports the source address of each connection.
	start_bg outside srcip-outside "$BIN/srcip" serve "$OUTSIDE_ADDR:$OUTSIDE_PORT"
	wait_for 10 "the outside server" grep -q '^listening ' "$(log_of srcip-outside)"

	section "segment"
	check "node21 -> node22 ($NODE22_ADDR)" probe_ping node21 "$NODE22_ADDR"
	check "node22 -> node21 ($NODE21_ADDR)" probe_ping node22 "$NODE21_ADDR"
	check "node21 -> outside ($OUTSIDE_ADDR)" probe_ping node21 "$OUTSIDE_ADDR"
	check "node21 -> etcd ($ETCD_ENDPOINTS)" \
		in_ns node21 "$BIN/srcip" connect -t 3s "${ETCD_ENDPOINTS#http://}"
	check "node22 -> etcd ($ETCD_ENDPOINTS)" \
		in_ns node22 "$BIN/srcip" connect -t 3s "${ETCD_ENDPOINTS#http://}"
	check "outside sees node21 as $NODE21_ADDR" \
		test "$(probe_srcip node21 "$OUTSIDE_ADDR:$OUTSIDE_PORT")" = "$NODE21_ADDR"

	# --- CNI part (lead) ---
	# Available here:
	#   $ETCD_ENDPOINTS, $CLUSTER_NETWORK, $BIN, build_bins weft weft-ipam
	#   mk_pod NODE NAME        -> prints the pod's netns path
	#   node_dir NODE           -> a private dir per node (subnetFile, IPAM
	#                              dataDir: the nodes share one filesystem)
	#   in_ns NAME CMD...       (NAME: node21, node22-a, ...)
	#   start_bg NAME TAG CMD...; log_of TAG   (e.g. `weft daemon` per node)
	#   probe_ping FROM IP; probe_srcip FROM ADDR:PORT
	#   check WHAT CMD...; section TITLE
	#   outside server: $OUTSIDE_ADDR:$OUTSIDE_PORT (srcip serve)
	# Pods, then: pod -> pod across nodes keeps the pod IP; pod -> outside is
	# masqueraded to the node IP (probe_srcip <node>-<pod> $OUTSIDE_ADDR:$OUTSIDE_PORT).
	# --- end of CNI part ---

	section "result"
	if ((FAILED > 0)); then
		echo "$FAILED check(s) failed"
		return 1
	fi
	echo "all checks passed"
}

down() {
	need_root
	topo_init "$PREFIX"
	topo_down
	echo "removed namespaces and processes of '$PREFIX'"
}

case ${1:-up} in
up) up ;;
down) down ;;
-h | --help | help) usage ;;
*) usage ;;
esac
