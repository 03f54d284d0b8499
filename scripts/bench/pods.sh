# shellcheck shell=bash
# Sections "pods" and "addpath" of scripts/bench/run.sh: pod network setup
# through cnitool for weft and the reference plugins, and where the time of
# an ADD and a DEL goes. Sourced by run.sh.

# ref_conflist NODE SUBNET IPMASQ: bridge + host-local with the features
# weft has: the bridge is the gateway and the default route, hairpin on, one
# range equal to the node's subnet; masquerade per pod by the bridge plugin
# (IPMASQ true) or not at all (false: flannel's chain, where flanneld
# masquerades per node, as weft does).
ref_conflist() {
	local dir
	dir=$(node_dir "$1")
	mkdir -p "$dir/net.d"
	cat >"$dir/net.d/10-ref.conflist" <<EOC
{
  "cniVersion": "1.1.0",
  "name": "ref",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "isDefaultGateway": true,
      "hairpinMode": true,
      "ipMasq": $3,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "$2"}]], "dataDir": "$dir/ipam"}
    }
  ]
}
EOC
}

# flannel_conflist NODE SUBNET: flannel's CNI plugin as kube-flannel's
# conflist runs it (delegating to bridge with isDefaultGateway and hairpin on,
# as on the other sides), with the subnet file flanneld would write for a
# lease of SUBNET (FLANNEL_IPMASQ=true: flanneld masquerades per node, so
# the plugin gives bridge ipMasq false).
flannel_conflist() {
	local dir sub=$2
	dir=$(node_dir "$1")
	mkdir -p "$dir/net.d"
	cat >"$dir/subnet.env" <<EOS
FLANNEL_NETWORK=172.7.0.0/16
FLANNEL_SUBNET=${sub%.0/24}.1/24
FLANNEL_MTU=1500
FLANNEL_IPMASQ=true
EOS
	cat >"$dir/net.d/10-ref.conflist" <<EOC
{
  "cniVersion": "0.4.0",
  "name": "ref",
  "plugins": [
    {
      "type": "flannel",
      "subnetFile": "$dir/subnet.env",
      "dataDir": "$dir/flannel",
      "delegate": {"bridge": "cni0", "isDefaultGateway": true, "hairpinMode": true},
      "ipam": {"dataDir": "$dir/ipam"}
    }
  ]
}
EOC
}

cnitool_() {
	local node=$1 path=$BIN
	shift
	[[ $node == ref* ]] && path=$REFBIN
	in_ns "$node" env CNI_PATH="$path" NETCONFPATH="$(node_dir "$node")/net.d" "$BIN/cnitool" "$@"
}

subnet_of() { sed -n 's/^FLANNEL_SUBNET=//p' "$(node_dir "$1")/subnet.env" 2>/dev/null; }

# network_of SUBNET_FILE_VALUE: 172.7.21.1/24 -> 172.7.21.0/24
network_of() {
	local ip=${1%/*} len=${1#*/}
	[[ $len == 24 ]] || {
		echo "bench: expected a /24 lease, got $1" >&2
		return 1
	}
	echo "${ip%.*}.0/24"
}

# mk_pods NAME COUNT: empty namespaces <prefix>-NAME000… and <prefix>-NAMEwarm.
mk_pods() {
	local name=$1 count=$2 i
	{
		echo "netns add $(topo_ns "${name}warm")"
		for ((i = 0; i < count; i++)); do
			printf 'netns add %s%03d\n' "$(topo_ns "$name")" "$i"
		done
	} | ip -batch -
}

