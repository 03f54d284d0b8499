// Package ipamcni is weft-ipam's CNI layer: it reads the IPAM config (each
// field falling back to the top level of the netconf, so it also works under
// the reference bridge plugin) and serves ADD, DEL, CHECK and GC from the
// node's leased subnet. The weft plugin calls it in-process.
package ipamcni

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/weft-cni/weft/pkg/ipam"
	"github.com/weft-cni/weft/pkg/nodelease"
)

// DefaultDataDir holds the allocations, one directory per network.
const DefaultDataDir = "/var/lib/cni/weft"

// Config is weft-ipam's configuration after fallbacks and validation.
type Config struct {
	nodelease.Config
	Network string // CNI network name, the store's directory
	DataDir string
	// Live, when set, reports the pods that hold addresses on the node; a
	// store found missing adopts them before it allocates, and a full
	// subnet frees the addresses of pods that are gone (ipam.Pool.AdoptLive).
	// The weft plugin sets it; weft-ipam alone has no way to know.
	Live ipam.LiveFunc
	// Log, when set, is told of each address freed from a pod that is gone.
	Log *slog.Logger
}

type section struct {
	nodelease.Config
	Type    string `json:"type"`
	DataDir string `json:"dataDir,omitempty"`
}

type netConf struct {
	types.NetConf
	nodelease.Config
	DataDir string   `json:"dataDir,omitempty"`
	IPAM    *section `json:"ipam,omitempty"`
}

// LoadConfig parses stdin of an IPAM call.
func LoadConfig(stdin []byte) (*Config, *types.NetConf, error) {
	var n netConf
	if err := json.Unmarshal(stdin, &n); err != nil {
		return nil, nil, types.NewError(types.ErrDecodingFailure, "decoding network config", err.Error())
	}
	var sec section
	if n.IPAM != nil {
		sec = *n.IPAM
	}
	sec.Config.Inherit(n.Config)
	cfg := &Config{Config: sec.Config, Network: n.Name, DataDir: sec.DataDir}
	if cfg.DataDir == "" {
		cfg.DataDir = n.DataDir
	}
	if err := cfg.validate(); err != nil {
		return nil, nil, err
	}
	return cfg, &n.NetConf, nil
}

func (c *Config) validate() error {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if !filepath.IsAbs(c.DataDir) {
		return fmt.Errorf("%w: dataDir %q must be an absolute path", nodelease.ErrConfig, c.DataDir)
	}
	if err := ipam.ValidateName("network name", c.Network); err != nil {
		return fmt.Errorf("%w: %w", nodelease.ErrConfig, err)
	}
	return c.Config.Validate()
}
