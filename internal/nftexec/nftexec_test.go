package nftexec

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/loom-cni/loom/internal/netnstest"
)

// TestRunInNamespace checks that a table written through Run exists in the namespace it
// named and not in the caller's, that stdin reaches nft and that a refused script is an
// error carrying nft's complaint.
func TestRunInNamespace(t *testing.T) {
	nft, err := exec.LookPath("nft")
	if err != nil {
		t.Skip("needs the nft binary (nftables)")
	}
	name, _ := netnstest.New(t)
	path := netnstest.Path(name)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	const table = "loomt_nftexec"
	if _, err = Run(ctx, nft, path, "table inet "+table+" {\n\tset s {\n\t\ttype ipv6_addr\n\t}\n}\n", "-f", "-"); err != nil {
		t.Fatalf("write a table: %v", err)
	}
	out, err := Run(ctx, nft, path, "", "list", "table", "inet", table)
	if err != nil || !strings.Contains(string(out), "ipv6_addr") {
		t.Fatalf("list the table in the namespace: %v\n%s", err, out)
	}
	// The caller's namespace (the host's, for this test) must not have it.
	if hostOut, hostErr := Run(ctx, nft, "", "", "list", "table", "inet", table); hostErr == nil {
		t.Fatalf("the table is in the caller's namespace too:\n%s", hostOut)
	}
	if _, err := Run(ctx, nft, path, "table inet "+table+" { chain c { no-such-statement } }\n", "-f", "-"); err == nil ||
		!strings.Contains(err.Error(), "nft -f -") {
		t.Fatalf("a script nft refuses: got %v, want an error naming the arguments", err)
	}
	if _, err := Run(ctx, nft, "/run/netns/loomt-no-such-namespace", "", "list", "ruleset"); err == nil {
		t.Fatal("a namespace that does not exist: got no error")
	}
}
