// Package policy is podnet's NetworkPolicy engine in pure form: the model
// (namespaces, pods, networking.k8s.io/v1 NetworkPolicies), the compiler
// from that model to the desired content of the nftables table
// "inet podnet-policy" on one node (a Ruleset value), the text rendering of
// a Ruleset (golden tests, `podnet policy dump`), and explain, which
// evaluates a packet against compiled Rulesets, never against the YAML.
//
// Entry points: ModelFromObjects (and PodFromAPI) build a Model from
// Kubernetes objects; Compile(model, node) gives the node's Ruleset, with
// the input it could not compile listed in Ruleset.Problems (failing
// closed); Render prints a Ruleset as nft text; Explain(src, dst, packet)
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
//	  map ing4 { type ipv4_addr : verdict }  pod address -> jump in-<ID>
//	  map ing6 { type ipv6_addr : verdict }
//	  map egr4 { type ipv4_addr : verdict }  pod address -> jump eg-<ID>
//	  map egr6 { type ipv6_addr : verdict }
//	  chain forward { type filter hook forward priority filter; policy accept;
//	    ct state established,related accept
//	    ip daddr vmap @ing4
//	    ip6 daddr vmap @ing6
//	    ip saddr vmap @egr4
//	    ip6 saddr vmap @egr6
//	  }
//	  eight shared sets, keyed first by the isolated pod's own address:
//	  set in-a4 { type ipv4_addr . ipv4_addr; flags interval }
//	      pod . peer range                      (peers allowed on every port)
//	  set in-p4 { type ipv4_addr . ipv4_addr . inet_proto . inet_service; flags interval }
//	      pod . peer range . protocol . port range
//	  set in-a6, in-p6 likewise for IPv6; eg-a4, eg-p4, eg-a6, eg-p6 for egress
//	  per isolated pod and direction (K = daddr . saddr for in, saddr . daddr
//	  for eg: the pod's own address first):
//	  chain in-<ID> {
//	    ip K @in-a4 return
//	    ip K . meta l4proto . th dport @in-p4 return
//	    ip6 K @in-a6 return
//	    ip6 K . meta l4proto . th dport @in-p6 return
//	    counter drop
//	  }
//
// The sets are shared, not per pod, because the kernel finds a set by
// name in a list: per-pod sets made programming cost grow with the square
// of the number of pods. Chains are hashed, so the per-pod chain (for its
// drop counter and log prefix) costs nothing per lookup.
//
// Each packet costs one established check, at most four map lookups, and at
// most four set lookups in one pod's chain: nothing grows with the number of
// pods or policies. Traffic between a pod and its own node uses the input
// and output hooks and is never filtered; pods no policy selects have no map
// entry and pass.
package policy
