// Package policy is podnet's NetworkPolicy engine in pure form: the model
// (namespaces, pods, networking.k8s.io/v1 NetworkPolicies), the compiler
// from that model to the desired content of the nftables table
// "inet podnet-policy" on one node (a Ruleset value), the text rendering of
// a Ruleset (golden tests, `podnet policy dump`), and explain, which
// evaluates a packet against compiled Rulesets, never against the YAML.
//
// Entry points: ModelFromObjects (and PodFromAPI, ModelFrom) build a
// Model from Kubernetes objects; Compile(model, node) gives the node's
// Ruleset, with the input it could not compile listed in Ruleset.Problems
// (failing closed), and a Compiler does the same while reusing, per
// namespace, what an earlier compile resolved (the agent keeps one); Render prints a Ruleset as nft text; Explain(src, dst, packet)
// evaluates a packet on the Rulesets of the source's and destination's
// nodes exactly as the kernel sets do, naming the deciding policy and rule.
//
// It owns no kernel object and touches no datastore: it imports neither
// netlink, nftables, nor client-go. The agent feeds it (agent/), and
// agent/policykernel programs a Ruleset into the kernel.
//
// The table layout the Ruleset describes (docs/policy.md):
//
//	table inet podnet-policy
//	  map ing4 { type ipv4_addr : verdict }  pod address -> jump ingress-<H>
//	  map ing6 { type ipv6_addr : verdict }
//	  map egr4 { type ipv4_addr : verdict }  pod address -> jump egress-<H>
//	  map egr6 { type ipv6_addr : verdict }
//	  chain forward { type filter hook forward priority filter; policy accept;
//	    ct state established,related accept
//	    ip daddr vmap @ing4
//	    ip6 daddr vmap @ing6
//	    ip saddr vmap @egr4
//	    ip6 saddr vmap @egr6
//	  }
//	  peer sets, one per distinct peer (AddrSet), shared by every rule naming it:
//	  set pods4-<H> { type ipv4_addr }                  pods a peer selector matches
//	  set pods6-<H> { type ipv6_addr }
//	  set cidr4-<H> { type ipv4_addr; flags interval }  an ipBlock: cidr minus except
//	  set cidr6-<H> { type ipv6_addr; flags interval }
//	  port sets, one per distinct list of exact ports (PortSet):
//	  set ports-<H> { type inet_proto . inet_service }
//	  one chain per distinct profile (Profile): the pods with the same
//	  resolved rules share it; P = saddr for ingress, daddr for egress:
//	  chain ingress-<H> {
//	    ip P @pods4-<H> meta l4proto . th dport @ports-<H> return
//	    ip P @cidr4-<H> meta l4proto tcp th dport 30000-32767 return
//	    ip6 P @pods6-<H> return
//	    meta l4proto udp return
//	    counter drop
//	  }
//
// Nothing is multiplied by the number of pods a policy selects: a peer's
// members are in one set however many pods and rules use it, and pods
// with the same rules share one chain, so the table grows with the pods
// plus the policies' peers and ports, not with their product.
//
// Each packet of an established connection costs one conntrack check.
// The first packet of a connection costs at most two map lookups and, in
// each isolated pod's profile chain, one rule per rule of the policies
// that isolate that pod (each at most two set lookups): it grows with the
// policies that select the pod in question, never with the number of
// pods or of other policies. Traffic between a pod and its own node uses
// the input and output hooks and is never filtered; pods no policy
// selects have no map entry and pass.
package policy
