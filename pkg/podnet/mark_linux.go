package podnet

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/weft-cni/weft/pkg/ipam"
	"github.com/weft-cni/weft/pkg/nldump"
)

// The node end of each pod's veth carries a mark in its alias naming the
// attachment, its address, its bridge and its hairpin setting, e.g.
// "weft pod 172.7.21.2 c0ffee eth0 weft0 hairpin": the kernel's own record
// of which addresses live pods hold, read back when the IPAM store has been
// wiped while they run (ipam.Pool.AdoptLive), and of how to put a veth back
// on its bridge when the bridge was deleted and made again (Reattach).
// Marks written before the bridge and hairpin were recorded have only the
// first three fields; they count for every bridge, with hairpin on (the
// default then).
const markPrefix = "weft pod "

// Hairpin fields of a mark.
const (
	hairpinOn  = "hairpin"
	hairpinOff = "nohairpin"
)

// maxAlias is the longest alias the kernel keeps (IFALIASZ - 1).
const maxAlias = 255

// podMark is what a mark records.
type podMark struct {
	owner   ipam.Attachment
	addr    netip.Addr // unspecified while the pod's ADD allocates
	bridge  string     // "" in a mark of the three-field form: any bridge
	hairpin bool
}

// on reports whether the mark's pod belongs on bridge.
func (m podMark) on(bridge string) bool { return m.bridge == "" || m.bridge == bridge }

// render returns the alias for m; "" when it would not fit (a container ID
// longer than runtimes use).
func (m podMark) render() string {
	if s := m.format(); len(s) <= maxAlias {
		return s
	}
	return ""
}

// format is the alias for m, whatever its length.
func (m podMark) format() string {
	hairpin := hairpinOff
	if m.hairpin {
		hairpin = hairpinOn
	}
	return fmt.Sprintf("%s%s %s %s %s %s", markPrefix, m.addr, m.owner.ContainerID, m.owner.IfName, m.bridge, hairpin)
}

// Markable fails when a pod's mark could not hold owner on bridge: the
// alias the kernel keeps is 255 bytes, and a pod without its mark would be
// invisible to GC and to a full subnet's reclaim, which would free its
// address while it runs. Runtimes' container IDs (64 characters) fit with
// room to spare.
func Markable(owner ipam.Attachment, bridge string) error {
	worst := podMark{owner: owner, addr: netip.AddrFrom4([4]byte{255, 255, 255, 255}), bridge: bridge}
	if worst.render() == "" {
		room := maxAlias - len(worst.format()) + len(owner.ContainerID)
		return fmt.Errorf("container ID is %d bytes long; weft records each pod in its veth's alias, which holds one of up to %d bytes with interface %q on bridge %q",
			len(owner.ContainerID), room, owner.IfName, bridge)
	}
	return nil
}

// parseMark reads a mark; ok is false for any other alias.
func parseMark(s string) (m podMark, ok bool) {
	rest, found := strings.CutPrefix(s, markPrefix)
	if !found {
		return m, false
	}
	fields := strings.Split(rest, " ")
	switch len(fields) {
	case 3:
		m.hairpin = true
	case 5:
		if ipam.ValidateName("bridge", fields[3]) != nil || len(fields[3]) > 15 {
			return podMark{}, false
		}
		m.bridge = fields[3]
		switch fields[4] {
		case hairpinOn:
			m.hairpin = true
		case hairpinOff:
		default:
			return podMark{}, false
		}
	default:
		return podMark{}, false
	}
	addr, err := netip.ParseAddr(fields[0])
	if err != nil || !addr.Is4() {
		return podMark{}, false
	}
	m.addr = addr
	m.owner = ipam.Attachment{ContainerID: fields[1], IfName: fields[2]}
	if ipam.ValidateName("container ID", m.owner.ContainerID) != nil || ipam.ValidateName("interface name", m.owner.IfName) != nil {
		return podMark{}, false
	}
	return m, true
}

