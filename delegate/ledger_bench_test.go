package delegate

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
)

// BenchmarkLedgerSave measures one durable record write (write, fsync, rename, fsync of the
// directory): ADD makes one per attachment plus one.
func BenchmarkLedgerSave(b *testing.B) {
	l, err := OpenLedger(b.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	conf := json.RawMessage(`{"cniVersion":"1.1.0","name":"n","plugins":[{"type":"macvlan","master":"eth0","ipam":{"type":"host-local","ranges":[[{"subnet":"10.1.0.0/24"}]]}}]}`)
	rec := Record{ContainerID: "c", Netns: "/run/netns/x", Pod: PodRef{Namespace: "ns", Name: "p", UID: "u"}}
	for i := 0; i < 3; i++ {
		rec.Attachments = append(rec.Attachments, Entry{Spec: Spec{Network: fmt.Sprintf("ns/n%d", i), Ifname: fmt.Sprintf("net%d", i), Kind: KindCNI, Config: conf}, State: StateAdded})
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := l.Save(rec); err != nil {
			b.Fatal(err)
		}
	}
}
