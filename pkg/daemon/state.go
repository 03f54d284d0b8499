package daemon

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/weft-cni/weft/pkg/lease"
	"github.com/weft-cni/weft/pkg/netconf"
	"github.com/weft-cni/weft/pkg/subnetfile"
)

// state is what the daemon's loops share: the node's lease and how far the
// node is set up for it. Readiness is derived from it.
type state struct {
	mu      sync.Mutex
	network *netconf.Config
	// prevNetwork is the cluster network of the subnet file found at start,
	// so that rules are repaired even before etcd answers.
	prevNetwork netip.Prefix
	own         *lease.Lease // nil until the first lease
	expiry      time.Time    // zero for a reservation
	file        *subnetfile.File

	fileErr      error // writing the subnet file
	fileWritten  bool  // the subnet file holds the current lease
	nodeErr      error // bridge and forwarding
	nodeSetUp    bool  // the bridge holds the current lease's gateway
	rulesErr     error // nil once rules were checked and are in place
	rulesChecked bool
	routesSynced bool // a full list and reconcile has succeeded
	warnedExpiry bool
	lost         bool // the keeper found the lease lost; cleared by setLease
	// identityErr: the node's address is not the one the daemon advertises
	// any more (checkIdentity).
	identityErr error
	// configErr: etcd's network config is not the one the lease was
	// acquired under any more (syncer.checkConfig).
	configErr error
}

// snapshot is a consistent copy of the state.
type snapshot struct {
	network *netconf.Config
	own     *lease.Lease
	expiry  time.Time
	file    *subnetfile.File
}

func (s *state) get() snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return snapshot{network: s.network, own: s.own, expiry: s.expiry, file: s.file}
}

// setPrevNetwork records the network of the subnet file found at start.
func (s *state) setPrevNetwork(p netip.Prefix) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prevNetwork = p
}

// clusterNetwork is the network the rules are for: etcd's once a lease is
// held, else the one of the subnet file found at start; invalid if neither.
func (s *state) clusterNetwork() netip.Prefix {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.network != nil {
		return s.network.Network
	}
	return s.prevNetwork
}

// setLease records a newly acquired lease and the subnet file it implies.
func (s *state) setLease(network *netconf.Config, own *lease.Lease, file *subnetfile.File) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.network, s.file = network, file
	l := *own
	s.own = &l
	s.expiry = own.Expiration
	if own.Reservation() {
		s.expiry = time.Time{}
	}
	s.warnedExpiry, s.lost = false, false
	s.fileWritten, s.nodeSetUp, s.routesSynced = false, false, false
	s.configErr = nil // acquired under etcd's config of the moment
}

// loseLease records that the lease is lost (its key gone or taken, its etcd
// lease ended): not held, whatever its last expiry said.
func (s *state) loseLease() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lost = true
}

func (s *state) setExpiry(t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expiry = t
	s.warnedExpiry = false
}

func (s *state) setFileErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fileErr, s.fileWritten = err, err == nil
}

func (s *state) setNodeErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nodeErr, s.nodeSetUp = err, err == nil
}

// setConfigErr records checkConfig's finding against running, unless a
// lease was acquired under another config meanwhile (the finding is then
// stale); it reports whether it recorded it.
func (s *state) setConfigErr(running *netconf.Config, err error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.network != running {
		return false
	}
	s.configErr = err
	return true
}

func (s *state) setIdentityErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.identityErr = err
}

func (s *state) setRules(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rulesErr, s.rulesChecked = err, true
}

// setRoutesSynced records a reconcile against listed leases for the current
// lease, ok false when it could program nothing; it reports whether that
// changes readiness.
func (s *state) setRoutesSynced(ok bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	news := s.routesSynced != ok
	s.routesSynced = ok
	return news
}

// held reports whether the lease is held at now: acquired and, unless a
// reservation, not expired.
func (s *state) heldLocked(now time.Time) bool {
	return s.own != nil && !s.lost && (s.own.Reservation() || now.Before(s.expiry))
}

// leaseStatus returns whether the lease is held at now and its expiry
// (zero for a reservation or no lease).
func (s *state) leaseStatus(now time.Time) (bool, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.heldLocked(now), s.expiry
}

// readiness reports whether the node is ready and, if not, why.
func (s *state) readiness(now time.Time) (bool, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var why []string
	switch {
	case s.own == nil:
		why = append(why, "no subnet lease yet")
	case !s.heldLocked(now):
		if s.lost {
			why = append(why, fmt.Sprintf("subnet lease %s lost; acquiring again", s.own.Subnet))
		} else {
			why = append(why, fmt.Sprintf("subnet lease %s expired at %s", s.own.Subnet, s.expiry.Format(time.RFC3339)))
		}
	}
	switch {
	case s.fileErr != nil:
		why = append(why, "subnet file: "+s.fileErr.Error())
	case !s.fileWritten:
		why = append(why, "subnet file not written yet")
	}
	switch {
	case s.nodeErr != nil:
		why = append(why, "node setup: "+s.nodeErr.Error())
	case !s.nodeSetUp:
		why = append(why, "bridge not set up yet")
	}
	switch {
	case !s.rulesChecked:
		why = append(why, "iptables rules not checked yet")
	case s.rulesErr != nil:
		why = append(why, "iptables rules: "+s.rulesErr.Error())
	}
	if !s.routesSynced {
		why = append(why, "routes not synced with the leases")
	}
	if s.identityErr != nil {
		why = append(why, "node address: "+s.identityErr.Error())
	}
	if s.configErr != nil {
		why = append(why, "network config: "+s.configErr.Error())
	}
	return len(why) == 0, why
}

// expiringSoon reports, once per renewal, that an unrenewed lease has less
// than margin left.
func (s *state) expiringSoon(now time.Time, margin time.Duration) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.own == nil || s.own.Reservation() || s.warnedExpiry || s.expiry.Sub(now) >= margin {
		return time.Time{}, false
	}
	s.warnedExpiry = true
	return s.expiry, true
}
