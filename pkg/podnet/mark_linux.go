package podnet

import (
	"errors"
	"fmt"
	"log/slog"
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
	pods, err := markedLinks()
	if err != nil {
		return nil, err
	}
	live := make(map[ipam.Attachment]netip.Addr, len(pods))
	for _, p := range pods {
		live[p.owner] = p.addr
	}
	return live, nil
}

// markedLink is a node-side veth carrying a pod's mark.
type markedLink struct {
	link  netlink.Link
	owner ipam.Attachment
	addr  netip.Addr // unspecified while the pod's ADD allocates
}

// markedLinks lists the node's links that carry a pod's mark, from a whole
// dump: callers act on what is missing from it.
func markedLinks() ([]markedLink, error) {
	links, err := nldump.Complete("links", netlink.LinkList)
	if err != nil {
		return nil, err
	}
	var out []markedLink
	for _, l := range links {
		if a, addr, ok := parseMark(l.Attrs().Alias); ok {
			out = append(out, markedLink{link: l, owner: a, addr: addr})
		}
	}
	return out, nil
}

// Reattach puts back on bridge the pods' veths that lost their bridge (it
// was deleted and made again; a veth whose bridge goes stays, with no
// master): without it those pods stay cut off. hairpin is set as ADD sets
// it. It returns how many it put back.
func Reattach(bridge netlink.Link, hairpin bool) (int, error) {
	pods, err := markedLinks()
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, p := range pods {
		// A pair with no address yet belongs to an ADD under way, which
		// puts it on the bridge itself.
		l := p.link
		if p.addr.IsUnspecified() || l.Attrs().MasterIndex != 0 {
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

// ReattachLogged is Reattach for callers that go on whatever it did (the
// daemon's resync, the plugin's first use): it logs the pods put back and
// the ones that could not be.
func ReattachLogged(bridge netlink.Link, hairpin bool, log *slog.Logger) {
	put, err := Reattach(bridge, hairpin)
	if put > 0 {
		log.Warn("put pods' veths back on the bridge, which had been deleted", "bridge", bridge.Attrs().Name, "pods", put)
	}
	if err != nil {
		log.Warn("some pods' veths could not be put back on the bridge; retried at the next setup", "bridge", bridge.Attrs().Name, "error", err)
	}
}
