// Package etc holds the files packages install under /etc, embedded so the
// supervisor can print its default config and the tests can load it.
package etc

import _ "embed"

// DefaultConfig is etc/config.yaml, the config packages install.
//
//go:embed config.yaml
var DefaultConfig []byte
