// Command etcd-client-only is empty-go linked with the etcd v3 client: what
// that client alone (gRPC, protobuf and the etcd API) adds to a Go
// program's start, for the floor rows of `make bench`. weft links it
// because `weft daemon` is the plugin's own binary (plugins/weft).
package main

import (
	"os"

	_ "go.etcd.io/etcd/client/v3"
)

func main() {
	_, _ = os.Stdout.WriteString(`{"cniVersion":"1.1.0","supportedVersions":["1.1.0"]}` + "\n")
}
