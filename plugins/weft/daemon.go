package main

import (
	"fmt"
	"os"
)

// runDaemon runs the node agent; replaced by the daemon implementation.
func runDaemon(args []string) int {
	fmt.Fprintln(os.Stderr, "weft daemon: not implemented yet")
	return 2
}

// runStatus prints the node's state for an operator.
func runStatus(args []string) int {
	fmt.Fprintln(os.Stderr, "weft status: not implemented yet")
	return 2
}
