package vxlan

import (
	"errors"
	"fmt"
)

// Programmer reads and writes the neighbour and FDB entries of the vxlan
// device; Netlink does it in the kernel. Deleting an entry that is already
// gone is no error.
type Programmer interface {
	Neighs() ([]Neigh, error)
	SetNeigh(Neigh) error
	DelNeigh(Neigh) error
	FDB() ([]FDB, error)
	SetFDB(FDB) error
	DelFDB(FDB) error
}

// Result counts the changes Reconcile made.
type Result struct {
	Upserted, Removed int
}

// Reconcile makes the device's neighbour and FDB entries match desired.
// With prune it also removes entries no desired entry names (peers that
// left, old MACs and destinations); without prune it only adds and
// replaces. FDB entries are removed before others are set, so a moved MAC
// ends with one destination. Failures do not stop the other entries; all
// come back joined.
func Reconcile(p Programmer, desired State, prune bool) (Result, error) {
	var res Result
	var errs []error
	fdb, err := p.FDB()
	if err != nil {
		return res, fmt.Errorf("listing FDB entries: %w", err)
	}
	upF, rmF := DiffFDB(desired.FDB, fdb)
	if prune {
		for _, f := range rmF {
			if err := p.DelFDB(f); err != nil {
				errs = append(errs, fmt.Errorf("removing FDB entry %s: %w", f, err))
				continue
			}
			res.Removed++
		}
	}
	for _, f := range upF {
		if err := p.SetFDB(f); err != nil {
			errs = append(errs, fmt.Errorf("setting FDB entry %s: %w", f, err))
			continue
		}
		res.Upserted++
	}
	neighs, err := p.Neighs()
	if err != nil {
		return res, errors.Join(append(errs, fmt.Errorf("listing neighbour entries: %w", err))...)
	}
	upN, rmN := DiffNeighs(desired.Neighs, neighs)
	for _, n := range upN {
		if err := p.SetNeigh(n); err != nil {
			errs = append(errs, fmt.Errorf("setting neighbour %s: %w", n, err))
			continue
		}
		res.Upserted++
	}
	if prune {
		for _, n := range rmN {
			if err := p.DelNeigh(n); err != nil {
				errs = append(errs, fmt.Errorf("removing neighbour %s: %w", n, err))
				continue
			}
			res.Removed++
		}
	}
	return res, errors.Join(errs...)
}
