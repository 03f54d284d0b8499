# shellcheck shell=bash
# Namespace topology for the weft demo: an L2 segment (a netns holding the
# bridge br0), hosts with a veth into it, empty pod namespaces, and
# background processes inside them, all tracked so that topo_down can
# remove everything.
#
# Nothing here touches the root network namespace: every `ip` call is
# `ip netns add/del`, `ip -n NS ...` or `ip netns exec NS ...`, and veth
# pairs are created inside a namespace with their peer sent straight into
# another one.
#
# Source this file, then call topo_init PREFIX. Namespaces are named
# "<PREFIX>-<name>"; state (pids, logs, per-node dirs) is kept in
# /run/weft-demo/<PREFIX>/.

TOPO_STATE_ROOT=${TOPO_STATE_ROOT:-/run/weft-demo}
TOPO_PREFIX=
TOPO_STATE=

# topo_init PREFIX: choose the prefix and state dir (does not create them).
topo_init() {
	local prefix=$1
	if [[ ! $prefix =~ ^[a-z][a-z0-9]{0,11}$ ]]; then
		echo "topo: prefix must be 1-12 lower-case letters/digits (no '-'), got '$prefix'" >&2
		return 1
	fi
	TOPO_PREFIX=$prefix
	TOPO_STATE=$TOPO_STATE_ROOT/$prefix
}

# topo_ns NAME: the netns name of NAME.
topo_ns() { echo "$TOPO_PREFIX-$1"; }

# topo_list: the namespaces of this topology, one a line.
topo_list() {
	ip netns list 2>/dev/null | awk -v p="$TOPO_PREFIX-" 'index($1, p) == 1 { print $1 }'
}

# topo_create: start a topology; refuses when one with the prefix exists.
topo_create() {
	if [[ -n $(topo_list) || -d $TOPO_STATE ]]; then
		echo "topo: a topology with prefix '$TOPO_PREFIX' exists; remove it with '$0 down'" \
			"(or choose another PREFIX=...)" >&2
		return 1
	fi
	mkdir -p "$TOPO_STATE/pids" "$TOPO_STATE/logs"
}

# mk_ns NAME: create netns <prefix>-NAME with lo up.
mk_ns() {
	local ns
	ns=$(topo_ns "$1")
	ip netns add "$ns"
	ip -n "$ns" link set lo up
}

# mk_segment [NAME]: an L2 segment (default "lan"): netns <prefix>-seg-NAME
# holding bridge br0, up.
mk_segment() {
	local ns
	ns=$(topo_ns "seg-${1:-lan}")
	mk_ns "seg-${1:-lan}"
	ip -n "$ns" link add br0 type bridge
	ip -n "$ns" link set br0 up
}

# mk_host NAME ADDR/LEN [SEGMENT]: netns <prefix>-NAME, lo up, eth0 (a veth
# into the segment's bridge) with ADDR, up. Only the connected route.
mk_host() {
	local name=$1 addr=$2 seg=${3:-lan}
	mk_ns "$name"
	host_attach "$name" eth0 "$addr" "$seg"
}

# host_attach NAME IFNAME ADDR/LEN [SEGMENT]: one more veth into a segment.
host_attach() {
	local name=$1 ifname=$2 addr=$3 seg=${4:-lan}
	local ns segns port n
	ns=$(topo_ns "$name")
	segns=$(topo_ns "seg-$seg")
	n=$(ip -n "$segns" -o link show master br0 | wc -l)
	port="p$((n + 1))-$name"
	port=${port:0:15}
	ip -n "$ns" link add "$ifname" type veth peer name "$port" netns "$segns"
	ip -n "$segns" link set "$port" master br0
	ip -n "$segns" link set "$port" up
	ip -n "$ns" addr add "$addr" dev "$ifname"
	ip -n "$ns" link set "$ifname" up
}

# mk_pod NODE NAME: an empty netns <prefix>-NODE-NAME (lo up) for a pod;
# prints its path.
mk_pod() {
	mk_ns "$1-$2"
	echo "/var/run/netns/$(topo_ns "$1-$2")"
}

# node_dir NODE: a private directory for NODE's files (subnet file, IPAM
# data): the nodes share one filesystem, so they must not share paths.
node_dir() {
	mkdir -p "$TOPO_STATE/nodes/$1"
	echo "$TOPO_STATE/nodes/$1"
}

