// Package policykernel programs a policy.Ruleset into the kernel: it owns
// the nftables table "inet podnet-policy" in the network namespace it is
// given and touches nothing else: no other table, no other namespace, no
// link, route or sysctl.
//
// The table (as in agent/policy's package comment):
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
//	  eight sets shared by every pod, keyed first by the isolated pod's own
//	  address (D = in | eg):
//	  set D-a4 { type ipv4_addr . ipv4_addr; flags interval }   pod . peer range
//	  set D-p4 { type ipv4_addr . ipv4_addr . inet_proto . inet_service; flags interval }
//	  set D-a6, D-p6 likewise for IPv6
//	  per isolated pod and direction, a chain (its drop counter and NFLOG
//	  prefix are the pod's; its body is the same for every pod):
//	  chain in-<ID> {
//	    ip daddr . ip saddr @in-a4 return
//	    ip daddr . ip saddr . meta l4proto . th dport @in-p4 return
//	    ip6 daddr . ip6 saddr @in-a6 return
//	    ip6 daddr . ip6 saddr . meta l4proto . th dport @in-p6 return
//	    counter drop
//	  }
//	  chain eg-<ID> { the same with saddr . daddr and the eg- sets }
//
// A pod's peer ranges (Chain.Any4/Any6) and ports boxes (Ports4/Ports6)
// become one element per address of the pod of that family, the pod part
// a range of one address. Elements of different pods never overlap (their
// first field differs), and the compiler's ranges of one pod are
// disjoint. Each packet costs one established check, at most four map
// lookups and at most four set lookups: nothing grows with the number of
// pods or policies. The kernel finds a set by name in a list per table,
// chains in a hash table: a constant number of sets keeps programming
// linear in the number of pods.
//
// A Writer keeps what it believes the kernel holds (adopted from the table
// at Open, never flushed: a restarted agent keeps the rules in force until
// it applies its own difference) and sends each Apply as the difference to
// that state in one atomic netlink batch: a changed pod's element
// additions and removals in the shared sets, map element changes, chains
// added and removed, ordered so that a pod's elements and chain exist
// before a map element jumps to it and a pod loses its map entries before
// its chain goes. At Open the eight sets are read once and their elements
// attributed to pods by their first field through the maps; an element no
// map entry leads to is an orphan and goes on the next Apply. A batch the
// kernel rejects changes nothing; the Writer then reads the table again.
//
// A table of the previous layout (four sets per pod chain, in-<ID>-a4 and
// so on) is converted by the first Apply in two atomic batches: the first
// creates the shared sets and fills them with the elements of every pod
// chain that exists (nothing uses them yet); the second rewrites every
// pod chain's rules to use them and deletes the old sets, the maps left
// as they are. No packet sees a pod unfiltered at any moment, and none is
// dropped that is allowed before and after. (Reading of the kernel's
// commit: elements added to an interval, pipapo, set become visible only
// once every message of the batch has been committed, after the batch's
// rules went live, so in a single batch the rewritten rules would look
// at empty sets for a few microseconds. A newly isolated pod has the same
// moment, failing closed: its elements become visible just after its map
// entries.) Any other set in the table is deleted with the old ones.
//
// Cost: a batch holds only what differs, and pods whose rules did not
// change since the last Apply are skipped without rebuilding their
// elements, so a one-pod change is a batch of a few messages. Adoption
// lists each pod chain's rules with one raw netlink dump per chain (a
// dump of the whole table is quadratic in the kernel) and compares one
// chain of each rule shape in full. A shared set whose pods all go is
// deleted and made again rather than emptied element by element.
// Measured on a shared, busy 2-core machine (kernel 6.18, load average
// 3-4): 1,000 isolated pods with ~46 elements each (2,001 chains, 10,005
// rules, ~50,000 elements) take about 2.1 s to create and 0.3-0.5 s to
// adopt; a one-pod change about 45 ms (p99 90-100 ms); 10,000 pods with
// five elements each about 9-10 s to create and 2-2.5 s to adopt, a
// one-pod change 60-90 ms. The kernel time is now linear in the number
// of pods; what remains is the interval sets' (pipapo) own cost, which
// grows with the number of elements in the set: inserting reallocates
// the set's lookup table every 64 elements, and removing an element scans
// the set for it at commit. That makes a one-pod change cost in
// proportion to the elements of all pods in the sets it touches, and the
// creation of 10,000 pods about a third pipapo insertion and a third
// rules (five per chain).
//
// Option WithNFLOG adds, before each pod chain's counter drop, a rule
// `limit rate 10/second log prefix "<chain>" group N`.
//
// It talks to the kernel only through github.com/google/nftables and
// netlink sockets; it never runs nft, iptables or ip.
package policykernel