# prepare_pods: conflists of every side, N empty pod namespaces each, and
# the same warm-up for all: one ADD and DEL. The weft node's first ADD
# takes its lease and writes the subnet file; the reference range is that
# subnet. Idempotent.
prepare_pods() {
	[[ -e $TOPO_STATE/pods.ready ]] && return 0
	weft_conflist node21
	mk_pods w "$N"
	mk_pods r "$N"
	mk_pods f "$N"
	mk_pods l "$N"
	cnitool_ node21 add weft "/var/run/netns/$(topo_ns wwarm)" >/dev/null
	cnitool_ node21 del weft "/var/run/netns/$(topo_ns wwarm)"
	POD_SUBNET=$(network_of "$(subnet_of node21)")
	ref_conflist ref "$POD_SUBNET" true
	ref_conflist refnm "$POD_SUBNET" false
	cnitool_ ref add ref "/var/run/netns/$(topo_ns rwarm)" >/dev/null
	cnitool_ ref del ref "/var/run/netns/$(topo_ns rwarm)"
	cnitool_ refnm add ref "/var/run/netns/$(topo_ns fwarm)" >/dev/null
	cnitool_ refnm del ref "/var/run/netns/$(topo_ns fwarm)"
	flannel_conflist refflnl "$POD_SUBNET"
	cnitool_ refflnl add ref "/var/run/netns/$(topo_ns lwarm)" >/dev/null
	cnitool_ refflnl del ref "/var/run/netns/$(topo_ns lwarm)"
	echo "weft node21 holds $POD_SUBNET; reference range $POD_SUBNET"
	echo "$POD_SUBNET" >"$TOPO_STATE/pods.ready"
}

# side_args: podsetup/addpath -side flags for weft and the references.
side_args() {
	local nsdir=/var/run/netns
	echo -side "weft=$nsdir/$(topo_ns node21),$BIN,$(node_dir node21)/net.d,weft,$nsdir/$(topo_ns w)" \
		-side "ref=$nsdir/$(topo_ns ref),$REFBIN,$(node_dir ref)/net.d,ref,$nsdir/$(topo_ns r)" \
		-side "ref-nomasq=$nsdir/$(topo_ns refnm),$REFBIN,$(node_dir refnm)/net.d,ref,$nsdir/$(topo_ns f)" \
		-side "flannel=$nsdir/$(topo_ns refflnl),$REFBIN,$(node_dir refflnl)/net.d,ref,$nsdir/$(topo_ns l)"
}

bench_pods() {
	prepare_pods
	local sub
	sub=$(cat "$TOPO_STATE/pods.ready")
	# shellcheck disable=SC2046 # side_args are flags
	timeout 600 "$BIN/podsetup" -cnitool "$BIN/cnitool" -n "$N" -par "$PAR" -rounds "$PAR_ROUNDS" \
		-json "$TOPO_STATE/pods.json" -targets "$MD/pods.targets" -untargeted flannel $(side_args) >"$MD/pods.table"
	cat "$MD/pods.table"
	{
		echo "## 1. Pod network setup"
		echo
		echo "$N pods, each its own netns, driven by \`cnitool\` (one process per call) in a node namespace;"
		echo "serial: $N ADDs one at a time then $N DELs one at a time, the sides interleaved call by call;"
		echo "parallel: $N ADDs then $N DELs with $PAR at a time, one side after the other; $PAR_ROUNDS rounds, the"
		echo "first side rotating; pods/s is the median of the rounds (each round's in brackets), latencies"
		echo "are over all rounds' calls."
		echo "Wall time of each cnitool process, measured by the driver (\`scripts/bench/podsetup\`)."
		echo "Every side did one warm-up ADD and DEL first, and each has a node namespace of its own."
		echo
		echo "- **weft**: subnet file present and the bridge set up by that warm-up (no daemon running),"
		echo "  \`peerSyncInterval\` at its default, masquerade on (weft's rules are per node)."
		echo "- **ref**: \`bridge\` (isGateway, isDefaultGateway, hairpinMode true, ipMasq true) + \`host-local\`"
		echo "  with range $sub: the same features, masquerade done by the bridge plugin per pod."
		echo "- **ref-nomasq**: the same with ipMasq false, as flannel's CNI chain runs it when flanneld"
		echo "  masquerades per node (\`--ip-masq\`, FLANNEL_IPMASQ=true), which is what an operator moving"
		echo "  from flannel runs today, minus flannel's own plugin."
		echo "- **flannel**: that chain whole, as kube-flannel runs it: flannel's CNI plugin"
		echo "  (containernetworking/plugins $(modver "$REFBIN/flannel" github.com/containernetworking/plugins), the code flannel-io/cni-plugin carries on)"
		echo "  reads the subnet file flanneld would write (FLANNEL_IPMASQ=true) and delegates to the same"
		echo "  bridge + host-local (isDefaultGateway, hairpinMode true, ipMasq false). Three processes per call."
		echo
		echo "IPAM data of all sides on the same disk. Targets (issue 5: against the reference bridge +"
		echo "host-local chain) are applied to serial p50 (ADD, DEL) and to pods/s of both parallel phases,"
		echo "against ref and ref-nomasq; flannel's ratios are shown without a target."
		echo
		cat "$MD/pods.table"
	} >"$MD/pods.md"
}

