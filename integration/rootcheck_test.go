//go:build integration

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestMain runs the integration tests, then checks that the machine's own
// network namespace is as it was before them: the same links, addresses,
// routes, policy rules, iptables and nftables rules and forwarding
// settings. Every test works in namespaces it creates; this is the check
// that none of them reached the root namespace, whichever test it was.
func TestMain(m *testing.M) {
	before := rootState()
	code := m.Run()
	if after := rootState(); after != before {
		fmt.Fprintf(os.Stderr, "FAIL: the integration tests changed the root network namespace\n--- before\n%s--- after\n%s", before, after)
		code = 1
	}
	os.Exit(code)
}

// Lifetimes and timers change by themselves; they are not state.
var volatile = regexp.MustCompile(`(valid_lft|preferred_lft|expires) \S+|\[\d+:\d+\]|counter packets \d+ bytes \d+`)

// rootState describes the network state of the test process's namespace
// (read only). A command that is not installed reads as such.
func rootState() string {
	var b strings.Builder
	for _, cmd := range [][]string{
		{"ip", "-o", "link", "show"},
		{"ip", "-o", "addr", "show"},
		{"ip", "-4", "route", "show", "table", "all"},
		{"ip", "-6", "route", "show", "table", "all"},
		{"ip", "-4", "rule", "show"},
		{"ip", "-6", "rule", "show"},
		{"iptables-save"},
		{"ip6tables-save"},
		{"nft", "list", "ruleset"},
		{"sysctl", "net.ipv4.ip_forward", "net.ipv4.conf.all.forwarding", "net.ipv6.conf.all.forwarding", "net.ipv4.conf.all.rp_filter"},
	} {
		out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput()
		fmt.Fprintf(&b, "$ %s (err: %v)\n", strings.Join(cmd, " "), err)
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "#") { // iptables-save's timestamps
				continue
			}
			if line = strings.TrimSpace(volatile.ReplaceAllString(line, "")); line != "" {
				b.WriteString(line + "\n")
			}
		}
	}
	return b.String()
}
