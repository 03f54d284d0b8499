package daemon

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/weft-cni/weft/pkg/hostnet"
	"github.com/weft-cni/weft/pkg/ipam"
	"github.com/weft-cni/weft/pkg/ipamcni"
	"github.com/weft-cni/weft/pkg/lease"
	"github.com/weft-cni/weft/pkg/nodelease"
	"github.com/weft-cni/weft/pkg/subnetfile"
)

// Defaults, as flanneld's where a flag of the same name exists.
const (
	DefaultEtcdEndpoints  = "http://127.0.0.1:4001,http://127.0.0.1:2379"
	DefaultHealthzIP      = "0.0.0.0"
	DefaultIPTablesResync = 5 * time.Second
	DefaultRenewMargin    = 60 * time.Minute
	DefaultLeaseTTL       = 24 * time.Hour
	DefaultRouteResync    = 5 * time.Second
	DefaultRelist         = 5 * time.Minute
)

// EnvPrefix prefixes the environment variable of every flag:
// --etcd-endpoints is also WEFT_ETCD_ENDPOINTS.
const EnvPrefix = "WEFT_"

// ErrConfig is wrapped by every flag and validation error.
var ErrConfig = errors.New("invalid daemon config")

// Config is what the daemon and `weft status` are told, by flag or
// environment. It is complete and checked once ParseFlags returns it.
type Config struct {
	EtcdEndpoints []string
	EtcdPrefix    string
	EtcdCAFile    string
	EtcdCertFile  string
	EtcdKeyFile   string
	// Ifaces are the --iface values in order, each an interface name or an
	// IPv4 address; the first that resolves is used. None means the
	// interface of the default route.
	Ifaces   []string
	PublicIP netip.Addr // zero: the first IPv4 address of the interface
	// PublicIPCIDR, when valid, is the node network: leases whose PublicIP
	// lies outside it are ignored with a warning.
	PublicIPCIDR netip.Prefix
	SubnetFile   string // absolute
	IPMasq       bool
	Bridge       string
	// IPAMDataDir and CNINetwork locate the node's weft-ipam store, which
	// `weft status` reports on (the daemon itself never reads it).
	IPAMDataDir string // absolute
	CNINetwork  string

	HealthzIP   netip.Addr
	HealthzPort int // 0 serves nothing, as flanneld

	IPTablesResync time.Duration
	RouteResync    time.Duration
	Relist         time.Duration
	LeaseTTL       time.Duration
	RenewMargin    time.Duration

	LogFormat string // "text" or "json"
	LogLevel  slog.Level
}

// rawFlags holds the flag values as typed on the command line.
type rawFlags struct {
	endpoints, prefix, ca, cert, key string
	ifaces                           stringList
	publicIP, subnetFile, bridge     string
	ipamDataDir, cniNetwork          string
	publicIPCIDR                     string
	ipMasq                           bool
	healthzIP                        string
	healthzPort                      int
	iptablesResync, routeResync      int
	renewMargin                      int
	relist, leaseTTL                 time.Duration
	logFormat, logLevel              string
	verbosity                        int
}

// stringList is a repeatable flag; each value may also hold a comma-separated list.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func newFlagSet(name string, r *rawFlags) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&r.endpoints, "etcd-endpoints", DefaultEtcdEndpoints, "comma-separated etcd endpoints")
	fs.StringVar(&r.prefix, "etcd-prefix", lease.DefaultPrefix, "etcd prefix of the network config and subnet leases")
	fs.StringVar(&r.ca, "etcd-cafile", "", "CA file to verify etcd's certificate")
	fs.StringVar(&r.cert, "etcd-certfile", "", "client certificate file for etcd")
	fs.StringVar(&r.key, "etcd-keyfile", "", "client key file for etcd")
	fs.Var(&r.ifaces, "iface", "interface (name or IPv4 address) for inter-host traffic; repeat to try each in order (default: the default route's)")
	fs.StringVar(&r.publicIPCIDR, "public-ip-cidr", "", "the node network: leases whose public IP is outside it are ignored with a warning (default: none)")
	fs.StringVar(&r.publicIP, "public-ip", "", "IPv4 address other nodes reach this node at (default: the first address of --iface)")
	fs.StringVar(&r.subnetFile, "subnet-file", subnetfile.DefaultPath, "file the node's subnet is written to (flannel's subnet.env format)")
	fs.BoolVar(&r.ipMasq, "ip-masq", true, "masquerade traffic from pods to outside the cluster network (flanneld's default is false)")
	fs.StringVar(&r.bridge, "bridge", hostnet.DefaultBridge, "bridge pods attach to; must match the CNI config")
	fs.StringVar(&r.ipamDataDir, "ipam-data-dir", ipamcni.DefaultDataDir, "weft-ipam's dataDir, as in the CNI config (weft status reports its use of the subnet)")
	fs.StringVar(&r.cniNetwork, "cni-network", "weft", "the CNI network's name, as in the CNI config (weft status reports its addresses)")
	fs.StringVar(&r.healthzIP, "healthz-ip", DefaultHealthzIP, "address to serve /healthz, /readyz and /metrics on")
	fs.IntVar(&r.healthzPort, "healthz-port", 0, "port to serve /healthz, /readyz and /metrics on; 0 serves nothing")
	fs.IntVar(&r.iptablesResync, "iptables-resync", int(DefaultIPTablesResync/time.Second), "seconds between checks (and repairs) of the iptables rules")
	fs.IntVar(&r.routeResync, "route-resync", int(DefaultRouteResync/time.Second), "seconds between checks of the routes, bridge and subnet file against the known leases")
	fs.IntVar(&r.renewMargin, "subnet-lease-renew-margin", int(DefaultRenewMargin/time.Minute),
		"minutes before expiry at which an unrenewed lease is reported (a third of the TTL if that is shorter); keep-alive renews it long before")
	fs.DurationVar(&r.relist, "relist-interval", DefaultRelist, "how often to list every lease again, besides watching")
	fs.DurationVar(&r.leaseTTL, "subnet-lease-ttl", DefaultLeaseTTL, "TTL of the etcd lease the node's subnet key is bound to")
	fs.StringVar(&r.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&r.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.IntVar(&r.verbosity, "v", 0, "flanneld's log verbosity; 1 or more logs at debug level")
	return fs
}

