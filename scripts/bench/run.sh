#!/usr/bin/env bash
# weft benchmarks (issue 5), side by side with the reference plugins, in one
# run on this machine; results go to BENCHMARKS.md.
#
#   scripts/bench/run.sh [SECTION...]   (default: pods addpath dataplane control go)
#
#   pods       pod network setup through cnitool: weft vs bridge + host-local
#   addpath    where the time of an ADD and a DEL goes (perf tracepoints)
#   dataplane  iperf3 and ping, pod to pod across nodes vs node to node
#   control    lease to route latency, daemon start to ready, 1,000 peers,
#              100 nodes acquiring at once
#   go         go test -bench for pkg/ipam and pkg/route
#
# Environment:
#   N=100 PAR=20        pods per phase, concurrent calls in the parallel phase
#   PAR_ROUNDS=3        rounds of the parallel phase (pods/s is their median)
#   IPERF_SECS=5        length of each iperf3 run; IPERF_ROUNDS=3 runs of each
#   PINGS=50            pings per round (0.01 s apart); PING_ROUNDS=2
#   JOINS=100           leases joined, then left, in the control section
#   BENCHTIME=2s        go test -benchtime
#   OUT=BENCHMARKS.md   where the report goes ("-" for stdout only)
#   PREFIX=wb<random>   namespace prefix
#
# Everything runs in namespaces named <PREFIX>-*, created here and removed on
# exit (also on failure and Ctrl-C), with the processes inside them. Nothing
# is added to the root network namespace. Needs root, iproute2, iptables,
# iperf3, ping, Go, and perf (Debian: linux-perf) for addpath.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=scripts/lib/topo.sh
source "$ROOT/scripts/lib/topo.sh"

