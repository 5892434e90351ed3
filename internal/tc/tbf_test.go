package tc

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

const tick64ns = 15.625 // ticks per µs when a tick is 64 ns (every current kernel)

func TestParams(t *testing.T) {
	for _, tt := range []struct {
		name        string
		rate, burst uint64 // bits
		want        TBF
	}{
		// 20 Mbit/s, 2 Mbit burst: 2.5 MB/s, a 250 kB bucket = 100 ms = 1,562,500 ticks;
		// limit = 25 ms at 2.5 MB/s (62,500 B) + 250,000 B.
		{"20Mbit", 20_000_000, 2_000_000, TBF{Rate: 2_500_000, Buffer: 1_562_500, Limit: 312_500}},
		// 1 Gbit/s, 512 kbit: 125 MB/s, 64 KiB = 524.288 µs → 524 µs (whole µs, as tc) = 8187 ticks;
		// limit 3,125,000 + 65,536.
		{"1Gbit", 1_000_000_000, 524_288, TBF{Rate: 125_000_000, Buffer: 8187, Limit: 3_190_536}},
		// Rates not divisible by 8 lose the remainder, as in the reference.
		{"odd", 1001, 1001, TBF{Rate: 125, Buffer: 15_625_000, Limit: 3 + 125}},
		// Kubernetes' "unlimited" burst (MaxInt32 bits) at 1 Mbit/s: 2147 s of bucket is more
		// than the kernel's u32 nanoseconds; clamped to 2^32-1 ns = 67,108,863 ticks.
		{"k8s-burst", 1_000_000, math.MaxInt32, TBF{Rate: 125_000, Buffer: 67_108_863, Limit: 3125 + 268_435_455}},
		// Rate above 4 GB/s (u32) stays 64-bit; limit clamps to u32.
		{"huge", 800_000_000_000, 8 * 4_000_000_000, TBF{Rate: 100_000_000_000, Buffer: 625_000, Limit: math.MaxUint32}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Params(tt.rate, tt.burst, tick64ns)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("Params(%d, %d) = %+v, want %+v", tt.rate, tt.burst, got, tt.want)
			}
		})
	}
}

func TestParamsErrors(t *testing.T) {
	for _, tt := range []struct {
		rate, burst uint64
		want        error
	}{
		{7, 800, ErrRateTooLow},
		{0, 800, ErrRateTooLow},
		{8000, 7, ErrBurstZero},
		{8000, 8 * math.MaxUint32, ErrBurstTooLarge},
		{8000, math.MaxUint64, ErrBurstTooLarge},
	} {
		if _, err := Params(tt.rate, tt.burst, tick64ns); !errors.Is(err, tt.want) {
			t.Errorf("Params(%d, %d) error = %v, want %v", tt.rate, tt.burst, err, tt.want)
		}
	}
	if _, err := Params(8000, 8*(math.MaxUint32-1), tick64ns); err != nil {
		t.Errorf("largest burst rejected: %v", err)
	}
}

func TestMaxBufferTicks(t *testing.T) {
	if got := MaxBufferTicks(tick64ns); got != math.MaxUint32>>6 {
		t.Errorf("MaxBufferTicks = %d, want %d", got, uint32(math.MaxUint32>>6))
	}
	// A 1 µs tick (old kernels' psched) allows 4294 s → 4,294,967 ticks.
	if got := MaxBufferTicks(1); got != 4_294_967 {
		t.Errorf("MaxBufferTicks(1) = %d", got)
	}
}

func TestLimitBytes(t *testing.T) {
	if got := LimitBytes(1_000_000, 10_000, 25*time.Millisecond); got != 35_000 {
		t.Errorf("LimitBytes = %d, want 35000", got)
	}
}

// The buffer matches netlink's own helper (iproute2's tc_calc_xmittime)
// with this machine's clock, where the bucket is not clamped.
func TestBufferMatchesNetlink(t *testing.T) {
	tick := TicksPerUsec()
	for _, c := range [][2]uint64{{2_500_000, 250_000}, {125_000_000, 65_536}, {1000, 1500}, {12_345, 6_789}} {
		if got, want := BufferTicks(c[0], c[1], tick), netlink.Xmittime(c[0], uint32(c[1])); got != want {
			t.Errorf("BufferTicks(%d, %d) = %d, netlink.Xmittime = %d", c[0], c[1], got, want)
		}
	}
}

func TestEffectiveBurst(t *testing.T) {
	p, _ := Params(20_000_000, 2_000_000, tick64ns)
	if got := EffectiveBurstBytes(p, tick64ns); got != 250_000 {
		t.Errorf("EffectiveBurstBytes = %d, want 250000", got)
	}
	p, _ = Params(1_000_000, math.MaxInt32, tick64ns)
	if got := EffectiveBurstBytes(p, tick64ns); got != 536_870 { // 4.29 s at 125 kB/s
		t.Errorf("clamped EffectiveBurstBytes = %d, want 536870", got)
	}
}

func TestEqual(t *testing.T) {
	a := TBF{Rate: 1, Buffer: 100, Limit: 5}
	for _, b := range []TBF{{1, 99, 5}, {1, 101, 5}, a} {
		if !a.Equal(b) {
			t.Errorf("%v should equal %v", a, b)
		}
	}
	for _, b := range []TBF{{1, 98, 5}, {2, 100, 5}, {1, 100, 6}} {
		if a.Equal(b) {
			t.Errorf("%v should not equal %v", a, b)
		}
	}
}
