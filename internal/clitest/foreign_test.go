package clitest

import (
	"testing"

	"github.com/weft-cni/weft/pkg/podnet"
)

func TestForeignNetns(t *testing.T) {
	path := ForeignNetns(t)
	podNS, err := podnet.OpenNS(path)
	if err != nil {
		t.Fatalf("ForeignNetns() = %s: %v", path, err)
	}
	podNS.Close()
	if _, err := podnet.OpenNS("/proc/self/ns/net"); err == nil {
		t.Error("own netns accepted")
	}
}
