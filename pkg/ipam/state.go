package ipam

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// The state file is line-oriented text, one allocation a line, sorted by
// address:
//
//	weft-ipam-state 1
//	last 172.7.21.14
//	ip 172.7.21.2 0123abcd eth0
//	ip 172.7.21.14 4567cdef eth0
//	end 2
//
// The header carries a format version; "last" (optional) is the address
// handed out most recently; the "end" line closes the file and repeats the
// number of entries, so a truncated file is detected rather than read as
// fewer allocations. Names never contain spaces or control characters
// (ValidateName), so no quoting is needed. Text rather than JSON because it
// parses in tens of microseconds for hundreds of entries and an operator can
// read it; no checksum, so an operator can also repair it by hand. Parsing
// is strict: anything unexpected is ErrCorrupt.
const (
	stateHeader = "weft-ipam-state 1"
	keyLast     = "last "
	keyEntry    = "ip "
	keyEnd      = "end "
)

// entry is one allocation, as the file orders them.
type entry struct {
	ip netip.Addr
	a  Attachment
}

func compareEntries(x, y entry) int {
	if c := x.ip.Compare(y.ip); c != 0 {
		return c
	}
	return compareAttachments(x.a, y.a)
}

func compareAttachments(x, y Attachment) int {
	return cmp.Or(cmp.Compare(x.ContainerID, y.ContainerID), cmp.Compare(x.IfName, y.IfName))
}

// encodeState renders st, refusing anything parseState would reject, so a
// bad State is never written.
func encodeState(st *State) ([]byte, error) {
	rows := make([]entry, 0, len(st.Entries))
	for a, ip := range st.Entries {
		if err := a.validate(); err != nil {
			return nil, err
		}
		if err := checkAddr(ip); err != nil {
			return nil, fmt.Errorf("address of %s/%s: %w", a.ContainerID, a.IfName, err)
		}
		rows = append(rows, entry{ip, a})
	}
	slices.SortFunc(rows, compareEntries)
	for i := 1; i < len(rows); i++ {
		if rows[i].ip == rows[i-1].ip {
			return nil, fmt.Errorf("address %s held by both %s/%s and %s/%s", rows[i].ip,
				rows[i-1].a.ContainerID, rows[i-1].a.IfName, rows[i].a.ContainerID, rows[i].a.IfName)
		}
	}
	buf := make([]byte, 0, 64+len(rows)*(len(keyEntry)+40+64+16))
	buf = append(buf, stateHeader+"\n"...)
	if st.Last.IsValid() {
		if err := checkAddr(st.Last); err != nil {
			return nil, fmt.Errorf("last address: %w", err)
		}
		buf = append(buf, keyLast...)
		buf = st.Last.AppendTo(buf)
		buf = append(buf, '\n')
	}
	for _, r := range rows {
		buf = append(buf, keyEntry...)
		buf = r.ip.AppendTo(buf)
		buf = append(buf, ' ')
		buf = append(buf, r.a.ContainerID...)
		buf = append(buf, ' ')
		buf = append(buf, r.a.IfName...)
		buf = append(buf, '\n')
	}
	buf = append(buf, keyEnd...)
	buf = strconv.AppendInt(buf, int64(len(rows)), 10)
	return append(buf, '\n'), nil
}

// checkAddr accepts the addresses that round-trip through the file.
func checkAddr(ip netip.Addr) error {
	switch {
	case !ip.IsValid():
		return fmt.Errorf("invalid address")
	case ip.Zone() != "":
		return fmt.Errorf("address %s has a zone", ip)
	case ip.Is4In6():
		return fmt.Errorf("address %s is IPv4-mapped IPv6", ip)
	}
	return nil
}

func parseAddr(s string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	return ip, checkAddr(ip)
}

// corrupt reports a problem on line n (1-based) of the state file.
func corrupt(n int, format string, args ...any) error {
	return fmt.Errorf("%w: line %d: %s", ErrCorrupt, n, fmt.Sprintf(format, args...))
}

// parseState parses a state file; every error wraps ErrCorrupt.
func parseState(data []byte) (*State, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: empty file", ErrCorrupt)
	}
	if data[len(data)-1] != '\n' {
		return nil, fmt.Errorf("%w: no newline at end of file (truncated?)", ErrCorrupt)
	}
	lines := strings.Split(string(data[:len(data)-1]), "\n")
	if lines[0] != stateHeader {
		return nil, corrupt(1, "header %.40q, want %q", lines[0], stateHeader)
	}
	if len(lines) < 2 {
		return nil, corrupt(1, "no end line (truncated?)")
	}
	st := &State{Entries: make(map[Attachment]netip.Addr, len(lines)-2)}
	body, first := lines[1:len(lines)-1], 2
	if len(body) > 0 && strings.HasPrefix(body[0], keyLast) {
		ip, err := parseAddr(body[0][len(keyLast):])
		if err != nil {
			return nil, corrupt(first, "last address: %v", err)
		}
		st.Last = ip
		body, first = body[1:], first+1
	}
	taken := make(map[netip.Addr]struct{}, len(body))
	for i, line := range body {
		if err := parseEntry(st, taken, line); err != nil {
			return nil, corrupt(first+i, "%v", err)
		}
	}
	n := len(lines)
	count, ok := strings.CutPrefix(lines[n-1], keyEnd)
	if !ok {
		return nil, corrupt(n, "%.40q is not an end line (truncated?)", lines[n-1])
	}
	if c, err := strconv.Atoi(count); err != nil || c != len(st.Entries) {
		return nil, corrupt(n, "end line says %.20q entries, file has %d", count, len(st.Entries))
	}
	return st, nil
}

// parseEntry parses an "ip" line into st; taken holds the addresses seen.
func parseEntry(st *State, taken map[netip.Addr]struct{}, line string) error {
	rest, ok := strings.CutPrefix(line, keyEntry)
	if !ok {
		return fmt.Errorf("%.40q is not an ip line", line)
	}
	addr, rest, ok1 := strings.Cut(rest, " ")
	id, ifName, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 {
		return fmt.Errorf("ip line has fewer than 3 fields")
	}
	ip, err := parseAddr(addr)
	if err != nil {
		return err
	}
	a := Attachment{ContainerID: id, IfName: ifName}
	if err := a.validate(); err != nil { // also rejects a fourth field
		return err
	}
	if _, dup := st.Entries[a]; dup {
		return fmt.Errorf("attachment %s/%s listed twice", id, ifName)
	}
	if _, dup := taken[ip]; dup {
		return fmt.Errorf("address %s listed twice", ip)
	}
	taken[ip] = struct{}{}
	st.Entries[a] = ip
	return nil
}