// Live returns the attachments whose veths exist on the node now, with the
// addresses their marks record: on the bridge, or off it after the bridge
// was deleted (until Reattach puts them back). Any of them may be a running
// pod, so none of their addresses may be freed or handed out. The marks of
// every bridge count, not only bridge's: a pod still on a bridge the
// conflist no longer names (renamed while pods run) holds its address all
// the same, and another weft network's pods are never in this network's
// store, so counting them costs nothing.
//
// A port of bridge with no mark of it (a pod added by a weft that did not
// mark veths yet) is a pod whose attachment cannot be named: Live then
// returns the attachments it found with an error wrapping
// ipam.ErrUnattributed, so that a full subnet frees no address while that
// pod may hold any of them.
func Live(bridge string) (map[ipam.Attachment]netip.Addr, error) {
	links, err := nldump.Complete("links", netlink.LinkList)
	if err != nil {
		return nil, err
	}
	brIndex := 0
	for _, l := range links {
		if l.Attrs().Name == bridge && l.Type() == "bridge" {
			brIndex = l.Attrs().Index
		}
	}
	live := make(map[ipam.Attachment]netip.Addr)
	var unmarked []string
	for _, l := range links {
		m, ok := parseMark(l.Attrs().Alias)
		switch {
		case ok:
			live[m.owner] = m.addr
		case brIndex != 0 && l.Attrs().MasterIndex == brIndex:
			unmarked = append(unmarked, l.Attrs().Name)
		}
	}
	if len(unmarked) > 0 {
		return live, fmt.Errorf("%w: %s, port(s) of %s, carry no weft pod mark", ipam.ErrUnattributed, strings.Join(unmarked, ", "), bridge)
	}
	return live, nil
}

// markedLink is a node-side veth carrying a pod's mark.
type markedLink struct {
	podMark
	link netlink.Link
}

// markedLinks lists the node's links that carry the mark of a pod on
// bridge, from a whole dump: callers act on what is missing from it.
func markedLinks(bridge string) ([]markedLink, error) {
	links, err := nldump.Complete("links", netlink.LinkList)
	if err != nil {
		return nil, err
	}
	var out []markedLink
	for _, l := range links {
		if m, ok := parseMark(l.Attrs().Alias); ok && m.on(bridge) {
			out = append(out, markedLink{podMark: m, link: l})
		}
	}
	return out, nil
}

// Reattach puts back on bridge the veths of its pods that lost their bridge
// (it was deleted and made again; a veth whose bridge goes stays, with no
// master): without it those pods stay cut off. Each gets the hairpin
// setting its ADD gave it, which its mark records. It returns how many it
// put back. A mark of the three-field form names no bridge: its veth goes
// back only when its address lies in a subnet of the bridge's addresses,
// so that another weft network's pod waits for its own bridge.
func Reattach(bridge netlink.Link) (int, error) {
	pods, err := markedLinks(bridge.Attrs().Name)
	if err != nil {
		return 0, err
	}
	var subnets []netip.Prefix // read only for a three-field mark
	n := 0
	var errs []error
	for _, p := range pods {
		// A pair with no address yet belongs to an ADD under way, which
		// puts it on the bridge itself.
		l := p.link
		if p.addr.IsUnspecified() || l.Attrs().MasterIndex != 0 {
			continue
		}
		if p.bridge == "" {
			if subnets == nil {
				if subnets, err = bridgeSubnets(bridge); err != nil {
					return n, errors.Join(append(errs, err)...)
				}
			}
			if !slices.ContainsFunc(subnets, func(s netip.Prefix) bool { return s.Contains(p.addr) }) {
				continue
			}
		}
		err := netlink.LinkSetMaster(l, bridge)
		if err == nil && p.hairpin {
			err = netlink.LinkSetHairpin(l, true)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("putting %s back on %s: %w", l.Attrs().Name, bridge.Attrs().Name, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// bridgeSubnets returns the IPv4 subnets of bridge's addresses (not nil).
func bridgeSubnets(bridge netlink.Link) ([]netip.Prefix, error) {
	addrs, err := nldump.Addrs(bridge, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("reading the addresses of %s: %w", bridge.Attrs().Name, err)
	}
	subnets := make([]netip.Prefix, 0, len(addrs))
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		ones, bits := a.Mask.Size()
		if ok && bits == 32 {
			subnets = append(subnets, netip.PrefixFrom(ip, ones).Masked())
		}
	}
	return subnets, nil
}

// ReattachLogged is Reattach for callers that go on whatever it did (the
// daemon's resync, the plugin's first use): it logs the pods put back and
// the ones that could not be.
func ReattachLogged(bridge netlink.Link, log *slog.Logger) {
	put, err := Reattach(bridge)
	if put > 0 {
		log.Warn("put pods' veths back on the bridge, which had been deleted", "bridge", bridge.Attrs().Name, "pods", put)
	}
	if err != nil {
		log.Warn("some pods' veths could not be put back on the bridge; retried at the next setup", "bridge", bridge.Attrs().Name, "error", err)
	}
}
