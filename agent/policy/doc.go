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
//	  per isolated pod and direction (D = in | eg, K = saddr for in, daddr for eg):
//	  set D-<ID>-a4 { type ipv4_addr; flags interval }   peers allowed on every port
//	  set D-<ID>-p4 { type ipv4_addr . inet_proto . inet_service; flags interval }
//	  set D-<ID>-a6, D-<ID>-p6 likewise for IPv6
//	  chain D-<ID> {
//	    ip K @D-<ID>-a4 return
//	    ip K . meta l4proto . th dport @D-<ID>-p4 return
//	    ip6 K @D-<ID>-a6 return
//	    ip6 K . meta l4proto . th dport @D-<ID>-p6 return
//	    counter drop
//	  }
//
// Each packet costs one established check, at most four map lookups, and at
// most four set lookups in one pod's chain: nothing grows with the number of
// pods or policies. Traffic between a pod and its own node uses the input
// and output hooks and is never filtered; pods no policy selects have no map
// entry and pass.
package policy
