package masq

import (
	"slices"
	"strings"
	"testing"
)

// FuzzParseRules: iptables -S output is whatever docker, kube-proxy, an
// operator and weft itself put in the chain. out is that output, one line
// per rule, and chain the chain listed. parseRules must fail exactly when a
// line has an unterminated quote, keep exactly the "-A chain" lines, and
// every rule it keeps, written back as iptables -S writes it, must read
// back as the same rule: weft compares these specs with its own to decide
// what to add and delete.
func FuzzParseRules(f *testing.F) {
	f.Add("-P POSTROUTING ACCEPT\n-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE", "POSTROUTING")
	f.Add(masquerade, "WEFT-POSTRTG")
	f.Fuzz(func(t *testing.T, out, chain string) {
		lines := strings.Split(out, "\n")
		rules, err := parseRules(lines, chain)

		var want int
		var bad string
		for _, line := range lines {
			fields, err := splitQuoted(line)
			switch {
			case err != nil:
				bad = line
			case len(fields) >= 2 && fields[0] == "-A" && fields[1] == chain:
				want++
			}
		}
		if (err != nil) != (bad != "") {
			t.Fatalf("parseRules(%q, %q) = %v; unterminated quote in %q", out, chain, err, bad)
		}
		if err != nil {
			return
		}
		if len(rules) != want {
			t.Fatalf("parseRules(%q, %q) kept %d rules, want the %d -A %s lines: %q", out, chain, len(rules), want, chain, rules)
		}

		for _, spec := range rules {
			line := render(append([]string{"-A", chain}, spec...))
			again, ok, err := parseRule(line, chain)
			if err != nil || !ok || !slices.Equal(again, spec) {
				t.Fatalf("rule %q renders as %q, which parses to %q, %v, %v", spec, line, again, ok, err)
			}
			if line2 := render(append([]string{"-A", chain}, again...)); line2 != line {
				t.Fatalf("rule %q renders as %q, then as %q", spec, line, line2)
			}
		}
	})
}