# weft_conflist NODE [ETCD_PREFIX]: the weft conflist an operator drops into
# /etc/cni/net.d (peerSyncInterval left at its default), with per-node paths
# because the nodes in namespaces share one filesystem. Uses ETCD_ENDPOINTS.
weft_conflist() {
	local dir prefix=${2:-/coreos.com/network}
	dir=$(node_dir "$1")
	mkdir -p "$dir/net.d"
	cat >"$dir/net.d/10-weft.conflist" <<EOC
{
  "cniVersion": "1.1.0",
  "name": "weft",
  "plugins": [
    {
      "type": "weft",
      "etcdEndpoints": ["$ETCD_ENDPOINTS"],
      "etcdPrefix": "$prefix",
      "iface": "eth0",
      "subnetFile": "$dir/subnet.env",
      "ipam": {"type": "weft-ipam", "dataDir": "$dir/ipam"}
    }
  ]
}
EOC
}

# in_ns NAME CMD...: run CMD in <prefix>-NAME.
in_ns() {
	local ns
	ns=$(topo_ns "$1")
	shift
	ip netns exec "$ns" "$@"
}

# start_bg NAME TAG CMD...: run CMD in the background in <prefix>-NAME, in a
# process group of its own, logging to $TOPO_STATE/logs/TAG.log; its pid goes
# to $TOPO_STATE/pids/TAG.pid for topo_down.
start_bg() {
	local name=$1 tag=$2 ns
	shift 2
	ns=$(topo_ns "$name")
	# Not a group leader here (no job control), so setsid execs in place and
	# $! is the pid of CMD itself (ip netns exec execs too).
	setsid ip netns exec "$ns" "$@" </dev/null >"$TOPO_STATE/logs/$tag.log" 2>&1 &
	echo $! >"$TOPO_STATE/pids/$tag.pid"
}

# log_of TAG: the log file of a process started by start_bg.
log_of() { echo "$TOPO_STATE/logs/$1.log"; }

# start_devetcd BIN ADDR: BIN/weft-devetcd in the "etcd" host, listening on
# ADDR:2379 with its data under the topology's state; waits for it and sets
# ETCD_ENDPOINTS to what it prints.
start_devetcd() {
	mkdir -p "$TOPO_STATE/etcd"
	start_bg etcd etcd "$1/weft-devetcd" --data-dir "$TOPO_STATE/etcd" \
		--listen-client-urls "http://$2:2379"
	if ! wait_for 60 "etcd to print ready" grep -q '^ready ' "$(log_of etcd)"; then
		cat "$(log_of etcd)" >&2
		return 1
	fi
	ETCD_ENDPOINTS=$(awk '/^ready / { print $2; exit }' "$(log_of etcd)")
}

# wait_for SECONDS WHAT CMD...: poll CMD every 0.1s until it succeeds;
# fail with WHAT after SECONDS.
wait_for() {
	local secs=$1 what=$2 deadline
	shift 2
	deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			echo "topo: timed out after ${secs}s waiting for $what" >&2
			return 1
		fi
		sleep 0.1
	done
}

# pid_alive PID: true while PID exists and is not a zombie.
pid_alive() {
	local state
	state=$(awk '{ sub(/.*\) /, ""); print substr($0, 1, 1) }' "/proc/$1/stat" 2>/dev/null) || return 1
	[[ -n $state && $state != Z ]]
}

# stop_pid PID: SIGTERM its process group, then SIGKILL after 10s.
stop_pid() {
	local pid=$1 deadline
	pid_alive "$pid" || return 0
	kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
	deadline=$((SECONDS + 10))
	while pid_alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
	kill -KILL -- "-$pid" 2>/dev/null || true
	kill -KILL "$pid" 2>/dev/null || true
}

# topo_down: stop the tracked processes, kill anything else still inside our
# namespaces (started by a bare `ip netns exec`), delete the namespaces and
# the state dir. Idempotent; works on a kept demo from another shell.
topo_down() {
	local f ns pid deadline rc=0
	if [[ -d $TOPO_STATE/pids ]]; then
		for f in "$TOPO_STATE"/pids/*.pid; do
			[[ -e $f ]] || continue
			stop_pid "$(cat "$f")"
			rm -f "$f"
		done
	fi
	for ns in $(topo_list); do
		deadline=$((SECONDS + 10))
		while pid=$(ip netns pids "$ns" 2>/dev/null) && [[ -n $pid ]]; do
			if ((SECONDS >= deadline)); then
				echo "topo: processes $pid in $ns survive SIGKILL" >&2
				rc=1
				break
			fi
			# shellcheck disable=SC2086 # a list of pids
			kill -KILL $pid 2>/dev/null || true
			sleep 0.1
		done
		ip netns del "$ns" || rc=1
	done
	if [[ -n $(topo_list) ]]; then
		echo "topo: namespaces left: $(topo_list | tr '\n' ' ')" >&2
		rc=1
	fi
	[[ -n $TOPO_STATE ]] && rm -rf "$TOPO_STATE"
	return $rc
}

# section TITLE: a heading in the demo's output.
section() {
	if [[ -t 1 ]]; then
		printf '\n\033[1m== %s ==\033[0m\n' "$*"
	else
		printf '\n== %s ==\n' "$*"
	fi
}
