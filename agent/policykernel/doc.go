// Package policykernel programs a policy.Ruleset into the kernel: it owns
// the nftables table "inet podnet-policy" in the network namespace it is
// given (its maps, its forward base chain, and the per-pod chains and sets
// laid out in agent/policy's package comment) and touches nothing else: no
// other table, no other namespace, no link, route or sysctl.
//
// A Writer keeps what it believes the kernel holds (adopted from the table
// at Open, never flushed: a restarted agent keeps the rules in force until
// it applies its own difference) and sends each Apply as the difference to
// that state in one atomic netlink batch, ordered so that a pod's chain and
// sets exist and are filled before a map element jumps to them. A batch the
// kernel rejects changes nothing; the Writer then reads the table again.
//
// It talks to the kernel only through github.com/google/nftables and
// netlink sockets; it never runs nft, iptables or ip.
package policykernel
