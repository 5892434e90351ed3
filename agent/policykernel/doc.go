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
// Cost: a batch holds only what differs, and pods whose rules did not
// change since the last Apply are skipped without rebuilding their sets,
// so a one-pod change at 1,000 isolated pods is a batch of a few messages
// (tens of milliseconds). Creating a table from scratch and adopting one
// grow with the square of the number of sets: the kernel finds a set by
// name in a list per table, and the layout has eight sets per isolated
// pod (8-12 s and 5-7 s at 1,000 pods, 8,004 sets, on a busy 2-core
// machine, nearly all of it kernel time).
//
// Option WithNFLOG adds, before each pod chain's counter drop, a rule
// `limit rate 10/second log prefix "<chain>" group N`.
//
// It talks to the kernel only through github.com/google/nftables and
// netlink sockets; it never runs nft, iptables or ip.
package policykernel
