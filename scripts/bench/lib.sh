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
	echo "| cnitool | $(modver "$BIN/cnitool" github.com/containernetworking/cni) |"
	echo "| etcd (weft-devetcd, in process) | $(modver "$BIN/weft-devetcd" go.etcd.io/etcd/server/v3) |"
	echo "| iptables | $(iptables --version 2>/dev/null) |"
	echo "| iperf3 | $(iperf3 --version 2>/dev/null | head -1) |"
	echo
}

# targets_notes explains the two references and what bounds the misses.
targets_notes() {
	cat <<'NOTES'
Two references run beside weft. `ref` is bridge + host-local with `ipMasq: true`: like weft it
masquerades pod traffic leaving the cluster network (bridge does it with rules per pod, weft with
one pod-CIDR-exempt rule per node). `ref-nomasq` is the same chain without masquerading, a lighter
job than weft's. Against `ref` every pod-setup target is met. Against `ref-nomasq` they are not,
and with one process per call they cannot be: each call pays cnitool itself (the "cnitool itself"
rows below, the same for both sides) and the start of one Go binary (the VERSION-call floor
below). Halving ref-nomasq's time would leave weft less than its binary's start-up for its own
process and the kernel's veth work; that binary also carries the node agent, the etcd client
(gRPC, protobuf) and Prometheus, because DESIGN.md makes `weft daemon` the same binary, and their
package init is most of the gap (see the profile note in section 1). DEL is dominated on every
side by the kernel's veth deletion (the netlink rows). The data-plane ratios move by about 0.05
between runs on this shared machine; what bounds them is in section 2.

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
