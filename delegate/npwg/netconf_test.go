package npwg

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/containernetworking/cni/libcni"
)

// canonical re-encodes JSON so that tests compare values, not key order or spacing.
func canonical(t *testing.T, s string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("test JSON %s: %v", s, err)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func TestLoadNetConfig(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		cniArgs map[string]any
		want    string
		caps    map[string]bool
	}{
		{
			name: "single plugin becomes a list with name and version injected",
			raw:  `{"type":"macvlan","master":"eth1"}`,
			want: `{"name":"net-a","cniVersion":"1.0.0","plugins":[{"type":"macvlan","master":"eth1","name":"net-a","cniVersion":"1.0.0"}]}`,
		},
		{
			name: "single plugin keeps its own name and version",
			raw:  `{"name":"mine","cniVersion":"0.3.1","type":"macvlan"}`,
			want: `{"name":"mine","cniVersion":"0.3.1","plugins":[{"name":"mine","cniVersion":"0.3.1","type":"macvlan"}]}`,
		},
		{
			name: "empty name is injected",
			raw:  `{"name":"","plugins":[{"type":"bridge"}]}`,
			want: `{"name":"net-a","cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}`,
		},
		{
			name: "list keeps name and version",
			raw:  `{"name":"mine","cniVersion":"0.4.0","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}`,
			want: `{"name":"mine","cniVersion":"0.4.0","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}`,
			caps: map[string]bool{"portMappings": true},
		},
		{
			name: "cniVersions means no injected cniVersion",
			raw:  `{"cniVersions":["0.4.0","1.0.0"],"plugins":[{"type":"bridge"}]}`,
			want: `{"name":"net-a","cniVersions":["0.4.0","1.0.0"],"plugins":[{"type":"bridge"}]}`,
		},
		{
			name: "large numbers survive unchanged",
			raw:  `{"type":"x","big":9007199254740993,"mtu":9000,"ratio":0.25}`,
			want: `{"name":"net-a","cniVersion":"1.0.0","plugins":[{"type":"x","big":9007199254740993,"mtu":9000,"ratio":0.25,"name":"net-a","cniVersion":"1.0.0"}]}`,
		},
		{
			name: "capabilities only when true",
			raw:  `{"plugins":[{"type":"a","capabilities":{"ips":true,"mac":false}},{"type":"b","capabilities":{"bandwidth":true}}]}`,
			want: `{"name":"net-a","cniVersion":"1.0.0","plugins":[{"type":"a","capabilities":{"ips":true,"mac":false}},{"type":"b","capabilities":{"bandwidth":true}}]}`,
			caps: map[string]bool{"ips": true, "bandwidth": true},
		},
		{
			name:    "cni-args go into every plugin and win over the config's",
			raw:     `{"plugins":[{"type":"a","args":{"cni":{"keep":1,"mode":"old"},"other":true}},{"type":"b"}]}`,
			cniArgs: map[string]any{"mode": "new", "vlan": json.Number("100")},
			want: `{"name":"net-a","cniVersion":"1.0.0","plugins":[` +
				`{"type":"a","args":{"cni":{"keep":1,"mode":"new","vlan":100},"other":true}},` +
				`{"type":"b","args":{"cni":{"mode":"new","vlan":100}}}]}`,
		},
		{
			name:    "cni-args into a single plugin",
			raw:     `{"type":"a"}`,
			cniArgs: map[string]any{"x": "y"},
			want:    `{"name":"net-a","cniVersion":"1.0.0","plugins":[{"type":"a","name":"net-a","cniVersion":"1.0.0","args":{"cni":{"x":"y"}}}]}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := loadNetConfig([]byte(tt.raw), "net-a", "1.0.0", tt.cniArgs)
			if err != nil {
				t.Fatalf("loadNetConfig: %v", err)
			}
			if c := canonical(t, string(got.bytes)); c != canonical(t, tt.want) {
				t.Errorf("config\n got %s\nwant %s", c, canonical(t, tt.want))
			}
			if !strings.Contains(string(got.bytes), "9007199254740993") && strings.Contains(tt.raw, "9007199254740993") {
				t.Errorf("large integer was rewritten: %s", got.bytes)
			}
			if tt.caps == nil {
				tt.caps = map[string]bool{}
			}
			if !reflect.DeepEqual(got.caps, tt.caps) {
				t.Errorf("caps = %v, want %v", got.caps, tt.caps)
			}
			list, err := libcni.NetworkConfFromBytes(got.bytes)
			if err != nil || list.Name != got.name {
				t.Errorf("libcni: %v, name %q, want %q", err, list.Name, got.name)
			}
		})
	}
}

func TestLoadNetConfigErrors(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		cniArgs map[string]any
	}{
		{"not JSON", `{"type":`, nil},
		{"trailing data", `{"type":"a"} {}`, nil},
		{"not an object", `["a"]`, nil},
		{"neither type nor plugins", `{"name":"x"}`, nil},
		{"both type and plugins", `{"type":"a","plugins":[{"type":"b"}]}`, nil},
		{"empty plugins", `{"plugins":[]}`, nil},
		{"plugins not a list", `{"plugins":{"type":"a"}}`, nil},
		{"plugin not an object", `{"plugins":["a"]}`, nil},
		{"plugin without type", `{"plugins":[{"name":"x"}]}`, nil},
		{"empty type", `{"type":""}`, nil},
		{"type not a string", `{"type":5}`, nil},
		{"type is a path", `{"type":"../../tmp/evil"}`, nil},
		{"name not a string", `{"name":5,"type":"a"}`, nil},
		{"name invalid for CNI", `{"name":"bad name","type":"a"}`, nil},
		{"cniVersion not a string", `{"cniVersion":1,"type":"a"}`, nil},
		{"unknown cniVersion", `{"cniVersion":"9.9.9","type":"a"}`, nil},
		{"capabilities not an object", `{"type":"a","capabilities":["ips"]}`, nil},
		{"args not an object with cni-args", `{"type":"a","args":"x"}`, map[string]any{"a": "b"}},
		{"args.cni not an object with cni-args", `{"type":"a","args":{"cni":[1]}}`, map[string]any{"a": "b"}},
		{"cniVersions invalid for libcni", `{"cniVersions":["x.y"],"plugins":[{"type":"a"}]}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := loadNetConfig([]byte(tt.raw), "net-a", "1.0.0", tt.cniArgs); err == nil {
				t.Errorf("loadNetConfig(%s) = %s, want an error", tt.raw, got.bytes)
			}
		})
	}
}

