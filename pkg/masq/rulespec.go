package masq

import (
	"fmt"
	"slices"
	"strings"
)

// parseRules turns iptables -S output for chain into rule specs, in order,
// dropping the -P/-N line that names the chain.
func parseRules(lines []string, chain string) ([][]string, error) {
	rules := make([][]string, 0, len(lines))
	for _, line := range lines {
		spec, ok, err := parseRule(line, chain)
		if err != nil {
			return nil, err
		}
		if ok {
			rules = append(rules, spec)
		}
	}
	return rules, nil
}

// parseRule returns the rule spec of one "-A chain …" line of iptables -S
// output; ok is false for any other line.
func parseRule(line, chain string) (spec []string, ok bool, err error) {
	fields, err := splitQuoted(line)
	if err != nil {
		return nil, false, fmt.Errorf("parsing iptables rule %q: %w", line, err)
	}
	if len(fields) < 2 || fields[0] != "-A" || fields[1] != chain {
		return nil, false, nil
	}
	return fields[2:], true, nil
}

// splitQuoted splits a line as iptables -S quotes it: words separated by
// spaces, a word holding spaces or quotes wrapped in double quotes, with \"
// and \\ escaped inside.
func splitQuoted(line string) ([]string, error) {
	var (
		fields  []string
		cur     strings.Builder
		inWord  bool
		inQuote bool
	)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case inQuote && c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case c == '"':
			inQuote, inWord = !inQuote, true
		case c == ' ' && !inQuote:
			if inWord {
				fields = append(fields, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inQuote {
		return nil, fmt.Errorf("unterminated quote")
	}
	if inWord {
		fields = append(fields, cur.String())
	}
	return fields, nil
}

// render writes a rule spec as iptables -S would, for messages.
func render(spec []string) string {
	words := make([]string, len(spec))
	for i, w := range spec {
		if w == "" || strings.ContainsAny(w, " \t\"'\\") {
			w = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(w) + `"`
		}
		words[i] = w
	}
	return strings.Join(words, " ")
}

// jumpsTo reports whether spec sends packets to chain.
func jumpsTo(spec []string, chain string) bool {
	for i := 0; i+1 < len(spec); i++ {
		if (spec[i] == "-j" || spec[i] == "-g") && spec[i+1] == chain {
			return true
		}
	}
	return false
}

// equalRules reports whether two lists of rule specs match in order.
func equalRules(a, b [][]string) bool {
	return slices.EqualFunc(a, b, slices.Equal)
}
