// Package cnierr turns weft's errors into the CNI spec's error codes, so a
// runtime can tell a bad config (7) from a transient failure (11).
package cnierr

import (
	"context"
	"errors"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/weft-cni/weft/pkg/ipam"
	"github.com/weft-cni/weft/pkg/netconf"
	"github.com/weft-cni/weft/pkg/nodelease"
	"github.com/weft-cni/weft/pkg/podnet"
	"github.com/weft-cni/weft/pkg/subnetfile"
)

// Code wraps err in a *types.Error with code, keeping its message.
func Code(code uint, err error) *types.Error {
	return types.NewError(code, err.Error(), "")
}

// Classify maps err to a CNI error: codes already chosen are kept, config
// problems (a bad network name too) are 7, unsafe CNI_* names or a CNI_NETNS
// that is not a pod's 4, etcd outages, timeouts and a subnet file not written
// yet 11, the rest 999.
//
// A joined error (a failure and the error of its rollback) takes the code of
// the first and keeps every message; a *types.Error wrapped with context
// keeps its code and the context.
func Classify(err error) error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		if errs := j.Unwrap(); len(errs) > 1 {
			first := Classify(errs[0]).(*types.Error)
			return types.NewError(first.Code, strings.ReplaceAll(err.Error(), "\n", "; "), "")
		}
	}
	var cniErr *types.Error
	switch {
	case errors.As(err, &cniErr):
		if err != error(cniErr) {
			return Code(cniErr.Code, err)
		}
		return cniErr
	case errors.Is(err, nodelease.ErrConfig), errors.Is(err, netconf.ErrInvalid), errors.Is(err, subnetfile.ErrInvalid):
		// Before ErrInvalidName: a bad name in the config (the network
		// name) is a config error, not a bad CNI_* variable.
		return Code(types.ErrInvalidNetworkConfig, err)
	case errors.Is(err, ipam.ErrInvalidName), errors.Is(err, podnet.ErrNotPodNS):
		return Code(types.ErrInvalidEnvironmentVariables, err)
	case errors.Is(err, nodelease.ErrUnavailable), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, nodelease.ErrNoSubnetFile):
		// etcd away, the call's time up waiting for a node or store lock
		// held by concurrent calls, or a daemon that has not written the
		// subnet file yet: retrying later may pass.
		return Code(types.ErrTryAgainLater, err)
	default:
		return Code(types.ErrInternal, err)
	}
}

// Codes the spec defines that the types package does not name.
const (
	ErrPluginNotAvailable  uint = 50
	ErrLimitedConnectivity uint = 51
)
