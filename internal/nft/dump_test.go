package nft

import (
	"errors"
	"reflect"
	"testing"

	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	vnl "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// fakeDump is a dump that the kernel reports with errs[i] on try i (nil
// once errs runs out), sending the objects of the try.
type fakeDump struct {
	errs  []error
	tries int
}

func (f *fakeDump) exec(each func(msg []byte) bool) error {
	try := f.tries
	f.tries++
	objs := []string{"a", "b", "c"}
	if try < len(f.errs) {
		// An interrupted try lists something else (an element skipped,
		// one repeated).
		objs = []string{"a", "a", "x"}
	}
	for _, o := range objs {
		if !each(append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, o...)) {
			break
		}
	}
	if try < len(f.errs) {
		return f.errs[try]
	}
	return nil
}

func decodeString(b []byte) ([]string, error) {
	if string(b) == "bad" {
		return nil, errors.New("bad message")
	}
	return []string{string(b)}, nil
}

func TestConsistentDumpRetriesInterrupted(t *testing.T) {
	intr := vnl.ErrDumpInterrupted
	f := &fakeDump{errs: []error{intr, unix.EINTR, intr}}
	got, err := consistentDump(f.exec, decodeString)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a", "b", "c"}; !reflect.DeepEqual(got, want) {
		t.Errorf("listed %q, want only the consistent try's %q", got, want)
	}
	if f.tries != 4 {
		t.Errorf("%d tries, want 4", f.tries)
	}
}

func TestConsistentDumpGivesUp(t *testing.T) {
	errs := make([]error, 100)
	for i := range errs {
		errs[i] = vnl.ErrDumpInterrupted
	}
	f := &fakeDump{errs: errs}
	got, err := consistentDump(f.exec, decodeString)
	if !errors.Is(err, vnl.ErrDumpInterrupted) || got != nil {
		t.Errorf("always interrupted: %q, %v", got, err)
	}
	if f.tries < 2 || f.tries >= len(errs) {
		t.Errorf("%d tries: want a few, bounded", f.tries)
	}
}

func TestConsistentDumpErrors(t *testing.T) {
	// A missing table or set lists nothing, at once.
	f := &fakeDump{errs: []error{unix.ENOENT}}
	if got, err := consistentDump(f.exec, decodeString); got != nil || err != nil || f.tries != 1 {
		t.Errorf("ENOENT: %q, %v after %d tries", got, err, f.tries)
	}
	// Other errors are not retried.
	f = &fakeDump{errs: []error{unix.EPERM}}
	if got, err := consistentDump(f.exec, decodeString); got != nil || !errors.Is(err, unix.EPERM) || f.tries != 1 {
		t.Errorf("EPERM: %q, %v after %d tries", got, err, f.tries)
	}
	// Nor is a message that does not decode.
	tries := 0
	bad := func(each func([]byte) bool) error {
		tries++
		each([]byte{0, 0, 0, 0, 'o', 'k'})
		each([]byte("\x00\x00\x00\x00bad"))
		return nil
	}
	if got, err := consistentDump(bad, decodeString); got != nil || err == nil || tries != 1 {
		t.Errorf("bad message: %q, %v after %d tries", got, err, tries)
	}
}

func TestDecodeElemList(t *testing.T) {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, "t")
	ae.String(unix.NFTA_SET_ELEM_LIST_SET, "s")
	ae.Nested(unix.NFTA_SET_ELEM_LIST_ELEMENTS, func(list *netlink.AttributeEncoder) error {
		list.Nested(unix.NFTA_LIST_ELEM, func(el *netlink.AttributeEncoder) error {
			el.Nested(unix.NFTA_SET_ELEM_KEY, func(d *netlink.AttributeEncoder) error {
				d.Bytes(unix.NFTA_DATA_VALUE, []byte{10, 0, 0, 1})
				return nil
			})
			el.Nested(unix.NFTA_SET_ELEM_DATA, func(d *netlink.AttributeEncoder) error {
				d.Bytes(unix.NFTA_DATA_VALUE, []byte{0, 80})
				return nil
			})
			el.Bytes(unix.NFTA_SET_ELEM_USERDATA, userdata.AppendString(nil, userdata.NFTNL_UDATA_SET_ELEM_COMMENT, "owner\x00"))
			return nil
		})
		list.Nested(unix.NFTA_LIST_ELEM, func(el *netlink.AttributeEncoder) error {
			el.Nested(unix.NFTA_SET_ELEM_KEY, func(d *netlink.AttributeEncoder) error {
				d.Bytes(unix.NFTA_DATA_VALUE, []byte{10, 0, 0, 2})
				return nil
			})
			return nil
		})
		return nil
	})
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeElemList(b)
	if err != nil {
		t.Fatal(err)
	}
	want := []SetElement{
		{Key: []byte{10, 0, 0, 1}, Val: []byte{0, 80}, Comment: "owner"},
		{Key: []byte{10, 0, 0, 2}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded %+v, want %+v", got, want)
	}
}
