package podnet

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/weft-cni/weft/pkg/ipam"
	"github.com/weft-cni/weft/pkg/nldump"
)

// The node end of each pod's veth carries a mark in its alias naming the
// attachment and its address, e.g. "weft pod 172.7.21.2 c0ffee eth0": the
// kernel's own record of which addresses live pods hold, read back when the
// IPAM store has been wiped while they run (ipam.Pool.AdoptLive).
const markPrefix = "weft pod "

// maxAlias is the longest alias the kernel keeps (IFALIASZ - 1).
const maxAlias = 255

// mark renders the alias of a pod's node-side veth; "" when it would not
// fit (a container ID longer than runtimes use).
func mark(a ipam.Attachment, addr netip.Addr) string {
	s := fmt.Sprintf("%s%s %s %s", markPrefix, addr, a.ContainerID, a.IfName)
	if len(s) > maxAlias {
		return ""
	}
	return s
}

// parseMark reads a mark; ok is false for any other alias.
func parseMark(s string) (a ipam.Attachment, addr netip.Addr, ok bool) {
	rest, found := strings.CutPrefix(s, markPrefix)
	if !found {
		return a, addr, false
	}
	fields := strings.Split(rest, " ")
	if len(fields) != 3 {
		return a, addr, false
	}
	addr, err := netip.ParseAddr(fields[0])
	if err != nil || !addr.Is4() {
		return ipam.Attachment{}, netip.Addr{}, false
	}
	a = ipam.Attachment{ContainerID: fields[1], IfName: fields[2]}
	if ipam.ValidateName("container ID", a.ContainerID) != nil || ipam.ValidateName("interface name", a.IfName) != nil {
		return ipam.Attachment{}, netip.Addr{}, false
	}
	return a, addr, true
}

// Live returns the attachments whose veths exist on the node now, with the
// addresses their marks record: on the bridge, or off it after the bridge
// was deleted (until Reattach puts them back). Any of them may be a running
// pod, so none of their addresses may be handed out.
func Live() (map[ipam.Attachment]netip.Addr, error) {
	links, err := nldump.Complete("links", netlink.LinkList) // acted on by what is missing
	if err != nil {
		return nil, err
	}
	live := map[ipam.Attachment]netip.Addr{}
	for _, l := range links {
		if a, addr, ok := parseMark(l.Attrs().Alias); ok {
			live[a] = addr
		}
	}
	return live, nil
}

// Reattach puts back on bridge the pods' veths that lost their bridge (it
// was deleted and made again; a veth whose bridge goes stays, with no
// master): without it those pods stay cut off. hairpin is set as ADD sets
// it. It returns how many it put back.
func Reattach(bridge netlink.Link, hairpin bool) (int, error) {
	links, err := nldump.Complete("links", netlink.LinkList)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, l := range links {
		// A pair with no address yet belongs to an ADD under way, which
		// puts it on the bridge itself.
		if _, addr, ok := parseMark(l.Attrs().Alias); !ok || addr.IsUnspecified() || l.Attrs().MasterIndex != 0 {
			continue
		}
		err := netlink.LinkSetMaster(l, bridge)
		if err == nil && hairpin {
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
