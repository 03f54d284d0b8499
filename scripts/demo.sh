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

# build_bins NAME...: with Go here, weft's binaries built as `make build`
# builds them (static, as installed) and cnitool as `make tools` pins it,
# plus the srcip helper; without Go, each bin/NAME must be prebuilt.
build_bins() {
	local name
	if command -v go >/dev/null; then
		make -s -C "$ROOT" build tools >/dev/null
		(cd "$ROOT" && go build -o bin/srcip ./integration/cmd/srcip)
		return
	fi
	for name in "$@"; do
		if [[ ! -x $BIN/$name ]]; then
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
	start_devetcd "$BIN" "$ETCD_ADDR" || return 1
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
	build_bins weft-devetcd srcip weft weft-ipam cnitool
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

	cni_part

	section "result"
	if ((FAILED > 0)); then
		echo "$FAILED check(s) failed"
		return 1
	fi
	echo "all checks passed"
}

NODES=(node21 node22)
PODS=(a b)
declare -A POD_IP POD_NS

etcdctl_() { in_ns etcd env ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ENDPOINTS" "$@"; }

# start_daemon NODE: `weft daemon` with flanneld's flags, as supervisor would.
start_daemon() {
	local dir
	dir=$(node_dir "$1")
	start_bg "$1" "daemon-$1" "$BIN/weft" daemon --etcd-endpoints="$ETCD_ENDPOINTS" \
		--iface=eth0 --subnet-file="$dir/subnet.env" --healthz-ip=127.0.0.1 --healthz-port=2401
}

cnitool_() {
	local node=$1
	shift
	in_ns "$node" env CNI_PATH="$BIN" NETCONFPATH="$(node_dir "$node")/net.d" "$BIN/cnitool" "$@"
}

lease_of() { sed -n 's/^FLANNEL_SUBNET=//p' "$(node_dir "$1")/subnet.env" 2>/dev/null; }

cni_part() {
	section "network config in etcd"
	etcdctl_ put /coreos.com/network/config "{\"Network\": \"$CLUSTER_NETWORK\", \"Backend\": {\"Type\": \"host-gw\"}}" >/dev/null
	etcdctl_ get /coreos.com/network/config | sed 's/^/  /'

	section "node agents (weft daemon)"
	local node pod ns out
	for node in "${NODES[@]}"; do
		weft_conflist "$node"
		start_daemon "$node"
	done
	for node in "${NODES[@]}"; do
		if wait_for 30 "$node's lease" test -s "$(node_dir "$node")/subnet.env"; then
			printf '  %s holds %s (log: %s)\n' "$node" "$(lease_of "$node")" "$(log_of "daemon-$node")"
		else
			printf '  %s: no lease yet; see %s\n' "$node" "$(log_of "daemon-$node")"
		fi
	done

	section "pods (cnitool add, as a runtime calls the plugin)"
	for node in "${NODES[@]}"; do
		for pod in "${PODS[@]}"; do
			ns=$(mk_pod "$node" "$pod")
			if ! out=$(cnitool_ "$node" add weft "$ns"); then
				echo "  ADD $node-$pod failed: $out"
				FAILED=$((FAILED + 1))
				continue
			fi
			POD_NS[$node-$pod]=$ns
			POD_IP[$node-$pod]=$(in_ns "$node-$pod" ip -4 -o addr show eth0 | awk '{split($4, a, "/"); print a[1]}')
			printf '  %-10s %-15s on %s\n' "$node-$pod" "${POD_IP[$node-$pod]}" "$node"
		done
	done

	section "leases in etcd (flannel's keys and values)"
	etcdctl_ get --prefix /coreos.com/network/subnets/ | paste - - | sed 's/^/  /'

	section "routes on each node (route -n)"
	for node in "${NODES[@]}"; do
		echo "  $node:"
		in_ns "$node" ip route | sed 's/^/    /'
	done

	section "pod-to-pod ping matrix across nodes"
	local from to
	for from in "${!POD_IP[@]}"; do
		for to in "${!POD_IP[@]}"; do
			[[ ${from%-*} == "${to%-*}" ]] && continue
			check "$from ${POD_IP[$from]} -> $to ${POD_IP[$to]}" probe_ping "$from" "${POD_IP[$to]}"
		done
	done

	section "source IPs"
	start_bg node22-a srcip-pod "$BIN/srcip" serve "${POD_IP[node22-a]}:$OUTSIDE_PORT"
	wait_for 10 "the pod server" grep -q '^listening ' "$(log_of srcip-pod)"
	local seen
	seen=$(probe_srcip node21-a "${POD_IP[node22-a]}:$OUTSIDE_PORT" || true)
	echo "  server in node22-a sees node21-a as: $seen"
	check "pod to pod across nodes keeps the pod IP (${POD_IP[node21-a]})" test "$seen" = "${POD_IP[node21-a]}"
	seen=$(probe_srcip node21-a "$OUTSIDE_ADDR:$OUTSIDE_PORT" || true)
	echo "  outside host sees node21-a as: $seen"
	check "pod to outside is masqueraded to the node IP ($NODE21_ADDR)" test "$seen" = "$NODE21_ADDR"

	section "teardown of pods (cnitool del)"
	for node in "${NODES[@]}"; do
		for pod in "${PODS[@]}"; do
			[[ -n ${POD_NS[$node-$pod]:-} ]] || continue
			[[ $KEEP == 1 ]] && continue
			check "DEL $node-$pod" cnitool_ "$node" del weft "${POD_NS[$node-$pod]}"
		done
	done
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
