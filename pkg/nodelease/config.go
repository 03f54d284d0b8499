// Package nodelease finds this node's subnet: from the subnet file on the
// fast path, from etcd (reusing or acquiring the node's lease) when the file
// is missing or a sync is due. It is shared by the weft plugin, weft-ipam and
// the daemon.
package nodelease

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"

	"github.com/weft-cni/weft/pkg/etcdclient"
	"github.com/weft-cni/weft/pkg/subnetfile"
)

// Config is the node-level part of a netconf. weft-ipam reads it from its
// "ipam" section, falling back field by field to the top level (Inherit).
type Config struct {
	EtcdEndpoints []string `json:"etcdEndpoints,omitempty"`
	EtcdPrefix    string   `json:"etcdPrefix,omitempty"`
	EtcdCAFile    string   `json:"etcdCAFile,omitempty"`
	EtcdCertFile  string   `json:"etcdCertFile,omitempty"`
	EtcdKeyFile   string   `json:"etcdKeyFile,omitempty"`
	Iface         string   `json:"iface,omitempty"`
	PublicIP      string   `json:"publicIP,omitempty"`
	SubnetFile    string   `json:"subnetFile,omitempty"`
	IPMasq        *bool    `json:"ipMasq,omitempty"`
	MTU           int      `json:"mtu,omitempty"`
	// PublicIPCIDR, when set, is the node network: peer leases whose
	// PublicIP lies outside it are not routed (the daemon's --public-ip-cidr).
	PublicIPCIDR string `json:"publicIPCIDR,omitempty"`

	publicIPCIDR netip.Prefix // PublicIPCIDR, parsed by Validate
}

// ErrConfig is wrapped by every validation error.
var ErrConfig = errors.New("invalid node config")

// Inherit fills every unset field from top.
func (c *Config) Inherit(top Config) {
	if len(c.EtcdEndpoints) == 0 {
		c.EtcdEndpoints = top.EtcdEndpoints
	}
	inherit(&c.EtcdPrefix, top.EtcdPrefix)
	inherit(&c.EtcdCAFile, top.EtcdCAFile)
	inherit(&c.EtcdCertFile, top.EtcdCertFile)
	inherit(&c.EtcdKeyFile, top.EtcdKeyFile)
	inherit(&c.Iface, top.Iface)
	inherit(&c.PublicIP, top.PublicIP)
	inherit(&c.SubnetFile, top.SubnetFile)
	if c.IPMasq == nil {
		c.IPMasq = top.IPMasq
	}
	if c.MTU == 0 {
		c.MTU = top.MTU
	}
	inherit(&c.PublicIPCIDR, top.PublicIPCIDR)
}

func inherit(field *string, top string) {
	if *field == "" {
		*field = top
	}
}

// Validate checks the fields and fills defaults.
func (c *Config) Validate() error {
	if c.SubnetFile == "" {
		c.SubnetFile = subnetfile.DefaultPath
	}
	if !filepath.IsAbs(c.SubnetFile) {
		return fmt.Errorf("%w: subnetFile %q must be an absolute path", ErrConfig, c.SubnetFile)
	}
	if c.PublicIP != "" {
		ip, err := netip.ParseAddr(c.PublicIP)
		if err != nil || !ip.Is4() || ip.IsUnspecified() || ip.IsMulticast() {
			return fmt.Errorf("%w: publicIP %q is not a unicast IPv4 address", ErrConfig, c.PublicIP)
		}
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535) {
		return fmt.Errorf("%w: mtu %d out of range 576..65535", ErrConfig, c.MTU)
	}
	if len(c.Iface) > 15 {
		return fmt.Errorf("%w: iface %q is longer than an interface name can be", ErrConfig, c.Iface)
	}
	if c.PublicIPCIDR != "" {
		cidr, err := netip.ParsePrefix(c.PublicIPCIDR)
		if err != nil || !cidr.Addr().Is4() {
			return fmt.Errorf("%w: publicIPCIDR %q is not an IPv4 CIDR", ErrConfig, c.PublicIPCIDR)
		}
		c.publicIPCIDR = cidr.Masked()
	}
	for _, ep := range c.EtcdEndpoints {
		if ep == "" {
			return fmt.Errorf("%w: empty entry in etcdEndpoints", ErrConfig)
		}
	}
	return nil
}

// Masquerade reports whether pod-to-outside traffic is masqueraded: the
// config's ipMasq when set; else the node's setting in a subnet file weft's
// daemon wrote (its --ip-masq, WEFT_IPMASQ), so the plugin and the daemon
// never fight over the MASQUERADE rule; else true.
// file may be nil (no subnet file yet).
func (c *Config) Masquerade(file *subnetfile.File) bool {
	switch {
	case c.IPMasq != nil:
		return *c.IPMasq
	case file != nil && file.Weft:
		return file.IPMasq
	default:
		return true
	}
}

// WarnMasqueradeConflict logs when the config sets ipMasq to the opposite
// of the node's setting in a subnet file weft wrote: the daemon that wrote
// it and the plugin would then change the MASQUERADE rule back and forth.
func (c *Config) WarnMasqueradeConflict(log *slog.Logger, file *subnetfile.File) {
	if c.IPMasq != nil && file != nil && file.Weft && *c.IPMasq != file.IPMasq {
		log.Warn("ipMasq in the CNI config differs from the node's setting in the subnet file (weft daemon --ip-masq); set them alike",
			"ipMasq", *c.IPMasq, "subnet_file", c.SubnetFile, "file_ipmasq", file.IPMasq)
	}
}

// Etcd is the etcd client config.
func (c *Config) Etcd() etcdclient.Config {
	return etcdclient.Config{Endpoints: c.EtcdEndpoints, CAFile: c.EtcdCAFile, CertFile: c.EtcdCertFile, KeyFile: c.EtcdKeyFile}
}
