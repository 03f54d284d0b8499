# shellcheck shell=bash
# Sections "dataplane", "control" and "go" of scripts/bench/run.sh: iperf3
# and ping between pods on two nodes, the daemons' control plane, and the Go
# benchmarks. Sourced by run.sh.

# start_daemon NODE [FLAG...]: `weft daemon` with flanneld's flags, serving
# /readyz on the node's own address.
start_daemon() {
	local node=$1 dir addr
	shift
	dir=$(node_dir "$node")
	addr=$(ip -n "$(topo_ns "$node")" -4 -o addr show eth0 | awk '{ split($4, a, "/"); print a[1]; exit }')
	start_bg "$node" "daemon-$node" "$BIN/weft" daemon --etcd-endpoints="$ETCD_ENDPOINTS" \
		--iface=eth0 --subnet-file="$dir/subnet.env" --healthz-ip="$addr" --healthz-port=2401 "$@"
}

# pod_ip NODE-POD: the IPv4 address of eth0 in a pod namespace.
pod_ip() { ip -n "$(topo_ns "$1")" -4 -o addr show eth0 | awk '{ split($4, a, "/"); print a[1]; exit }'; }

# iperf_mbps FROM DST PORT: one iperf3 TCP run; prints the receiver's Mbit/s.
iperf_mbps() {
	in_ns "$1" timeout $((IPERF_SECS + 20)) iperf3 -c "$2" -p "$3" -t "$IPERF_SECS" -f m |
		awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") print $(i - 1) }'
}

# ping_ms FROM DST: the RTTs in ms of PINGS echo requests 0.01 s apart.
ping_ms() {
	in_ns "$1" ping -n -c "$PINGS" -i 0.01 -W 1 "$2" | sed -n 's/.* time=\([0-9.]*\) ms.*/\1/p'
}

# route_to NODE SUBNET: NODE has a route to SUBNET; prints it.
route_to() { ip -n "$(topo_ns "$1")" route show "$2" | grep .; }

# ensure_pair A B [PREFIX NETWORK_CONFIG]: `weft daemon` on nodes A and B
# for the network under PREFIX (default: the seed's, config already in
# etcd), each with a lease and a route to the other's subnet. Idempotent.
ensure_pair() {
	local a=$1 b=$2 prefix=${3:-/coreos.com/network} config=${4:-} node pidf
	[[ -n $config ]] && etcdctl_ put "$prefix/config" "$config" >/dev/null
	for node in "$a" "$b"; do
		pidf=$TOPO_STATE/pids/daemon-$node.pid
		[[ -e $pidf ]] && pid_alive "$(cat "$pidf")" && continue
		[[ -e $(node_dir "$node")/net.d/10-weft.conflist ]] || weft_conflist "$node" "$prefix"
		start_daemon "$node" --etcd-prefix="$prefix"
	done
	for node in "$a" "$b"; do
		wait_for 30 "$node's subnet file" test -s "$(node_dir "$node")/subnet.env"
	done
	local sa sb
	sa=$(network_of "$(subnet_of "$a")")
	sb=$(network_of "$(subnet_of "$b")")
	wait_for 30 "$a's route to $sb" route_to "$a" "$sb"
	wait_for 30 "$b's route to $sa" route_to "$b" "$sa"
	echo "daemons: $a holds $sa, $b holds $sb; routes in place"
}

ensure_daemons() { ensure_pair node21 node22; }

# node_addr NODE: the node's address on the segment.
node_addr() { ip -n "$(topo_ns "$1")" -4 -o addr show eth0 | awk '{ split($4, a, "/"); print a[1]; exit }'; }

# pod_subnet NODE: the pod subnet of NODE: the reference pair's fixed one,
# else the one weft leased.
pod_subnet() {
	local f
	f=$(node_dir "$1")/ref-subnet
	if [[ -e $f ]]; then cat "$f"; else network_of "$(subnet_of "$1")"; fi
}

