package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// binDir holds freshly built podnet and podnet-agent binaries; the tests run
// `podnet agent ...`, which goes through the exec into podnet-agent as an
// operator's command would.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "podnet-agent-bin-")
	if err != nil {
		panic(err)
	}
	for name, pkg := range map[string]string{"podnet": "../podnet", "podnet-agent": "."} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg).CombinedOutput(); err != nil {
			os.Stderr.Write(out)
			panic(err)
		}
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
