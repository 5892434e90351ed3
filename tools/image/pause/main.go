// Command pause is the pod sandbox's process in podnet's stand-in for
// registry.k8s.io/pause (built by tools/image -test-images, static,
// CGO_ENABLED=0): it holds the pod's namespaces open, reaps the zombies
// re-parented to it when the pod shares its PID namespace, and exits 0 at
// once on SIGTERM or SIGINT, like upstream's pause.c. A process with PID 1
// only gets the signals it handles, so `sleep` would ignore SIGTERM and
// leave the runtime to SIGKILL it after the grace period.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Println("pause (podnet tools/image)")
		return
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			fmt.Fprintf(os.Stderr, "Shutting down, got signal: %v\n", s)
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
