package ipam

import (
	"errors"
	"strings"
)

// ErrPoolExhausted is wrapped by the error Allocate returns when every block of a pool is
// claimed and the node's own blocks of it have no free address.
var ErrPoolExhausted = errors.New("IP pool exhausted")

// ErrIPv6Unsupported is wrapped by the error that refuses a pool or IPAM range of IPv6
// addresses.
var ErrIPv6Unsupported = errors.New("IPv6 pools are not supported yet")

// ConfigError is a mistake in a pool definition or an IPAM configuration that a person can
// fix. Callers find it with errors.As; Field tells them which setting is wrong.
type ConfigError struct {
	// Pool names the pool being validated; empty for an IPAM configuration.
	Pool string
	// Field is the setting at fault as its author wrote it: "blockSize" in a pool,
	// "ipam.range" in an IPAM configuration.
	Field string
	// Problem says what is wrong, lowercase, with the offending value.
	Problem string
	// Fix says what would make the problem go away.
	Fix string
	// Err is a sentinel such as ErrIPv6Unsupported, or the parse error behind the problem.
	Err error
}

// Error renders `pool "<pool>": <field>: <problem>: <fix>`, leaving out parts that are empty.
func (e *ConfigError) Error() string {
	var b strings.Builder
	if e.Pool != "" {
		b.WriteString("pool \"" + e.Pool + "\": ")
	}
	b.WriteString(e.Field + ": " + e.Problem)
	if e.Fix != "" {
		b.WriteString(": " + e.Fix)
	}
	return b.String()
}

// Unwrap returns the sentinel or parse error behind the problem.
func (e *ConfigError) Unwrap() error { return e.Err }
