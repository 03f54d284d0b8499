// Command empty-go answers a CNI VERSION call and nothing else: the least a
// plugin written in Go costs to start (fork, exec, Go runtime, exit), for
// the floor rows of `make bench`.
package main

import "os"

func main() {
	_, _ = os.Stdout.WriteString(`{"cniVersion":"1.1.0","supportedVersions":["1.1.0"]}` + "\n")
}
