package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/weft-cni/weft/pkg/cnierr"
	"github.com/weft-cni/weft/pkg/hostnet"
	"github.com/weft-cni/weft/pkg/ipam"
	"github.com/weft-cni/weft/pkg/ipamcni"
	"github.com/weft-cni/weft/pkg/nodelease"
	"github.com/weft-cni/weft/pkg/podnet"
)

// ipamType is the in-process IPAM: no second process on the ADD path.
const ipamType = "weft-ipam"

// NetConf is the weft plugin's network configuration.
type NetConf struct {
	types.NetConf
	nodelease.Config
	Bridge string `json:"bridge,omitempty"`
	// HairpinMode (default true, as kube-flannel's conflist sets it) lets a
	// pod reach itself through a Service or hostPort: with br_netfilter the
	// DNATed frame leaves by the bridge port it came in on.
	HairpinMode *bool `json:"hairpinMode,omitempty"`
	// PeerSyncInterval (seconds) is how old the node's last sync with etcd may
	// be before an ADD syncs peers' routes and the full rule set again. The
	// daemon keeps routes current between syncs; 0 syncs on every ADD.
	PeerSyncInterval *int `json:"peerSyncInterval,omitempty"`

	// ipamConf is the in-process IPAM's config when the ipam type is
	// weft-ipam, parsed once by loadConf.
	ipamConf *ipamcni.Config
}

// defaultPeerSync is the default PeerSyncInterval.
const defaultPeerSync = 60 * time.Second

func (c *NetConf) hairpin() bool { return c.HairpinMode == nil || *c.HairpinMode }

func (c *NetConf) peerSync() time.Duration {
	if c.PeerSyncInterval == nil {
		return defaultPeerSync
	}
	return time.Duration(*c.PeerSyncInterval) * time.Second
}

// loadConf decodes and validates stdin; every error is a CNI error.
func loadConf(stdin []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "decoding network config", err.Error())
	}
	if err := conf.validate(); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	// The in-process IPAM's section is checked up front too, so a bad one
	// fails before ADD sets the node up.
	if conf.IPAM.Type == ipamType {
		ipamConf, _, err := ipamcni.LoadConfig(stdin)
		if err != nil {
			return nil, cnierr.Classify(err)
		}
		// A store wiped while pods run learns their addresses from their
		// veths' marks before it hands any out, and GC keeps those.
		bridge := conf.Bridge
		ipamConf.Live = func() (map[ipam.Attachment]netip.Addr, error) { return podnet.Live(bridge) }
		ipamConf.Log = log
		conf.ipamConf = ipamConf
	}
	return conf, nil
}

func (c *NetConf) validate() error {
	if c.Bridge == "" {
		c.Bridge = hostnet.DefaultBridge
	}
	if err := validIfName("bridge", c.Bridge); err != nil {
		return err
	}
	if c.PeerSyncInterval != nil && (*c.PeerSyncInterval < 0 || *c.PeerSyncInterval > 86400) {
		return fmt.Errorf("peerSyncInterval %d out of range 0..86400 seconds", *c.PeerSyncInterval)
	}
	if c.IPAM.Type == "" {
		c.IPAM.Type = ipamType
	}
	if err := ipam.ValidateName("network name", c.Name); err != nil {
		return err
	}
	if strings.ContainsAny(c.IPAM.Type, "/\x00") || c.IPAM.Type == ".." {
		return fmt.Errorf("ipam type %q is not a plugin name", c.IPAM.Type)
	}
	return c.Config.Validate()
}

// validIfName checks an interface name as the kernel would, and refuses
// the control characters the kernel takes but weft's records of a pod (the
// IPAM store, the veth's mark) do not: such a name would be refused only
// after the node was set up and the veth made.
func validIfName(kind, name string) error {
	if name == "" || len(name) > 15 || strings.ContainsFunc(name, badIfNameRune) || name == "." || name == ".." {
		return fmt.Errorf("%s %q is not a valid interface name (1-15 characters, no '/', ':', spaces or control characters)", kind, name)
	}
	return nil
}

func badIfNameRune(r rune) bool { return r == '/' || r == ':' || r <= ' ' || r == 0x7f }

// validArgs checks the runtime's CNI_* values that weft uses as names.
func validArgs(containerID, ifName string) error {
	if err := ipam.ValidateName("container ID", containerID); err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, err.Error(), "")
	}
	if err := validIfName("CNI_IFNAME", ifName); err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, err.Error(), "")
	}
	return nil
}

// checkIPAMNodeSettings refuses, for ADD, an in-process ipam section whose
// node settings differ from the plugin's: the IPAM works on the node the
// plugin set up, so they would be silently ignored. DEL, CHECK and GC go on
// with the plugin's settings, so that pods added before such a config
// change can still be deleted.
func checkIPAMNodeSettings(conf *NetConf) error {
	if conf.ipamConf == nil {
		return nil
	}
	if key := differingNodeSetting(conf.Config, conf.ipamConf.Config); key != "" {
		return types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("ipam.%s differs from the plugin's %s: weft-ipam inside weft uses the plugin's node settings, set it once at the top level", key, key), "")
	}
	return nil
}

// differingNodeSetting names (by its JSON key) the first node setting in
// which the ipam section's config, inherited from the plugin's, differs.
func differingNodeSetting(plugin, ipamSection nodelease.Config) string {
	a, b := reflect.ValueOf(plugin), reflect.ValueOf(ipamSection)
	for i := range a.NumField() {
		field := a.Type().Field(i)
		if field.IsExported() && !reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
			key, _, _ := strings.Cut(field.Tag.Get("json"), ",")
			return key
		}
	}
	return ""
}
