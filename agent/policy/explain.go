package policy

import (
	"fmt"
	"net/netip"
	"strings"
)

// Packet is the first packet of a connection, as the forward hook sees it.
type Packet struct {
	Src   netip.Addr `json:"src"`
	Dst   netip.Addr `json:"dst"`
	Proto Proto      `json:"proto"`
	// Port is the destination port (ignored by sets for protocols other
	// than TCP, UDP and SCTP, which no ports set holds).
	Port uint16 `json:"port"`
}

// Explanation is the verdict on a Packet and why, per direction.
type Explanation struct {
	// Verdict is "allow" or "deny".
	Verdict string    `json:"verdict"`
	Packet  Packet    `json:"packet"`
	Egress  Direction `json:"egress"`
	Ingress Direction `json:"ingress"`
}

// Direction is one direction's part of an Explanation: egress is decided
// on the source pod's node, ingress on the destination pod's.
type Direction struct {
	// Pod is the "namespace/name" of the pod whose chain applies ("" when
	// no PodRules has the address in this direction).
	Pod string `json:"pod,omitempty"`
	// Isolated: a policy selects the pod for this direction.
	Isolated bool `json:"isolated"`
	// Allowed: the packet passes this direction (always when not
	// isolated).
	Allowed bool `json:"allowed"`
	// Policy and Rule are the first rule (in Chain.Rules order) that
	// allows the packet, when isolated and allowed.
	Policy string `json:"policy,omitempty"`
	Rule   *int   `json:"rule,omitempty"`
	// Policies are the policies isolating the pod, when isolated.
	Policies []string `json:"policies,omitempty"`
	// Reason is a short text: "no policy selects ...", "allowed by ns/p
	// egress[0]", or "default deny: selected by ns/a, ns/b".
	Reason string `json:"reason"`
}

// Explain evaluates p as the kernel does with the compiled Rulesets: src
// is the Ruleset of the node the source pod runs on (nil when the source
// is not a pod of a podnet node), dst the destination pod's (likewise).
// Egress is checked in src's chain for p.Src, ingress in dst's for p.Dst;
// an address no PodRules of the direction has is not isolated.
func Explain(src, dst *Ruleset, p Packet) Explanation {
	e := Explanation{Packet: p}
	e.Egress = explainDir(src, p.Src, p.Dst, p, false)
	e.Ingress = explainDir(dst, p.Dst, p.Src, p, true)
	e.Verdict = "deny"
	if e.Egress.Allowed && e.Ingress.Allowed {
		e.Verdict = "allow"
	}
	return e
}

func explainDir(rs *Ruleset, self, peer netip.Addr, p Packet, ingress bool) Direction {
	name := "egress"
	if ingress {
		name = "ingress"
	}
	var pr *PodRules
	var ch *Chain
	if rs != nil {
		for i := range rs.Pods {
			c := rs.Pods[i].Egress
			if ingress {
				c = rs.Pods[i].Ingress
			}
			if c != nil && containsAddr(rs.Pods[i].IPs, self) {
				pr, ch = &rs.Pods[i], c
				break
			}
		}
	}
	if ch == nil {
		return Direction{Allowed: true, Reason: fmt.Sprintf("no policy selects %s for %s", self, name)}
	}
	d := Direction{Pod: pr.Namespace + "/" + pr.Name, Isolated: true, Policies: ch.Policies}
	d.Allowed = chainAllows(ch, peer, p.Proto, p.Port)
	if !d.Allowed {
		d.Reason = "default deny: selected by " + strings.Join(ch.Policies, ", ")
		return d
	}
	for _, a := range ch.Rules {
		if allowMatches(a, peer, p.Proto, p.Port) {
			d.Policy = a.Policy
			rule := a.Rule
			d.Rule = &rule
			d.Reason = fmt.Sprintf("allowed by %s %s[%d]", a.Policy, name, a.Rule)
			return d
		}
	}
	d.Reason = "allowed by the sets, no rule matches (inconsistent Ruleset)"
	return d
}

// chainAllows is what the pod's chain does: peer in an any set, or the
// (peer, proto, port) tuple in a ports set.
func chainAllows(ch *Chain, peer netip.Addr, proto Proto, port uint16) bool {
	any, boxes := ch.Any4, ch.Ports4
	if !peer.Is4() {
		any, boxes = ch.Any6, ch.Ports6
	}
	if rangesContain(any, peer) {
		return true
	}
	for _, b := range boxes {
		if b.Contains(peer, proto, port) {
			return true
		}
	}
	return false
}

func allowMatches(a Allow, peer netip.Addr, proto Proto, port uint16) bool {
	if a.Peers != nil && !rangesContain(a.Peers, peer) {
		return false
	}
	if a.Ports == nil {
		return true
	}
	for _, pp := range a.Ports {
		if pp.Proto == proto && pp.Ports.Contains(port) {
			return true
		}
	}
	return false
}

// String is one line starting with the verdict, e.g. "allow tcp
// 10.0.0.1 -> 10.0.0.2:80: egress: no policy selects 10.0.0.1 for egress;
// ingress: allowed by ns/web ingress[0] (pod ns/web-1)".
func (e Explanation) String() string {
	dir := func(d Direction) string {
		if d.Pod != "" {
			return d.Reason + " (pod " + d.Pod + ")"
		}
		return d.Reason
	}
	return fmt.Sprintf("%s %s %s -> %s: egress: %s; ingress: %s", e.Verdict, e.Packet.Proto,
		e.Packet.Src, netip.AddrPortFrom(e.Packet.Dst, e.Packet.Port), dir(e.Egress), dir(e.Ingress))
}