# ensure_ref_pair A B: flannel's host-gw data path, the reference the issue
# names for a routed, unencapsulated path: pods attached by bridge +
# host-local (ipMasq false, as in flannel's chain), on each node a route to
# the other's pod subnet via the other node (what flanneld programs), and
# flanneld's --ip-masq and FORWARD rules. Pod subnet 172.10.<last octet of
# the node's address>.0/24 in network 172.10.0.0/16. Idempotent.
ensure_ref_pair() {
	local a=$1 b=$2 node peer sub
	[[ -e $(node_dir "$a")/ref-subnet ]] && return 0
	for node in "$a" "$b"; do
		sub=172.10.$(node_addr "$node" | cut -d. -f4).0/24
		ref_conflist "$node" "$sub" false
		flannel_rules "$node" 172.10.0.0/16 "$sub"
		echo "$sub" >"$(node_dir "$node")/ref-subnet"
	done
	for node in "$a" "$b"; do
		peer=$b
		[[ $node == "$b" ]] && peer=$a
		ip -n "$(topo_ns "$node")" route add "$(pod_subnet "$peer")" via "$(node_addr "$peer")" dev eth0
	done
	echo "reference pair: $a holds $(pod_subnet "$a"), $b holds $(pod_subnet "$b"); static routes in place"
}

# flannel_rules NODE NETWORK LEASE: the iptables rules flanneld (v0.2x, with
# --ip-masq) keeps on a node, written here as it would: masquerade what
# leaves NETWORK, keep pod-to-pod traffic as is, accept forwarding to and
# from NETWORK.
flannel_rules() {
	local ns network=$2 lease=$3
	ns=$(topo_ns "$1")
	ip netns exec "$ns" iptables-restore <<EOR
*nat
:FLANNEL-POSTRTG - [0:0]
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s $lease -d $network -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s $network -d $lease -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG ! -s $network -d $lease -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s $network ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG ! -s $network -d $network -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
COMMIT
*filter
:FLANNEL-FWD - [0:0]
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FLANNEL-FWD -s $network -m comment --comment "flanneld forward" -j ACCEPT
-A FLANNEL-FWD -d $network -m comment --comment "flanneld forward" -j ACCEPT
COMMIT
EOR
}

# dataplane_case NAME A B PORT [NETWORK]: one pod on A and one on B
# (attached by the cnitool network NETWORK, default weft), then iperf3 and
# ping from A to B, node to node and pod to pod, alternating. Appends rows
# to $MD/dataplane.{paths,ratios} and, for host-gw, the targets.
dataplane_case() {
	local name=$1 a=$2 b=$3 port=$4 net=${5:-weft}
	local pa pb ipa ipb addr_b sb route mtu
	pa=$(mk_pod "$a" dp)
	pb=$(mk_pod "$b" dp)
	cnitool_ "$a" add "$net" "$pa" >/dev/null
	cnitool_ "$b" add "$net" "$pb" >/dev/null
	ipa=$(pod_ip "$a-dp")
	ipb=$(pod_ip "$b-dp")
	addr_b=$(node_addr "$b")
	sb=$(pod_subnet "$b")
	route=$(route_to "$a" "$sb" | head -1 | sed 's/ *$//')
	mtu=$(ip -n "$(topo_ns "$a-dp")" -o link show eth0 | awk '{ for (i = 1; i < NF; i++) if ($i == "mtu") print $(i + 1) }')
	echo "$name: pod $ipa on $a, pod $ipb on $b (MTU $mtu); $a routes $route"
	start_bg "$b-dp" "iperf-pod-$name" iperf3 -s -B "$ipb" -p "$port" --forceflush
	start_bg "$b" "iperf-node-$name" iperf3 -s -B "$addr_b" -p $((port + 1)) --forceflush
	wait_for 10 "iperf3 in $b-dp" grep -q listening "$(log_of "iperf-pod-$name")"
	wait_for 10 "iperf3 in $b" grep -q listening "$(log_of "iperf-node-$name")"
	# Warm both paths (ARP, neighbours, conntrack) before measuring.
	in_ns "$a" ping -n -c 3 -i 0.05 -W 1 "$addr_b" >/dev/null
	in_ns "$a-dp" ping -n -c 3 -i 0.05 -W 1 "$ipb" >/dev/null

	local r bw node_bw=() pod_bw=()
	for ((r = 1; r <= IPERF_ROUNDS; r++)); do
		bw=$(iperf_mbps "$a" "$addr_b" $((port + 1))) || bw=
		[[ -n $bw ]] || { dataplane_failed "$name" "iperf3 node to node, round $r" "$a" "$b"; return 1; }
		node_bw+=("$bw")
		bw=$(iperf_mbps "$a-dp" "$ipb" "$port") || bw=
		[[ -n $bw ]] || { dataplane_failed "$name" "iperf3 pod to pod, round $r" "$a" "$b"; return 1; }
		pod_bw+=("$bw")
		echo "$name: iperf3 round $r: node ${node_bw[-1]} Mbit/s, pod ${pod_bw[-1]} Mbit/s"
	done
	local fn=$TOPO_STATE/ping-node-$name fp=$TOPO_STATE/ping-pod-$name
	: >"$fn"
	: >"$fp"
	for ((r = 1; r <= PING_ROUNDS; r++)); do
		ping_ms "$a" "$addr_b" >>"$fn"
		ping_ms "$a-dp" "$ipb" >>"$fp"
	done
	local want=$((PINGS * PING_ROUNDS)) nb pbw ns ps tr rr rm
	nb=$(printf '%s\n' "${node_bw[@]}" | median | xargs printf '%.0f')
	pbw=$(printf '%s\n' "${pod_bw[@]}" | median | xargs printf '%.0f')
	read -r -a ns < <(stats <"$fn")
	read -r -a ps < <(stats <"$fp")
	echo "$pbw ${ps[0]} $nb ${ns[0]}" >"$(case_file "$name")"
	tr=$(ratio "$pbw" "$nb")
	rr=$(ratio "${ps[0]}" "${ns[0]}")
	rm=$(ratio "${ps[3]}" "${ns[3]}")
	{
		echo "| $name | $a → $b (nodes) | $nb | ${node_bw[*]} | ${ns[0]} | ${ns[1]} | ${ns[2]} | ${ns[3]} | $(wc -l <"$fn")/$want |"
		echo "| $name | pod on $a → pod on $b | $pbw | ${pod_bw[*]} | ${ps[0]} | ${ps[1]} | ${ps[2]} | ${ps[3]} | $(wc -l <"$fp")/$want |"
	} >>"$MD/dataplane.paths"
	if [[ $name == host-gw ]]; then
		echo "| $name | ${tr}x | $(verdict "$pbw / $nb >= 0.90") | ${rr}x | $(verdict "${ps[0]} / ${ns[0]} <= 1.3") | ${rm}x | $mtu | \`$route\` |" >>"$MD/dataplane.ratios"
		{
			echo "| data plane: host-gw TCP throughput pod/node | ${tr}x ($pbw vs $nb Mbit/s) | >= 0.90x | $(verdict "$pbw / $nb >= 0.90") |"
			echo "| data plane: host-gw RTT p50 pod/node | ${rr}x (${ps[0]} vs ${ns[0]} ms) | <= 1.3x | $(verdict "${ps[0]} / ${ns[0]} <= 1.3") |"
		} >"$MD/dataplane.targets"
	else
		echo "| $name | ${tr}x | - | ${rr}x | - | ${rm}x | $mtu | \`$route\` |" >>"$MD/dataplane.ratios"
	fi
}

