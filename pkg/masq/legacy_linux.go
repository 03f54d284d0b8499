package masq

import (
	"os"
	"slices"
	"strings"
)

// LegacyNATInUse reports whether the caller's network namespace has an
// x_tables nat table, the kind iptables-legacy makes. Its rules cannot be
// read in-process as JumpsInPlace reads nf_tables, so the per-pod check
// leaves them to the daemon's periodic check and the plugin's peer sync
// rather than start an iptables process on every ADD.
func LegacyNATInUse() bool {
	data, err := os.ReadFile("/proc/net/ip_tables_names") // per namespace
	return err == nil && slices.Contains(strings.Fields(string(data)), "nat")
}