func TestConfFile(t *testing.T) {
	dir := fstest.MapFS{
		"00-broken.conf":        {Data: []byte(`{not json`)},
		"10-loom.conflist":      {Data: []byte(`{"name":"loom-net","plugins":[{"type":"loom"}]}`)},
		"20-macvlan.json":       {Data: []byte(`{"name":"storage","type":"macvlan"}`)},
		"30-dup.conf":           {Data: []byte(`{"name":"storage","type":"ipvlan"}`)},
		"40-readme.txt":         {Data: []byte(`{"name":"readme","type":"x"}`)},
		"50-dir.conf/x.conf":    {Data: []byte(`{"name":"in-dir","type":"x"}`)},
		"60-named-by-file.conf": {Data: []byte(`{"name":"other","type":"x"}`)},
	}
	tests := []struct {
		name       string
		want       string
		byFileName bool
		wantFile   string
		wantErr    bool
	}{
		{name: "by name field", want: "loom-net", wantFile: "10-loom.conflist"},
		{name: "first in lexical order wins", want: "storage", wantFile: "20-macvlan.json"},
		{name: "by file base name", want: "60-named-by-file", byFileName: true, wantFile: "60-named-by-file.conf"},
		{name: "file base name not used for NADs", want: "60-named-by-file", wantErr: true},
		{name: "other extensions ignored", want: "readme", wantErr: true},
		{name: "subdirectories ignored", want: "in-dir", wantErr: true},
		{name: "broken file asked for by name", want: "00-broken", byFileName: true, wantErr: true},
		{name: "missing", want: "nope", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file, raw, err := confFile(dir, tt.want, tt.byFileName)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("confFile(%q) = %s, want an error", tt.want, file)
				}
				if tt.want == "nope" && !strings.Contains(err.Error(), "00-broken.conf") {
					t.Errorf("error %q does not list the unreadable file", err)
				}
				return
			}
			if err != nil || file != tt.wantFile || len(raw) == 0 {
				t.Errorf("confFile(%q) = %q, %v; want %q", tt.want, file, err, tt.wantFile)
			}
		})
	}
	if _, _, err := confFile(nil, "x", true); err == nil {
		t.Error("confFile(nil dir) succeeded")
	}
}
