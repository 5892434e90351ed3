package policykernel

import (
	"strings"
	"testing"

	"github.com/google/nftables/expr"

	"github.com/podnet/podnet/agent/policy"
)

// verdicts renders the tail of each rule of rules from its first
// verdict-relevant expression after the match: "return", "drop" (counter
// drop), "log" (limit log), "goto <chain>".
func verdicts(rules [][]expr.Any) string {
	var out []string
	for _, r := range rules {
		switch v := r[len(r)-1].(type) {
		case *expr.Verdict:
			switch v.Kind {
			case expr.VerdictReturn:
				out = append(out, "return")
			case expr.VerdictDrop:
				if _, ok := r[len(r)-2].(*expr.Counter); !ok {
					out = append(out, "uncounted drop")
				} else {
					out = append(out, "drop")
				}
			case expr.VerdictGoto:
				out = append(out, "goto "+v.Chain)
			default:
				out = append(out, exprSig(v))
			}
		case *expr.Log:
			out = append(out, "log")
		default:
			out = append(out, exprSig(v))
		}
	}
	return strings.Join(out, ", ")
}

func TestProfileRulesActions(t *testing.T) {
	rules := []policy.Rule{
		{Action: policy.Deny, Proto: policy.TCP, Range: policy.PortRange{From: 80, To: 80}},
		{Action: policy.Pass, Proto: policy.UDP, Range: policy.PortRange{From: 0, To: 65535}},
		{Action: policy.Allow},
	}
	for _, c := range []struct {
		p        policy.Profile
		log      int
		want     string
		dropSigs int // rules that end in counter drop
	}{
		{policy.Profile{Name: "ingress-a", Rules: rules, Next: "ingress-b"}, -1,
			"drop, goto ingress-b, return, goto ingress-b", 1},
		{policy.Profile{Name: "ingress-a", Rules: rules, Next: "ingress-b"}, 3,
			"log, drop, goto ingress-b, return, goto ingress-b", 1},
		{policy.Profile{Name: "ingress-a", Rules: rules, Open: true}, -1,
			"drop, return, return", 1},
		{policy.Profile{Name: "ingress-a", Rules: rules}, -1,
			"drop, drop, return, drop", 3},
		{policy.Profile{Name: "ingress-a", Rules: rules}, 3,
			"log, drop, log, drop, return, log, drop", 3},
		{policy.Profile{Name: "ingress-a", Rules: rules[2:], Open: true, Next: "ingress-b"}, -1,
			"return, goto ingress-b", 0},
		{policy.Profile{Name: "ingress-a", Open: true}, 3, "", 0},
	} {
		got := profileRules(&c.p, nil, nil, c.log)
		if v := verdicts(got); v != c.want {
			t.Errorf("%+v log %d: %s, want %s", c.p, c.log, v, c.want)
		}
		// Read back as the kernel lists it, the signature's drops are
		// what droppedBy sums.
		if n := strings.Count(rulesSig(got), "counter;"+dropSig+";"); n != c.dropSigs {
			t.Errorf("%+v: %d counted drops, want %d", c.p, n, c.dropSigs)
		}
	}
	// The log rule of a Deny has the Deny's match.
	got := profileRules(&policy.Profile{Name: "egress-a", Egress: true, Rules: rules[:1]}, nil, nil, 3)
	if len(got[0]) != len(got[1]) || exprSig(got[0][1]) != exprSig(got[1][1]) {
		t.Errorf("Deny's log rule: %s", rulesSig(got[:2]))
	}
}

func TestDesiredNext(t *testing.T) {
	prof := func(name, next string, eg bool) policy.Profile {
		return policy.Profile{Name: name, Next: next, Egress: eg}
	}
	for _, c := range []struct {
		profiles []policy.Profile
		err      string
	}{
		{[]policy.Profile{prof("ingress-a", "ingress-b", false), prof("ingress-b", "", false)}, ""},
		{[]policy.Profile{prof("ingress-a", "ingress-c", false), prof("ingress-b", "", false)}, "not a profile"},
		{[]policy.Profile{prof("egress-b", "", true), prof("ingress-a", "egress-b", false)}, "not a profile"},
		{[]policy.Profile{prof("ingress-a", "ingress-a", false)}, "loop"},
		{[]policy.Profile{prof("ingress-a", "ingress-b", false), prof("ingress-b", "ingress-c", false), prof("ingress-c", "ingress-b", false)}, "loop"},
		{[]policy.Profile{{Name: "ingress-a", Rules: []policy.Rule{{Action: policy.Pass + 1}}}}, "action"},
	} {
		rs := policy.Ruleset{Profiles: c.profiles}
		s, err := desired(&rs, nil, map[string]string{}, -1)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%+v: %v", c.profiles, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%+v: %v, want %q", c.profiles, err, c.err)
		case c.err == "" && (len(s.chains["ingress-a"].jumps) != 1 || s.chains["ingress-a"].jumps[0] != "ingress-b"):
			t.Errorf("jumps: %+v", s.chains["ingress-a"])
		}
	}
}
