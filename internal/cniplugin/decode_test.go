package cniplugin

import (
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/podnet/podnet/internal/cnierr"
)

// A config nested deeper than encoding/json allows is a code-6 error that
// says so in words, from Decode and from the spec library's own decoding
// (which runs first in a real plugin process; test/hostile TestHugeConfigs
// runs that path through the binary).
func TestDecodeTooDeep(t *testing.T) {
	deep := []byte(`{"cniVersion":"1.1.0","name":"n","x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`)
	var conf types.NetConf
	check := func(err error) {
		t.Helper()
		e, ok := err.(*types.Error)
		if !ok {
			t.Fatalf("%T %v, want *types.Error", err, err)
		}
		if e.Code != cnierr.DecodingFailure || !strings.HasPrefix(e.Msg, "bridge: config: JSON nested more than 10000 levels deep") {
			t.Fatalf("code %d %q, want 6 and the nesting named", e.Code, e.Msg)
		}
		if !strings.Contains(e.Details, "exceeded max depth") {
			t.Errorf("details %q lack the decoder's message", e.Details)
		}
	}
	check(Decode("bridge", deep, &conf))
	p := &Plugin{Type: "bridge"}
	check(p.reword(types.NewError(cnierr.DecodingFailure, "error unmarshall network config: invalid character '[' exceeded max depth", "")))
	if e := p.reword(types.NewError(cnierr.DecodingFailure, "other", "")); e.Msg != "other" {
		t.Errorf("unrelated error reworded: %q", e.Msg)
	}
	if p.reword(nil) != nil {
		t.Error("nil reworded")
	}
}
