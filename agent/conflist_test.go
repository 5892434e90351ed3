package agent

import (
	"encoding/json"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// A runtime whose libcni knows spec 1.1 picks 1.1.0 from cniVersions; an
// older one (containerd 1.6) reads cniVersion, 1.0.0, and works.
func TestConflistVersions(t *testing.T) {
	l, err := libcni.ConfListFromBytes(Conflist(""))
	if err != nil {
		t.Fatal(err)
	}
	if l.CNIVersion != "1.1.0" {
		t.Errorf("libcni picked %q, want 1.1.0", l.CNIVersion)
	}
	var raw struct {
		CNIVersion string `json:"cniVersion"`
	}
	if err := json.Unmarshal(Conflist(""), &raw); err != nil || raw.CNIVersion != "1.0.0" {
		t.Errorf("cniVersion for older runtimes = %q (%v), want 1.0.0", raw.CNIVersion, err)
	}
}
