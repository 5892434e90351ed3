package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"
)

// The node agent (and later the lab) live in a second binary, podnet-agent,
// because their dependencies (etcd and gRPC clients, later client-go) must
// not be linked into the plugin binary: Go runs every linked package's init
// on each exec, and every CNI ADD and DEL is an exec. Measured on the
// development VM: 113 packages and ~5 ms of init without them, 199 packages
// and ~17 ms with them, per plugin call. `podnet agent ...` replaces this
// process with `podnet-agent agent ...`, so operators keep one command name.
const heavyBinary = "podnet-agent"

func newHeavyCmd(use, short string) *cobra.Command {
	return &cobra.Command{
		Use:                use,
		Short:              short,
		DisableFlagParsing: true, // every flag, --help included, goes to podnet-agent
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := findHeavy()
			if err != nil {
				return err
			}
			return syscall.Exec(path, append([]string{heavyBinary, use}, args...), os.Environ())
		},
	}
}

// findHeavy looks for podnet-agent next to this executable, then in PATH.
func findHeavy() (string, error) {
	self, err := os.Executable()
	if err == nil {
		if self, err = filepath.EvalSymlinks(self); err == nil {
			p := filepath.Join(filepath.Dir(self), heavyBinary)
			if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
				return p, nil
			}
		}
	}
	if p, err := exec.LookPath(heavyBinary); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s not found next to %s or in PATH: build it with `go build -o bin/%s ./cmd/%s` (`make build` does)", heavyBinary, self, heavyBinary, heavyBinary)
}