// ParseFlags reads the flags of `weft daemon` and `weft status` from args,
// then from the environment (WEFT_<FLAG>, dashes as underscores) for each
// flag not on the command line, then checks them. getenv is os.LookupEnv in
// production. -h gives an error wrapping flag.ErrHelp.
func ParseFlags(name string, args []string, getenv func(string) (string, bool)) (*Config, error) {
	var r rawFlags
	fs := newFlagSet(name, &r)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%w: unexpected argument %q", ErrConfig, fs.Arg(0))
	}
	if err := applyEnv(fs, getenv); err != nil {
		return nil, err
	}
	return r.config()
}

// EnvName is the environment variable of a flag.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func applyEnv(fs *flag.FlagSet, getenv func(string) (string, bool)) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		v, ok := getenv(EnvName(f.Name))
		if !ok {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("%w: %s=%q: %w", ErrConfig, EnvName(f.Name), v, err))
		}
	})
	return errors.Join(errs...)
}

// Usage writes the flags and their environment variables to w.
func Usage(w io.Writer, name string) {
	var r rawFlags
	fs := newFlagSet(name, &r)
	fmt.Fprintf(w, "Usage: %s [flags]\n\nEvery flag can also be set as the environment variable shown.\n\n", name)
	fs.VisitAll(func(f *flag.Flag) {
		def := ""
		if f.DefValue != "" {
			def = fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "  --%s  [%s]\n      %s%s\n", f.Name, EnvName(f.Name), f.Usage, def)
	})
}

// problems collects validation errors, each wrapping ErrConfig.
type problems []error

func (p *problems) add(format string, args ...any) {
	*p = append(*p, fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...))
}

