package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// `podnet lab ...` reaches podnet-agent's lab command through the exec
// trampoline; a lab that does not exist is reported with the fix, and
// down of it is a no-op.
func TestLabCommandWithoutLab(t *testing.T) {
	podnet := filepath.Join(binDir, "podnet")
	out, err := exec.Command(podnet, "lab", "status", "--name", "nosuchlab").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "podnet lab up --name nosuchlab") {
		t.Fatalf("status of a missing lab: %v\n%s", err, out)
	}
	out, err = exec.Command(podnet, "lab", "down", "--name", "nosuchlab").CombinedOutput()
	if err != nil {
		t.Fatalf("down of a missing lab: %v\n%s", err, out)
	}
	out, err = exec.Command(podnet, "lab", "up", "--name", "Bad-Name").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `lab name "Bad-Name"`) {
		t.Fatalf("bad name: %v\n%s", err, out)
	}
	out, err = exec.Command(podnet, "lab", "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "demo") {
		t.Fatalf("lab --help: %v\n%s", err, out)
	}
}