# case_file NAME: where dataplane_case leaves a case's medians: pod Mbit/s,
# pod RTT p50, node Mbit/s, node RTT p50.
case_file() { echo "$MD/dataplane.case-${1//[^a-z0-9+-]/_}"; }

# vs_reference WEFT REF: weft's host-gw pod path against flannel's, both
# measured above; a table on stdout and an informational row for the targets.
vs_reference() {
	local w r
	[[ -s $(case_file "$1") && -s $(case_file "$2") ]] || return 0
	read -r -a w <"$(case_file "$1")"
	read -r -a r <"$(case_file "$2")"
	echo "weft's host-gw against flannel's host-gw data path (the reference pair), same run:"
	echo
	echo "| measure | weft host-gw | flannel host-gw (reference) | weft/reference |"
	echo "|---|---:|---:|---:|"
	echo "| pod → pod TCP Mbit/s | ${w[0]} | ${r[0]} | $(ratio "${w[0]}" "${r[0]}")x |"
	echo "| pod → pod RTT p50 ms | ${w[1]} | ${r[1]} | $(ratio "${w[1]}" "${r[1]}")x |"
	echo "| TCP pod/node | $(ratio "${w[0]}" "${w[2]}")x | $(ratio "${r[0]}" "${r[2]}")x | - |"
	echo "| RTT p50 pod/node | $(ratio "${w[1]}" "${w[3]}")x | $(ratio "${r[1]}" "${r[3]}")x | - |"
	echo "| data plane: host-gw pod-to-pod TCP, weft/flannel host-gw (same run, no target) | $(ratio "${w[0]}" "${r[0]}")x (${w[0]} vs ${r[0]} Mbit/s; flannel's pod/node $(ratio "${r[0]}" "${r[2]}")x) | - | - |" >>"$MD/dataplane.targets"
}

