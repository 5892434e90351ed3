package cniplugin

// DEL and ADD-time validation (docs/del.md).
//
// A runtime that sees ADD fail runs DEL to clean up, and retries that DEL
// until it succeeds: a DEL that refuses the same config as the ADD leaves
// the sandbox stuck for ever. So every plugin parses in two steps:
//
//   - Decode: the JSON (code 6 for a wrong type) and only the fields a verb
//     needs to find what the attachment made (network name, data and state
//     directories, the IPAM type, the flags that say which nftables chains
//     hold its rules). DEL and GC use this alone.
//   - Validate: everything else ADD refuses (values out of range, fields
//     this node cannot honour, conflicting options, a bad MAC). ADD, CHECK
//     and STATUS run it after Decode.
//
// A value DEL does need (a relative dataDir, a network name that escapes
// its directory) is refused by Decode: DEL cannot know where to look, and
// guessing could remove another network's state.

// Validator is a decoded config with the checks only ADD, CHECK and STATUS
// make. Validate may complete the config (e.g. parse a MAC into a field).
type Validator interface {
	Validate() error
}

// Validated runs c.Validate when decoding succeeded: Validated(Decode(...))
// is the full parse of ADD, CHECK and STATUS.
func Validated[C Validator](c C, err error) (C, error) {
	if err == nil {
		err = c.Validate()
	}
	if err != nil {
		var zero C
		return zero, err
	}
	return c, nil
}
