package nxtest

import (
	"strings"
	"testing"
)

// Refused is one config ADD refuses and DEL must still accept (docs/del.md):
// bad is the config, Env the CNI_ARGS with it, Field what ADD's error must
// name.
type Refused struct {
	Bad   []byte
	Env   string
	Field string
}

// DelAfterRefused runs issue 18's DEL rule for one refused config: the
// runtime's cleanup DEL after the refused ADD succeeds; then an attachment
// ADDed with good under container ID id is DELed twice with the refused
// config, both succeeding. It returns the attachment's pod for the caller's
// assertions that nothing of it is left.
func (e *Env) DelAfterRefused(t *testing.T, r Refused, good []byte, id, ifName string) (pod string) {
	t.Helper()
	a := e.Args(r.Bad, "refused-"+id, e.Pod(), ifName)
	a.Args = r.Env
	if _, err := e.Add(a); err == nil || !strings.Contains(err.Error(), r.Field) {
		t.Fatalf("ADD: %v, want an error naming %s", err, r.Field)
	}
	if err := e.Del(a); err != nil {
		t.Fatalf("DEL after the refused ADD: %v", err)
	}
	pod = e.Pod()
	e.MustAdd(e.Args(good, id, pod, ifName))
	a = e.Args(r.Bad, id, pod, ifName)
	a.Args = r.Env
	for n := 1; n <= 2; n++ {
		if err := e.Del(a); err != nil {
			t.Fatalf("DEL #%d with the refused config: %v", n, err)
		}
	}
	return pod
}