N=${N:-100}
PAR=${PAR:-20}
PAR_ROUNDS=${PAR_ROUNDS:-3}
IPERF_SECS=${IPERF_SECS:-5}
IPERF_ROUNDS=${IPERF_ROUNDS:-3}
PINGS=${PINGS:-50}
PING_ROUNDS=${PING_ROUNDS:-2}
JOINS=${JOINS:-100}
BENCHTIME=${BENCHTIME:-2s}
OUT=${OUT:-$ROOT/BENCHMARKS.md}
PREFIX=${PREFIX:-wb$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')}
SECTIONS=("$@")
((${#SECTIONS[@]})) || SECTIONS=(pods addpath dataplane control go)

ETCD_ADDR=10.4.7.12
NODE21_ADDR=10.4.7.21
NODE22_ADDR=10.4.7.22
NODE23_ADDR=10.4.7.23
# Node pairs for the vxlan data-plane cases, each in a network of its own.
VXLAN_NODES=(node41 10.4.7.41 node42 10.4.7.42)
VXLANDR_NODES=(node51 10.4.7.51 node52 10.4.7.52)
# Node pair for flannel's host-gw data path, the reference (bridge + host-local pods).
REFGW_NODES=(ref61 10.4.7.61 ref62 10.4.7.62)
REF_ADDR=10.4.7.31
REFNM_ADDR=10.4.7.32
REFFLNL_ADDR=10.4.7.33
NETWORK_CONFIG='{"Network": "172.7.0.0/16", "Backend": {"Type": "host-gw"}}'

# shellcheck source=scripts/bench/lib.sh
source "$ROOT/scripts/bench/lib.sh"
# shellcheck source=scripts/bench/pods.sh
source "$ROOT/scripts/bench/pods.sh"
# shellcheck source=scripts/bench/cluster.sh
source "$ROOT/scripts/bench/cluster.sh"

main() {
	if ((EUID != 0)); then
		echo "bench: needs root (network namespaces)" >&2
		exit 1
	fi
	for s in "${SECTIONS[@]}"; do
		case $s in pods | addpath | dataplane | control | go) ;; *)
			echo "bench: unknown section '$s'" >&2
			exit 2
			;;
		esac
	done
	topo_init "$PREFIX"
	topo_create
	trap on_exit EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	MD=$TOPO_STATE/md
	BIN=$TOPO_STATE/bin
	REFBIN=$TOPO_STATE/ref
	mkdir -p "$MD" "$BIN"
	build_tools
	echo "bench: prefix $PREFIX, state in $TOPO_STATE"
	[[ " ${SECTIONS[*]} " == *" go "* && ${#SECTIONS[@]} == 1 ]] || setup_cluster

	local failed=() rc
	for s in "${SECTIONS[@]}"; do
		section "$s"
		local t0=$SECONDS
		# In the background so that a signal interrupts `wait` at once and
		# on_exit can stop the section's whole process tree.
		(
			set -e
			"bench_$s"
		) > >(tee "$TOPO_STATE/logs/section-$s.log") 2>&1 &
		SECTION_PID=$!
		rc=0
		wait "$SECTION_PID" || rc=$?
		SECTION_PID=
		if ((rc != 0)); then
			failed+=("$s")
			# shellcheck disable=SC2016 # markdown backquotes, not expansions
			printf '\n**This section failed (exit %d)**; its log ended with:\n\n```\n%s\n```\n' \
				"$rc" "$(tail -n 15 "$TOPO_STATE/logs/section-$s.log")" >>"$MD/$s.md"
		fi
		echo "bench: $s took $((SECONDS - t0))s"
	done
	write_report
	if ((${#failed[@]})); then
		echo "bench: failed sections: ${failed[*]}" >&2
		return 1
	fi
}

# descendants PID: the pids of PID's descendants, deepest first.
descendants() {
	local c
	for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
		descendants "$c"
		echo "$c"
	done
}

# kill_tree PID: SIGTERM PID and its descendants, SIGKILL what is left after 5s.
kill_tree() {
	local pids deadline p alive
	pids="$(descendants "$1") $1"
	# shellcheck disable=SC2086 # a list of pids
	kill -TERM $pids 2>/dev/null || true
	deadline=$((SECONDS + 5))
	while ((SECONDS < deadline)); do
		alive=
		for p in $pids; do pid_alive "$p" && alive+=" $p"; done
		[[ -z $alive ]] && return 0
		sleep 0.1
	done
	# shellcheck disable=SC2086
	kill -KILL $alive 2>/dev/null || true
}

SECTION_PID=
on_exit() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -n $SECTION_PID ]]; then
		echo "bench: stopping the running section" >&2
		kill_tree "$SECTION_PID"
	fi
	section "teardown"
	if ((rc != 0)) && [[ -d $TOPO_STATE/logs ]]; then
		local keep=${TMPDIR:-/tmp}/weft-bench-$PREFIX-logs
		rm -rf "$keep" && cp -r "$TOPO_STATE/logs" "$keep" && echo "logs of the failed run kept in $keep"
	fi
	forget_cni_results || rc=1
	if topo_down; then
		echo "removed namespaces and processes of '$PREFIX'"
	else
		rc=1
	fi
	exit "$rc"
}

# build_tools: weft's binaries built here with the Makefile's flags, and
# copies of the pinned cnitool and reference plugins, so that nothing
# rebuilding bin/ during the run changes what is measured.
build_tools() {
	local t
	for t in cnitool ref/bridge ref/host-local ref/flannel; do
		if [[ ! -x $ROOT/bin/$t ]]; then
			echo "bench: bin/$t missing; run 'make tools' (or 'make bench')" >&2
			exit 1
		fi
	done
	make -s -C "$ROOT" build BIN="$BIN" >/dev/null
	for t in podsetup addpath ctlplane; do
		(cd "$ROOT" && go build -o "$BIN/$t" "./scripts/bench/$t")
	done
	# Start floors, built as weft is (the Makefile's static flags).
	for t in empty-go etcd-client-only; do
		(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$BIN/$t" "./scripts/bench/startfloor/$t")
	done
	cp "$ROOT/bin/cnitool" "$BIN/"
	mkdir -p "$REFBIN"
	cp "$ROOT/bin/ref/bridge" "$ROOT/bin/ref/host-local" "$ROOT/bin/ref/flannel" "$REFBIN/"
}

# setup_cluster: the seed topology plus a node for the reference plugins and
# a spare node for the control-plane measurements; etcd with the network
# config.
setup_cluster() {
	mk_segment lan
	mk_host etcd "$ETCD_ADDR/24"
	mk_host node21 "$NODE21_ADDR/24"
	mk_host node22 "$NODE22_ADDR/24"
	mk_host node23 "$NODE23_ADDR/24"
	mk_host "${VXLAN_NODES[0]}" "${VXLAN_NODES[1]}/24"
	mk_host "${VXLAN_NODES[2]}" "${VXLAN_NODES[3]}/24"
	mk_host "${VXLANDR_NODES[0]}" "${VXLANDR_NODES[1]}/24"
	mk_host "${VXLANDR_NODES[2]}" "${VXLANDR_NODES[3]}/24"
	mk_host "${REFGW_NODES[0]}" "${REFGW_NODES[1]}/24"
	mk_host "${REFGW_NODES[2]}" "${REFGW_NODES[3]}/24"
	# A second on-link range on node23 for 1,000 peers' PublicIPs.
	ip -n "$(topo_ns node23)" addr add 10.6.0.23/20 dev eth0
	mk_host ref "$REF_ADDR/24"
	mk_host refnm "$REFNM_ADDR/24"
	mk_host refflnl "$REFFLNL_ADDR/24"
	start_devetcd "$BIN" "$ETCD_ADDR" || return 1
	etcdctl_ put /coreos.com/network/config "$NETWORK_CONFIG" >/dev/null
	echo "cluster: etcd at $ETCD_ENDPOINTS; nodes 21, 22, 23, 41, 42, 51, 52, 61, 62, ref, refnm and refflnl on 10.4.7.0/24"
}

etcdctl_() { in_ns etcd env ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ENDPOINTS" "$@"; }

main
