package policy

import (
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestRenderCompiledGolden carries the compile fixtures (tenants, policies, pods) through
// to the rules a node writes: each testdata/compile/*.yaml is compiled, its host table and
// every pod table rendered, and the result compared with testdata/render/compiled-*.nft
// ("-update" rewrites them). As root, nft checks every table.
func TestRenderCompiledGolden(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "compile", "*.yaml"))
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no compile fixtures: %v", err)
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		t.Run(name, func(t *testing.T) {
			s, node := loadFixture(t, in)
			rs := Compile(s, node)
			tables := []struct {
				title string
				table NftTable
			}{{"node " + node, Render(rs.Host, HostTable)}}
			for _, key := range slices.SortedFunc(maps.Keys(rs.Pods), func(a, b PodKey) int {
				return strings.Compare(a.String(), b.String())
			}) {
				tables = append(tables, struct {
					title string
					table NftTable
				}{"pod " + key.String(), Render(rs.Pods[key], PodTable)})
				if len(rs.Pods[key].Links) > 0 {
					tables = append(tables, struct {
						title string
						table NftTable
					}{"pod " + key.String() + " links", RenderLinks(rs.Pods[key])})
				}
			}
			var b strings.Builder
			for _, tb := range tables {
				b.WriteString("# " + tb.title + "\n" + tb.table.String() + "\n")
			}
			got := b.String()
			assertGolden(t, filepath.Join("testdata", "render", "compiled-"+name+".nft"), []byte(got))
			if os.Geteuid() != 0 {
				return
			}
			nft := nftForTest(t)
			for _, tb := range tables {
				f := filepath.Join(t.TempDir(), "table.nft")
				if err := os.WriteFile(f, []byte(tb.table.String()), 0o644); err != nil {
					t.Fatal(err)
				}
				// A link table's chains hook on interfaces, which nft checks exist.
				script := `for ifc in eth0 net1 net2; do ip link add "$ifc" type veth peer name "p$ifc"; done; "$0" -c -f "$1"`
				if out, err := exec.Command("unshare", "--net", "sh", "-c", script, nft, f).CombinedOutput(); err != nil {
					t.Errorf("%s: nft -c: %v\n%s", tb.title, err, out)
				}
			}
		})
	}
}
