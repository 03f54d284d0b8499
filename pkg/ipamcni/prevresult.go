package ipamcni

import (
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// PrevResult decodes the netconf's prevResult in the current result format;
// nil when there is none.
func PrevResult(conf *types.NetConf) (*current.Result, error) {
	if err := version.ParsePrevResult(conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "decoding prevResult", err.Error())
	}
	if conf.PrevResult == nil {
		return nil, nil
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "converting prevResult", err.Error())
	}
	return prev, nil
}

// FirstIPv4 is the first IPv4 address of a result, or the zero Addr.
func FirstIPv4(res *current.Result) netip.Addr {
	if all := IPv4s(res); len(all) > 0 {
		return all[0]
	}
	return netip.Addr{}
}

// IPv4s are the IPv4 addresses of a result, in order.
func IPv4s(res *current.Result) []netip.Addr {
	if res == nil {
		return nil
	}
	var out []netip.Addr
	for _, ip := range res.IPs {
		if addr, ok := netip.AddrFromSlice(ip.Address.IP.To4()); ok {
			out = append(out, addr)
		}
	}
	return out
}
