package policy

import (
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestNftCheck feeds rendered Rulesets to `nft -c` (check only: the
// kernel validates the batch, including set element overlaps, and
// nothing is applied). It needs root and nft, so it runs only with
// PODNET_NFT_CHECK=1.
func TestNftCheck(t *testing.T) {
	if os.Getenv("PODNET_NFT_CHECK") != "1" {
		t.Skip("set PODNET_NFT_CHECK=1 (root, nft) to run")
	}
	dir := t.TempDir()
	check := func(name string, rs Ruleset) {
		t.Helper()
		path := filepath.Join(dir, name+".nft")
		if err := os.WriteFile(path, []byte(Render(rs)), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("nft", "-c", "-f", path).CombinedOutput(); err != nil {
			t.Fatalf("%s: nft -c: %v\n%s", name, err, out)
		}
	}
	for _, gc := range goldenCases {
		check(gc.name+"@"+gc.node, Compile(loadModel(t, gc.name), gc.node))
	}
	check("big", Compile(bigModel(300, 1000, 3, 10), "n0"))
	r := rand.New(rand.NewPCG(11, 12))
	for i := range 50 {
		check("random-"+string(rune('a'+i%26)), Compile(genModel(r), "n1"))
	}
}