bench_addpath() {
	prepare_pods
	local runs=$((N < 20 ? N : 20))
	{
		echo "### Where the time of an ADD and a DEL goes"
		echo
		echo "Per side, $runs ADDs then $runs DELs one at a time, then the same $((PAR < runs ? PAR : runs)) at a time, recorded with"
		echo "\`perf record -a\` on kernel tracepoints (process fork/exec/exit; fsync, fdatasync, flock and the"
		echo "socket calls of netlink), so the split costs almost nothing (\`scripts/bench/addpath\`). A child"
		echo "process counts from its fork to its exit; lock waits from a process's first flock attempt on a"
		echo "file to the one that succeeds; \"netlink syscalls\" is time inside sendto/recvfrom/sendmsg/recvmsg"
		echo "of the plugin process, where the kernel carries out rtnetlink requests; the rest is CPU in the"
		echo "plugin (Go runtime start, package init, Go code) and scheduling. Means per call."
		echo
	} >"$MD/addpath.md"
	if ! command -v perf >/dev/null; then
		echo "perf is not installed (Debian: linux-perf): the breakdown was skipped." | tee -a "$MD/addpath.md"
		return 0
	fi
	# shellcheck disable=SC2046 # side_args are flags
	timeout 300 "$BIN/addpath" -cnitool "$BIN/cnitool" -runs "$runs" -par "$PAR" -dir "$TOPO_STATE" \
		-plugins "$BIN/weft,$REFBIN/bridge,$REFBIN/host-local,$REFBIN/flannel,$BIN/weft-ipam,$BIN/empty-go,$BIN/etcd-client-only" \
		-empty "$BIN/empty-go" $(side_args) >"$TOPO_STATE/addpath.out"
	tee -a "$MD/addpath.md" <"$TOPO_STATE/addpath.out"
	rm -f "$TOPO_STATE/perf.data"
	cat >>"$MD/addpath.md" <<'EOT'
Reading the split: "cnitool" is the runtime's side, the same for every plugin. The netlink time is
kernel work any bridge plugin pays (veth pair, move into the pod, addresses, routes; on DEL the veth
deletion, which waits for an RCU barrier). Plugins differ in the child processes they wait for
(iptables, nft, an IPAM plugin, the bridge plugin flannel delegates to), in lock waits, and in
their own start: compare the VERSION call and package init of each binary above. `empty-go` answers VERSION and does nothing else (the least
a Go program costs to start); `etcd-client-only` is the same program linking the etcd v3 client,
as weft must since its binary is also the node agent (weft's binary also carries Prometheus). An
iptables row under weft with well under one call per ADD is the full rule check of a first use or
of a periodic peer sync (`peerSyncInterval`), not the per-pod path.
weft-ipam makes its state durable with two fsyncs (file and directory) per ADD and DEL; host-local
writes without fsync.

Profile note (one `perf record -g` of 100 serial weft ADDs and DELs called directly in a node
namespace, 2026-11-24, not redone by each run): runtime start and package init took about 27% of
all samples against about 19% for the ADD and DEL work itself, the kernel's veth work included.
The largest inits are protobuf descriptors of the etcd API and what it imports (protodesc,
etcdserverpb, descriptorpb, grpc-gateway and genproto annotations), Prometheus (its default Go
and process collectors, procfs) and knftables (pulled in by the CNI plugins' `pkg/ip`). The node
lock wait under 20 parallel ADDs is queueing for two CPUs: its holder works for well under a
millisecond, and waiters wake the moment it lets go (a blocking flock, no polling).
EOT
}
