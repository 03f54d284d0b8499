package main

import (
	"errors"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/weft-cni/weft/pkg/cnierr"
)

// A delegated IPAM's CNI error reaches the runtime whole (code, message,
// details) when the cleanup after it succeeded; a failed cleanup is added.
func TestWithCleanupKeepsTheCNIError(t *testing.T) {
	ipamErr := &types.Error{Code: 11, Msg: "no IP addresses available", Details: "range 172.7.21.0/24"}
	var got *types.Error
	if !errors.As(cnierr.Classify(withCleanup(ipamErr, nil)), &got) || *got != *ipamErr {
		t.Errorf("after a clean cleanup: %+v, want %+v", got, ipamErr)
	}
	err := cnierr.Classify(withCleanup(ipamErr, errors.New("deleting eth0: busy")))
	if !errors.As(err, &got) || got.Code != 11 || got.Msg == ipamErr.Msg {
		t.Errorf("after a failed cleanup: %+v, want code 11 and both messages", got)
	}
}