func (r *rawFlags) config() (*Config, error) {
	c := &Config{
		EtcdPrefix: r.prefix, EtcdCAFile: r.ca, EtcdCertFile: r.cert, EtcdKeyFile: r.key,
		Ifaces: r.ifaces, IPMasq: r.ipMasq, Bridge: r.bridge, HealthzPort: r.healthzPort,
		IPTablesResync: time.Duration(r.iptablesResync) * time.Second,
		RouteResync:    time.Duration(r.routeResync) * time.Second,
		RenewMargin:    time.Duration(r.renewMargin) * time.Minute,
		Relist:         r.relist, LeaseTTL: r.leaseTTL, LogFormat: r.logFormat,
	}
	var errs problems
	r.node(c, &errs)
	r.periods(c, &errs)
	r.logging(c, &errs)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// node checks etcd, the node's addresses, files and the health address.
func (r *rawFlags) node(c *Config, errs *problems) {
	for _, ep := range strings.Split(r.endpoints, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			c.EtcdEndpoints = append(c.EtcdEndpoints, ep)
		}
	}
	if len(c.EtcdEndpoints) == 0 {
		errs.add("--etcd-endpoints is empty")
	}
	if r.publicIP != "" {
		ip, err := netip.ParseAddr(r.publicIP)
		if err != nil || !ip.Is4() || !ip.IsGlobalUnicast() {
			errs.add("--public-ip %q is not a unicast IPv4 address", r.publicIP)
		}
		c.PublicIP = ip
	}
	if r.publicIPCIDR != "" {
		p, err := netip.ParsePrefix(r.publicIPCIDR)
		if err != nil || !p.Addr().Is4() {
			errs.add("--public-ip-cidr %q is not an IPv4 CIDR", r.publicIPCIDR)
		}
		c.PublicIPCIDR = p.Masked()
	}
	for _, iface := range c.Ifaces {
		ip, err := netip.ParseAddr(iface)
		switch {
		case err != nil && !validIfName(iface):
			errs.add("--iface %q is neither an interface name nor an IP address", iface)
		case err == nil && !ip.Is4():
			errs.add("--iface %q is an IPv6 address: weft is IPv4-only; give the interface's name or its IPv4 address", iface)
		}
	}
	if !validIfName(c.Bridge) {
		errs.add("--bridge %q is not an interface name", c.Bridge)
	}
	if !filepath.IsAbs(r.ipamDataDir) {
		errs.add("--ipam-data-dir %q is not an absolute path", r.ipamDataDir)
	}
	c.IPAMDataDir = filepath.Clean(r.ipamDataDir)
	if err := ipam.ValidateName("--cni-network", r.cniNetwork); err != nil {
		errs.add("%v", err)
	}
	c.CNINetwork = r.cniNetwork
	if r.subnetFile == "" {
		errs.add("--subnet-file is empty")
	} else if abs, err := filepath.Abs(r.subnetFile); err != nil {
		errs.add("--subnet-file %q: %v", r.subnetFile, err)
	} else {
		c.SubnetFile = abs // flanneld's users pass ./subnet.env
	}
	ip, err := netip.ParseAddr(r.healthzIP)
	if err != nil {
		errs.add("--healthz-ip %q is not an IP address", r.healthzIP)
	}
	c.HealthzIP = ip
	if r.healthzPort < 0 || r.healthzPort > 65535 {
		errs.add("--healthz-port %d out of range 0..65535", r.healthzPort)
	}
}

// periods checks the resync periods and the lease's TTL and margin.
func (r *rawFlags) periods(c *Config, errs *problems) {
	if r.iptablesResync < 1 || r.iptablesResync > 86400 {
		errs.add("--iptables-resync %d out of range 1..86400 seconds", r.iptablesResync)
	}
	if r.routeResync < 1 || r.routeResync > 86400 {
		errs.add("--route-resync %d out of range 1..86400 seconds", r.routeResync)
	}
	if c.Relist < time.Second {
		errs.add("--relist-interval %s is shorter than a second", c.Relist)
	}
	if c.LeaseTTL < 10*time.Second || c.LeaseTTL%time.Second != 0 {
		errs.add("--subnet-lease-ttl %s must be a whole number of seconds, at least 10s", c.LeaseTTL)
	}
	if r.renewMargin < 1 || r.renewMargin >= 24*60 {
		errs.add("--subnet-lease-renew-margin %d out of range 1..1439 minutes", r.renewMargin)
	}
	if c.RenewMargin >= c.LeaseTTL {
		c.RenewMargin = c.LeaseTTL / 3 // a short TTL, for tests: warn when a third is left
	}
}

func (r *rawFlags) logging(c *Config, errs *problems) {
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs.add("--log-format %q: want text or json", c.LogFormat)
	}
	if err := c.LogLevel.UnmarshalText([]byte(r.logLevel)); err != nil {
		errs.add("--log-level %q: want debug, info, warn or error", r.logLevel)
	}
	if r.verbosity > 0 && c.LogLevel > slog.LevelDebug {
		c.LogLevel = slog.LevelDebug
	}
}

func validIfName(name string) bool {
	return name != "" && len(name) <= 15 && !strings.ContainsAny(name, "/:\x00 \t\n") && name != "." && name != ".."
}

// Node returns the node-level config the shared nodelease helpers take, for
// the interface candidate iface ("" for the default route's).
func (c *Config) Node(iface string) nodelease.Config {
	masq := c.IPMasq
	n := nodelease.Config{
		EtcdEndpoints: c.EtcdEndpoints, EtcdPrefix: c.EtcdPrefix,
		EtcdCAFile: c.EtcdCAFile, EtcdCertFile: c.EtcdCertFile, EtcdKeyFile: c.EtcdKeyFile,
		SubnetFile: c.SubnetFile, IPMasq: &masq,
	}
	if c.PublicIP.IsValid() {
		n.PublicIP = c.PublicIP.String()
	}
	if ip, err := netip.ParseAddr(iface); err == nil {
		// An address names the interface holding it (flanneld's --iface=IP).
		if n.PublicIP == "" {
			n.PublicIP = ip.String()
		}
	} else {
		n.Iface = iface
	}
	return n
}

// HealthzAddr is the host:port the health server listens on.
func (c *Config) HealthzAddr() string {
	return netip.AddrPortFrom(c.HealthzIP, uint16(c.HealthzPort)).String()
}
