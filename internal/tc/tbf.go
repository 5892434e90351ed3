// Package tc owns podnet's traffic-control plumbing for the bandwidth
// plugin: token-bucket (tbf) qdiscs, the ingress qdisc with a u32 match-all
// filter that redirects a device's received packets to an ifb device, and
// the ifb devices themselves. Everything is programmed through netlink
// (vishvananda/netlink); no tc or ip binary is run.
//
// The parameter math (rate and burst in bits to the kernel's tbf rate in
// bytes, buffer in scheduler ticks and limit in bytes) is a set of pure
// functions over plain values, unit-tested without root. The functions that
// touch the kernel act on the calling thread's network namespace and take
// link indexes; they never decide policy (which device to shape, what to
// name an ifb): that is the bandwidth plugin's job.
//
// Design note — why tbf and why these numbers. tbf is classless and cheap:
// one qdisc per direction per pod. The kernel's tbf keeps its bucket size
// ("buffer") in scheduler ticks, not bytes: /proc/net/psched gives the tick
// length (64 ns on every current kernel), and netlink.TickInUsec reads it.
// The bucket depth in time is burst/rate, so buffer = burst/rate seconds in
// ticks. The queue limit is the bytes that drain in a fixed 25 ms latency
// at the configured rate plus one full burst, as `tc ... tbf latency 25ms`
// and the reference plugin compute it. The kernel stores the bucket as a
// u32 count of nanoseconds, so a bucket deeper than ~4.29 s is clamped;
// Params clamps the same way so that what we program is what the kernel
// reports back, and CHECK can compare exact values.
package tc

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Latency is the queueing delay tbf's limit is sized for.
const Latency = 25 * time.Millisecond

// MaxBurstBits is the largest burst the plugin accepts: the burst in bytes
// must fit the kernel's u32 (the reference plugin's "4GB" limit).
const MaxBurstBits = uint64(math.MaxUint32) * 8

// MinRateBits is the smallest rate: tbf's rate is in bytes per second.
const MinRateBits = 8

// TBF is a tbf qdisc's parameters in the kernel's units, as netlink.Tbf
// takes them and reads them back.
type TBF struct {
	Rate   uint64 // bytes per second
	Buffer uint32 // bucket size in scheduler ticks
	Limit  uint32 // queue length in bytes
}

// Validation errors, so callers can name the field.
var (
	ErrRateTooLow    = fmt.Errorf("rate must be at least %d bits per second", MinRateBits)
	ErrBurstTooLarge = errors.New("burst cannot be more than 4GB (34359738360 bits)")
	ErrBurstZero     = errors.New("burst must be at least 8 bits (1 byte)")
)

// Params converts a rate (bits per second) and a burst (bits) to tbf's
// parameters, given the length of a scheduler tick (ticksPerUsec, from
// netlink.TickInUsec: 15.625 when a tick is 64 ns).
func Params(rateBits, burstBits uint64, ticksPerUsec float64) (TBF, error) {
	if rateBits < MinRateBits {
		return TBF{}, ErrRateTooLow
	}
	if burstBits/8 >= math.MaxUint32 {
		return TBF{}, ErrBurstTooLarge
	}
	if burstBits < 8 {
		return TBF{}, ErrBurstZero
	}
	rate := rateBits / 8
	burst := burstBits / 8
	return TBF{
		Rate:   rate,
		Buffer: BufferTicks(rate, burst, ticksPerUsec),
		Limit:  LimitBytes(rate, burst, Latency),
	}, nil
}

// BufferTicks is the time to send burst bytes at rate bytes/s, in ticks,
// clamped to what the kernel can hold (MaxBufferTicks). It mirrors
// netlink.Xmittime (and iproute2's tc_calc_xmittime) without the global
// clock, so it is testable anywhere.
func BufferTicks(rate, burst uint64, ticksPerUsec float64) uint32 {
	usec := float64(burst) * float64(time.Second/time.Microsecond) / float64(rate)
	ticks := math.Floor(usec) * ticksPerUsec
	if max := float64(MaxBufferTicks(ticksPerUsec)); ticks > max {
		return uint32(max)
	}
	return uint32(ticks)
}

// MaxBufferTicks is the largest bucket the kernel reports back unchanged: it
// keeps the bucket as a u32 of nanoseconds (PSCHED_TICKS2NS then min ~0U).
func MaxBufferTicks(ticksPerUsec float64) uint32 {
	nsPerTick := 1000 / ticksPerUsec
	return uint32(math.Floor(float64(math.MaxUint32) / nsPerTick))
}

// LimitBytes is the queue length: what drains in latency at rate plus one
// burst, clamped to the kernel's u32.
func LimitBytes(rate, burst uint64, latency time.Duration) uint32 {
	l := math.Floor(float64(rate)*latency.Seconds()) + float64(burst)
	if l > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(l)
}

// EffectiveBurstBytes is the burst the kernel actually grants for p: the
// bytes that drain in the bucket time. It is smaller than the configured
// burst only when the bucket was clamped.
func EffectiveBurstBytes(p TBF, ticksPerUsec float64) uint64 {
	usec := float64(p.Buffer) / ticksPerUsec
	return uint64(float64(p.Rate) * usec / 1e6)
}

// Equal reports whether the kernel's read-back got matches want. Rounding in
// the kernel's tick conversions may move the buffer by one tick.
func (want TBF) Equal(got TBF) bool {
	d := int64(want.Buffer) - int64(got.Buffer)
	return want.Rate == got.Rate && want.Limit == got.Limit && d >= -1 && d <= 1
}

func (p TBF) String() string {
	return fmt.Sprintf("rate %d B/s buffer %d ticks limit %d B", p.Rate, p.Buffer, p.Limit)
}
