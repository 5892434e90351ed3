// Package fuzzcheck holds the properties every podnet fuzz target asserts
// about a parser's output: an error is a *types.Error whose code is one the
// CNI spec defines (or 999, internal), whose message names the plugin and
// prints as CNI error JSON; a result converts to every spec version without
// panicking. It is imported only by *_fuzz_test.go files and the test
// packages under test/; it owns no state and touches nothing on the host.
package fuzzcheck

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// SpecCodes are the error codes a podnet plugin may return: SPEC.md 1.1.0
// "Error" section (1-7, 11, 50, 51) and 999 (types.ErrInternal).
var SpecCodes = map[uint]bool{1: true, 2: true, 3: true, 4: true, 5: true, 6: true, 7: true, 11: true, 50: true, 51: true, 999: true}

// Versions are the spec versions podnet supports.
var Versions = []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// Err checks err (nil is fine): a *types.Error with a spec code, a message
// starting with "plugin:" and an encoding as CNI error JSON. It returns the
// error (nil when err is nil).
func Err(t testing.TB, plugin string, err error) *types.Error {
	t.Helper()
	if err == nil {
		return nil
	}
	var te *types.Error
	if !errors.As(err, &te) {
		t.Fatalf("%s: error is %T, not *types.Error: %v", plugin, err, err)
	}
	if !SpecCodes[te.Code] {
		t.Fatalf("%s: error code %d is not a spec code: %v", plugin, te.Code, te)
	}
	if te.Msg == "" {
		t.Fatalf("%s: error code %d with empty message", plugin, te.Code)
	}
	if plugin != "" && !strings.HasPrefix(te.Msg, plugin+":") {
		t.Fatalf("%s: error message does not name the plugin: %q", plugin, te.Msg)
	}
	b, jerr := json.Marshal(te)
	if jerr != nil {
		t.Fatalf("%s: error does not encode as JSON: %v", plugin, jerr)
	}
	var back types.Error
	if jerr := json.Unmarshal(b, &back); jerr != nil || back.Code != te.Code {
		t.Fatalf("%s: error JSON %s does not decode back: %v", plugin, b, jerr)
	}
	return te
}

// Result checks that res converts to every spec version (errors are
// allowed for the old ones, panics are not) and that its 1.1.0 JSON
// re-parses into a result with the same JSON.
func Result(t testing.TB, res *current.Result) {
	t.Helper()
	if res == nil {
		return
	}
	for _, v := range Versions {
		r, err := res.GetAsVersion(v)
		if err == nil {
			if _, err := json.Marshal(r); err != nil {
				t.Fatalf("result as %s does not marshal: %v", v, err)
			}
		}
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatalf("result does not marshal: %v", err)
	}
	back, err := current.NewResult(b)
	if err != nil {
		t.Fatalf("result JSON %s does not parse back: %v", b, err)
	}
	b2, err := json.Marshal(back)
	if err != nil || string(b2) != string(b) {
		t.Fatalf("result JSON changed on a round trip:\n%s\n%s", b, b2)
	}
}
