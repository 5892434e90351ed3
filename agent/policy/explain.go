package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Packet is the first packet of a connection, as the forward hook sees it.
type Packet struct {
	Src   netip.Addr `json:"src"`
	Dst   netip.Addr `json:"dst"`
	Proto Proto      `json:"proto"`
	// Port is the destination port (ignored for protocols other than TCP,
	// UDP and SCTP: every port match names one of those, so only the
	// rules without a port match can match them).
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
	// Pod is the "namespace/name" of the pod whose map entry applies (""
	// when no PodRules has the address in this direction); its profile
	// chain may be shared with other pods.
	Pod string `json:"pod,omitempty"`
	// Isolated: a policy selects the pod for this direction.
	Isolated bool `json:"isolated"`
	// Allowed: the packet passes this direction (always when not
	// isolated).
	Allowed bool `json:"allowed"`
	// Policy and Rule are the policy rule of the first rule of the pod's
	// Profile (in Profile.Rules order) that matches the packet, when
	// isolated and allowed.
	Policy string `json:"policy,omitempty"`
	Rule   *int   `json:"rule,omitempty"`
	// Policies are the policies isolating the pod, when isolated.
	Policies []string `json:"policies,omitempty"`
	// Tier, Priority and Action are set when a ClusterNetworkPolicy rule
	// decided (Policy is then its name); Passed lists the Admin-tier
	// policies whose Pass rule handed the packet on, in order.
	Tier     string   `json:"tier,omitempty"`
	Priority *int32   `json:"priority,omitempty"`
	Action   string   `json:"action,omitempty"`
	Passed   []string `json:"passed,omitempty"`
	// Reason is a short text: "no policy selects ...", "allowed by ns/p
	// egress[0]", or "default deny: selected by ns/a, ns/b".
	Reason string `json:"reason"`
}

// Explain evaluates p as the kernel does with the compiled Rulesets: src
// is the Ruleset of the node the source pod runs on (nil when the source
// is not a pod of a podnet node), dst the destination pod's (likewise).
// Egress is checked in src's profile chain for p.Src (the one its egress
// map jumps to), ingress in dst's for p.Dst: the profile's rules in
// order, the first that matches deciding, none matching a drop. An
// address no PodRules of the direction has is not isolated.
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

// explainDir evaluates one direction in rs: self is the address whose map
// entry applies, peer the other end's.
func explainDir(rs *Ruleset, self, peer netip.Addr, p Packet, ingress bool) Direction {
	name := "egress"
	if ingress {
		name = "ingress"
	}
	var pr *PodRules
	var chain string
	if rs != nil {
		for i := range rs.Pods {
			c := rs.Pods[i].EgressChain
			if ingress {
				c = rs.Pods[i].IngressChain
			}
			if c != "" && containsAddr(rs.Pods[i].IPs, self) {
				pr, chain = &rs.Pods[i], c
				break
			}
		}
	}
	if pr == nil {
		return Direction{Allowed: true, Reason: fmt.Sprintf("no policy selects %s for %s", self, name)}
	}
	d := Direction{Pod: pr.Namespace + "/" + pr.Name, Isolated: true}
	port := p.Port
	if p.Proto != TCP && p.Proto != UDP && p.Proto != SCTP {
		port = 0
	}
	for hops := 0; chain != "" && hops < 3; hops++ {
		prof := rs.FindProfile(chain)
		if prof == nil {
			d.Allowed = false
			d.Reason = "default deny: chain " + chain + " missing (inconsistent Ruleset)"
			return d
		}
		d.Policies = mergePolicies(d.Policies, prof.Policies)
		next := prof.Next
		decided := false
		for _, r := range prof.Rules {
			if !rs.Matches(r, peer, p.Proto, port) {
				continue
			}
			idx := r.Index
			if r.Tier == "" {
				d.Allowed, d.Policy, d.Rule = true, r.Policy, &idx
				d.Reason = fmt.Sprintf("allowed by %s %s[%d]", r.Policy, name, r.Index)
				return d
			}
			prio := r.Priority
			src := fmt.Sprintf("%s tier ClusterNetworkPolicy %s (priority %d) %s[%d]", r.Tier, r.Policy, r.Priority, name, r.Index)
			switch r.Action {
			case Pass:
				d.Passed = append(d.Passed, fmt.Sprintf("%s %s[%d]", r.Policy, name, r.Index))
				decided = true
			case Deny:
				d.Policy, d.Rule, d.Tier, d.Priority, d.Action = r.Policy, &idx, r.Tier, &prio, r.Action.String()
				d.Reason = "denied by " + src
				return d
			default:
				d.Allowed = true
				d.Policy, d.Rule, d.Tier, d.Priority, d.Action = r.Policy, &idx, r.Tier, &prio, r.Action.String()
				d.Reason = "accepted by " + src
				return d
			}
			break
		}
		if decided && next == "" {
			d.Allowed = true
			d.Reason = "passed by " + strings.Join(d.Passed, ", ") + "; no lower tier selects the pod: allowed"
			return d
		}
		if next != "" {
			chain = next
			continue
		}
		if prof.Open {
			d.Allowed = true
			d.Reason = "no cluster policy rule matched (" + strings.Join(prof.Policies, ", ") + "): allowed"
			if len(d.Passed) > 0 {
				d.Reason = "passed by " + strings.Join(d.Passed, ", ") + "; " + d.Reason
			}
			return d
		}
		d.Reason = "default deny: selected by " + strings.Join(prof.Policies, ", ")
		if len(d.Passed) > 0 {
			d.Reason = "passed by " + strings.Join(d.Passed, ", ") + "; " + d.Reason
		}
		return d
	}
	d.Reason = "default deny: chain " + chain + " loops (inconsistent Ruleset)"
	return d
}

// mergePolicies appends the names of b not in a.
func mergePolicies(a, b []string) []string {
	for _, x := range b {
		if !slices.Contains(a, x) {
			a = append(a, x)
		}
	}
	return a
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