# dataplane_failed NAME WHAT A B: record a failed measurement, with the
# state of both nodes and pods, in the section log and the report.
dataplane_failed() {
	local name=$1 what=$2 a=$3 b=$4 n
	echo "$name: $what failed; state of the nodes follows" >&2
	for n in "$a" "$b" "$a-dp" "$b-dp"; do
		echo "--- $n: ip route; ip neigh" >&2
		ip -n "$(topo_ns "$n")" route >&2 || true
		ip -n "$(topo_ns "$n")" neigh >&2 || true
	done
	for n in "$a" "$b"; do
		echo "--- daemon-$n log (tail)" >&2
		tail -n 5 "$(log_of "daemon-$n")" >&2 || true
	done
	echo "| $name | **$what failed** (state in the section log) | | | | | | | |" >>"$MD/dataplane.paths"
}

# run_case NAME A B PORT: dataplane_case in a subshell with errexit on (a
# function called as an `if` or `||` operand would run with it off); a
# failure is recorded in FAILED_CASES and does not stop the other cases.
FAILED_CASES=()
run_case() {
	local rc=0
	set +e
	(
		set -e
		dataplane_case "$@"
	)
	rc=$?
	set -e
	((rc == 0)) || FAILED_CASES+=("$1")
}

bench_dataplane() {
	: >"$MD/dataplane.paths"
	: >"$MD/dataplane.ratios"
	ensure_daemons
	run_case host-gw node21 node22 5201
	ensure_pair "${VXLAN_NODES[0]}" "${VXLAN_NODES[2]}" /weftbench-vxlan/network \
		'{"Network": "172.8.0.0/16", "Backend": {"Type": "vxlan"}}'
	run_case vxlan "${VXLAN_NODES[0]}" "${VXLAN_NODES[2]}" 5211
	ensure_pair "${VXLANDR_NODES[0]}" "${VXLANDR_NODES[2]}" /weftbench-vxlandr/network \
		'{"Network": "172.9.0.0/16", "Backend": {"Type": "vxlan", "DirectRouting": true}}'
	run_case vxlan+DirectRouting "${VXLANDR_NODES[0]}" "${VXLANDR_NODES[2]}" 5221
	ensure_ref_pair "${REFGW_NODES[0]}" "${REFGW_NODES[2]}"
	run_case "flannel host-gw" "${REFGW_NODES[0]}" "${REFGW_NODES[2]}" 5231 ref
	{
		echo "## 2. Data plane"
		echo
		echo "Two nodes on one segment (a bridge in its own namespace, a veth to each node), both running"
		echo "\`weft daemon\`, one pod on each attached by weft: the seed's node21 ($NODE21_ADDR) and node22"
		echo "($NODE22_ADDR) with host-gw, and two more pairs on the same segment with networks of their own for"
		echo "vxlan (every peer through weft.1) and vxlan with DirectRouting (a peer on the node's segment is"
		echo "routed directly, as host-gw). The reference is flannel's host-gw data path on a pair of its own on"
		echo "the same segment (ref61, ref62): pods attached by the reference bridge + host-local (ipMasq false,"
		echo "as flannel's chain), a route to the peer's pod subnet via the peer node, and flanneld's --ip-masq"
		echo "and FORWARD rules, all written by the benchmark as flanneld would. iperf3 TCP, $IPERF_SECS s a run,"
		echo "$IPERF_ROUNDS runs per path alternating node and pod (median); ping $PINGS echo requests 0.01 s apart,"
		echo "$PING_ROUNDS rounds per path, after a warm-up."
		echo
		echo "| backend | path | TCP Mbit/s (median) | runs Mbit/s | RTT p50 ms | RTT p90 ms | RTT p99 ms | RTT mean ms | replies |"
		echo "|---|---|---:|---|---:|---:|---:|---:|---:|"
		cat "$MD/dataplane.paths"
		echo
		echo "Ratios pod/node; issue 5 sets targets for host-gw only (throughput >= 0.90x, RTT <= 1.3x)."
		echo
		echo "| backend | TCP throughput | result | RTT p50 | result | RTT mean | pod MTU | route to the peer's pod subnet |"
		echo "|---|---:|---|---:|---|---:|---:|---|"
		cat "$MD/dataplane.ratios"
		echo
		vs_reference host-gw "flannel host-gw"
		echo
		echo "The host-gw targets are ratios to the node-to-node path. The table above puts weft's pod path"
		echo "beside flannel's host-gw pod path, measured in the same run on the same segment: what the two"
		echo "share is the cost of a bridged, routed pod path; what differs is weft's own."
		echo
		echo "What limits the pod path: it crosses two more veth pairs, two more bridges and two routing"
		echo "hops than the node path (pod → weft0 → node eth0 → segment → node eth0 → weft0 → pod), each paid"
		echo "in softirq CPU on the same two cores that run iperf3; vxlan adds encapsulation, and its pods get"
		echo "the 1450-byte MTU even when DirectRouting sends them straight to the peer. weft adds no per-packet rule beyond its two FORWARD accepts and the POSTROUTING accept for"
		echo "pod-to-pod traffic. The kernel's bridge netfilter hook (\`net.bridge.bridge-nf-call-iptables\`,"
		echo "1 by default in every namespace once br_netfilter is loaded) also sends bridged pod frames"
		echo "through conntrack. Measured once by hand on the demo's topology (2026-11-24, iperf3 4 s x 3):"
		echo "host-gw pod/node 0.75-0.78; with that hook turned off in both nodes 0.80-0.84 (Kubernetes needs"
		echo "it on, for service traffic between pods of one bridge); GRO on every pod veth 0.76-0.86, no change."
		echo "Again by hand on 2026-11-25: 0.81 as deployed, 0.87 with the hook off, 0.84 with every nf_tables"
		echo "rule flushed in both nodes, 0.86 with both: with no netfilter at all the bridged pod path still"
		echo "stays under 0.90 here; what is left is the extra veth, bridge and routing hops."
		echo "In a run of 3 the ratio moves by about 0.05, mostly with the node-to-node figure."
		echo "Also by hand (same day): the FORWARD accepts without their comment match (an xt match evaluated"
		echo "per packet under iptables-nft) 0.79-0.81, no change. The RTT depends on how idle the CPUs are"
		echo "between echoes: at 5 ms apart (200 echoes) node 0.011 ms and pod 0.018-0.019 ms (1.6-1.7x, 7-8 µs"
		echo "more); at 10 ms apart, the figures above, the pod path adds 25-30 µs, which fits its longer code"
		echo "running with caches gone cold between echoes (a reading, not measured further)."
	} >"$MD/dataplane.md"
	cat "$MD/dataplane.md"
	if ((${#FAILED_CASES[@]})); then
		echo "data plane: failed cases: ${FAILED_CASES[*]}" >&2
		return 1
	fi
}

# summary_of FILE KEY: KEY=VALUE from the "summary" line a ctlplane run
# printed on stderr.
summary_of() { sed -n 's/^summary //p' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

# ctlplane_ CMD ARGS...: run ctlplane in the etcd host (it reaches etcd and
# the nodes' healthz); the table goes to stdout, the log and summary to
# $TOPO_STATE/ctl-CMD.err.
ctlplane_() {
	local cmd=$1
	shift
	if ! in_ns etcd timeout 300 "$BIN/ctlplane" "$cmd" -etcd "$ETCD_ENDPOINTS" "$@" 2>"$TOPO_STATE/ctl-$cmd.err"; then
		cat "$TOPO_STATE/ctl-$cmd.err" >&2
		return 1
	fi
	grep -v '^summary ' "$TOPO_STATE/ctl-$cmd.err" >&2 || true
}

bench_control() {
	ensure_daemons
	local nsdir=/var/run/netns
	local md=$MD/control.md
	{
		echo "## 3. Control plane"
		echo
		echo "\`scripts/bench/ctlplane\`, run in the etcd host's namespace; route changes are timestamped as"
		echo "netlink events from each node's namespace arrive, on the same clock as the etcd write."
		echo
		echo "### Lease to route"
		echo
		echo "$JOINS fake nodes join (their lease Put on a warm etcd client, bound to an etcd lease, PublicIP on"
		echo "the segment), one at a time, each waited for until the route is in node21 and node22 (both running"
		echo "\`weft daemon\`); then their leases are deleted one at a time, each waited for until the route is gone."
		echo "Times are from just before the etcd call, so they include the write itself (shown separately, and"
		echo "its tail is etcd's WAL fsync on this machine's disk). The row \"from etcd's watch event\" is the"
		echo "daemons' own part: route present minus when a watch of the benchmark's own, on the same client,"
		echo "received the change. The target is applied to the end-to-end time."
		echo
	} >"$md"
	ctlplane_ joins -nodes "node21=$nsdir/$(topo_ns node21),node22=$nsdir/$(topo_ns node22)" -n "$JOINS" | tee -a "$md"
	local f=$TOPO_STATE/ctl-joins.err jp99 lp99 jep99 lep99
	jp99=$(summary_of "$f" join_p99)
	lp99=$(summary_of "$f" leave_p99)
	jep99=$(summary_of "$f" join_event_p99)
	lep99=$(summary_of "$f" leave_event_p99)
	{
		echo
		echo "### Daemon start to ready"
		echo
		echo "\`weft daemon\` on node23 (started through \`ip netns exec\`), polled on /readyz every 2 ms from another"
		echo "host. The first start has no subnet file and no lease; the next four find both."
		echo
	} >>"$md"
	ctlplane_ start -weft "$BIN/weft" -netns "$(topo_ns node23)" -addr "$NODE23_ADDR" -port 2401 \
		-subnet-file "$(node_dir node23)/subnet.env" -log "$TOPO_STATE/logs/daemon-node23-start.log" -runs 5 | tee -a "$md"
	{
		echo
		echo "### Full sync of 1,000 peers"
		echo
		echo "1,000 peer leases written first, each bound to an etcd lease of its own as every node's is"
		echo "(network 172.16.0.0/12 under a prefix of its own; PublicIPs in 10.6.0.0/20, on-link on node23),"
		echo "then \`weft daemon\` started on node23 for that prefix."
		echo
	} >>"$md"
	ctlplane_ sync -weft "$BIN/weft" -netns "$(topo_ns node23)" -netns-path "$nsdir/$(topo_ns node23)" \
		-addr "$NODE23_ADDR" -public-ip "$NODE23_ADDR" -port 2402 -peers 1000 \
		-subnet-file "$(node_dir node23)/subnet-sync.env" -log "$TOPO_STATE/logs/daemon-node23-sync.log" | tee -a "$md"
	local sf=$TOPO_STATE/ctl-sync.err
	{
		echo
		echo "### Lease acquisition, 100 nodes at once"
		echo
		echo "100 clients, each with its own etcd connection, call \`lease.Store.Acquire\` (the daemon's code) at the"
		echo "same moment, in a network of 255 subnets under a prefix of its own."
		echo
	} >>"$md"
	ctlplane_ acquire -nodes 100 | tee -a "$md"
	local sync rss
	sync=$(summary_of "$sf" sync_ms)
	rss=$(summary_of "$sf" rss_mib)
	{
		echo "| control plane: join, lease write to route p99 (all nodes) | $jp99 ms (from etcd's event: $jep99 ms) | <= 10 ms | $(verdict "\"$jp99\" != \"inf\" && $jp99 <= 10") |"
		echo "| control plane: leave, lease delete to route gone p99 (all nodes) | $lp99 ms (from etcd's event: $lep99 ms) | <= 10 ms | $(verdict "\"$lp99\" != \"inf\" && $lp99 <= 10") |"
		echo "| control plane: full sync of 1,000 peers | $sync ms | < 1000 ms | $(verdict "$sync < 1000") |"
		echo "| control plane: daemon RSS with 1,000 peers | $rss MiB | < 40 MiB | $(verdict "$rss < 40") |"
	} >"$MD/control.targets"
	cat "$MD/control.targets"
}

bench_go() {
	local out=$TOPO_STATE/go-bench.txt
	(cd "$ROOT" && go test -run '^$' -bench . -benchmem -benchtime "$BENCHTIME" -count 1 ./pkg/ipam/ ./pkg/route/) | tee "$out"
	{
		echo "## 4. Go benchmarks"
		echo
		echo "\`go test -run '^\$' -bench . -benchmem -benchtime $BENCHTIME ./pkg/ipam/ ./pkg/route/\`:"
		echo "\`BenchmarkAllocateRelease\` is one Allocate and one Release with 250 live allocations in a /24"
		echo "(\`disk\`: the flock'd store with its two fsyncs per write; \`fake\`: allocator and pool alone);"
		echo "\`BenchmarkDiff\` is the route diff with 5,000 peers."
		echo
		echo "| package | benchmark | iterations | ns/op | B/op | allocs/op |"
		echo "|---|---|---:|---:|---:|---:|"
		awk '/^pkg:/ { pkg = $2 } /^Benchmark/ {
			bop = "-"; aop = "-"
			for (i = 4; i <= NF; i++) { if ($(i) == "B/op") bop = $(i - 1); if ($(i) == "allocs/op") aop = $(i - 1) }
			printf "| %s | %s | %s | %s | %s | %s |\n", pkg, $1, $2, $3, bop, aop }' "$out"
	} >"$MD/go.md"
}
