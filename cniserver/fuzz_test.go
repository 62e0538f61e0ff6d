package cniserver

import "testing"

// FuzzParsePluginConf feeds the loom plugin's configuration parser what a runtime could put on
// stdin: it must never panic, and a parsed configuration always names a socket.
func FuzzParsePluginConf(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"loom","type":"loom","socket":"/run/loom/loom.sock","ledgerDir":"/var/lib/loom/ledger"}`))
	f.Add([]byte(`{"type":"loom","capabilities":{"portMappings":true},"runtimeConfig":{"portMappings":[]}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParsePluginConf(b)
		if err == nil && c.Socket == "" {
			t.Fatalf("parsed %q without a socket", b)
		}
	})
}
