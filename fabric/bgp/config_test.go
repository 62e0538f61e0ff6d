package bgp

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestNewRejectsInvalidConfig(t *testing.T) {
	routerID := netip.MustParseAddr("192.0.2.10")
	peer := func(addr string, asn uint32) Peer {
		return Peer{Address: netip.MustParseAddr(addr), ASN: asn}
	}
	tests := []struct {
		name string
		cfg  Config
		want string // part of the error
	}{
		{"no router id", Config{}, "router id"},
		{"ipv6 router id", Config{RouterID: netip.MustParseAddr("2001:db8::1")}, "router id"},
		{"unspecified router id", Config{RouterID: netip.IPv4Unspecified()}, "router id"},
		{"reserved asn", Config{RouterID: routerID, ASN: 23456}, "asn"},
		{"bad listen address", Config{RouterID: routerID, ListenAddresses: []netip.Addr{{}}}, "listen address"},
		{"listen port too big", Config{RouterID: routerID, ListenPort: 70000}, "listen port"},
		{"negative listen port", Config{RouterID: routerID, ListenPort: -1}, "listen port"},
		{"peer asn 0", Config{RouterID: routerID, Peers: []Peer{peer("192.0.2.1", 0)}}, "asn: 0"},
		{"peer without address", Config{RouterID: routerID, Peers: []Peer{{ASN: 65000}}}, "unicast IPv4"},
		{"ipv6 peer", Config{RouterID: routerID, Peers: []Peer{peer("2001:db8::2", 65000)}}, "unicast IPv4"},
		{"peer is router id", Config{RouterID: routerID, Peers: []Peer{peer("192.0.2.10", 65000)}}, "own router id"},
		{"duplicate peers", Config{RouterID: routerID, Peers: []Peer{peer("192.0.2.1", 65000), peer("192.0.2.1", 65001)}}, "listed twice"},
		{"peer port", Config{RouterID: routerID, Peers: []Peer{{Address: netip.MustParseAddr("192.0.2.1"), ASN: 65000, Port: 65536}}}, "port"},
		{"long password", Config{RouterID: routerID, Peers: []Peer{{Address: netip.MustParseAddr("192.0.2.1"), ASN: 65000, Password: strings.Repeat("x", 81)}}}, "password"},
		{"restart time too long", Config{RouterID: routerID, RestartTime: time.Hour + time.Second*600}, "restart time"},
		{"restart time too short", Config{RouterID: routerID, RestartTime: time.Millisecond}, "restart time"},
		{"hold time too short", Config{RouterID: routerID, HoldTime: 2 * time.Second}, "hold time"},
		{"keepalive not below hold", Config{RouterID: routerID, HoldTime: 9 * time.Second, KeepaliveInterval: 9 * time.Second}, "keepalive"},
		{"connect retry too short", Config{RouterID: routerID, ConnectRetry: time.Millisecond}, "connect retry"},
		{"accept prefix not a network", Config{RouterID: routerID, AcceptPrefixes: []netip.Prefix{netip.MustParsePrefix("10.244.0.1/16")}}, "accept prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg, newRecordingSink(), testLogger(t))
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("New: got %v, want an ErrInvalidConfig", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: error %q does not mention %q", err, tt.want)
			}
		})
	}
}

func TestNewAppliesDefaults(t *testing.T) {
	sp, err := New(Config{
		RouterID: netip.MustParseAddr("::ffff:192.0.2.10"),
		Peers:    []Peer{{Address: netip.MustParseAddr("192.0.2.1"), ASN: 65000}},
	}, newRecordingSink(), testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	got := sp.cfg
	checks := []struct {
		name      string
		got, want any
	}{
		{"asn", got.ASN, uint32(DefaultASN)},
		{"router id", got.RouterID, netip.MustParseAddr("192.0.2.10")},
		{"listen port", got.ListenPort, DefaultPort},
		{"restart time", got.RestartTime, DefaultRestartTime},
		{"hold time", got.HoldTime, DefaultHoldTime},
		{"keepalive", got.KeepaliveInterval, DefaultHoldTime / 3},
		{"connect retry", got.ConnectRetry, DefaultConnectRetry},
		{"peer port", got.Peers[0].Port, DefaultPort},
		{"graceful restart", got.DisableGracefulRestart, false},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestNewRequiresSink(t *testing.T) {
	_, err := New(Config{RouterID: netip.MustParseAddr("192.0.2.10")}, nil, testLogger(t))
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("New without sink: got %v, want ErrInvalidConfig", err)
	}
}

func TestSetMeshPeersValidation(t *testing.T) {
	cfg := Config{
		RouterID: netip.MustParseAddr("192.0.2.10"),
		Peers:    []Peer{{Address: netip.MustParseAddr("192.0.2.254"), ASN: 65000}},
	}
	peer := func(addr string) Peer { return Peer{Address: netip.MustParseAddr(addr)} }
	tests := []struct {
		name    string
		peers   []Peer
		wantErr bool
		want    []netip.Addr // mesh recorded when there is no error
	}{
		{"empty", nil, false, nil},
		{"own address skipped", []Peer{peer("192.0.2.10"), peer("192.0.2.11")}, false,
			[]netip.Addr{netip.MustParseAddr("192.0.2.11")}},
		{"configured peer skipped", []Peer{peer("192.0.2.254"), peer("192.0.2.12")}, false,
			[]netip.Addr{netip.MustParseAddr("192.0.2.12")}},
		{"duplicate", []Peer{peer("192.0.2.11"), peer("192.0.2.11")}, true, nil},
		{"invalid address", []Peer{{}}, true, nil},
		{"reserved asn", []Peer{{Address: netip.MustParseAddr("192.0.2.11"), ASN: 65535}}, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sp, err := New(cfg, newRecordingSink(), testLogger(t))
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			err = sp.SetMeshPeers(context.Background(), tt.peers)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidConfig) {
					t.Fatalf("SetMeshPeers: got %v, want ErrInvalidConfig", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("SetMeshPeers: %v", err)
			}
			if len(sp.mesh) != len(tt.want) {
				t.Fatalf("mesh: got %v, want %v", sp.mesh, tt.want)
			}
			for _, a := range tt.want {
				p, ok := sp.mesh[a]
				if !ok {
					t.Fatalf("mesh: %s missing from %v", a, sp.mesh)
				}
				if p.ASN != DefaultASN || p.Port != DefaultPort {
					t.Errorf("mesh peer %s: got asn %d port %d, want the node's asn and port 179", a, p.ASN, p.Port)
				}
			}
		})
	}
}

func TestAdvertiseRejectsBadPrefixes(t *testing.T) {
	sp, err := New(Config{RouterID: netip.MustParseAddr("192.0.2.10")}, newRecordingSink(), testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	for _, p := range []netip.Prefix{{}, netip.MustParsePrefix("10.244.0.65/26"), netip.MustParsePrefix("fd00::/64")} {
		if err := sp.Advertise(context.Background(), []netip.Prefix{p}); err == nil {
			t.Errorf("Advertise %s: got no error", p)
		}
	}
}

func TestStoppedSpeakerRefusesCalls(t *testing.T) {
	sp, err := New(Config{RouterID: netip.MustParseAddr("192.0.2.10")}, newRecordingSink(), testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	sp.Stop()
	sp.Stop()
	ctx := context.Background()
	if err := sp.Start(ctx); !errors.Is(err, ErrStopped) {
		t.Errorf("Start: got %v, want ErrStopped", err)
	}
	if err := sp.Advertise(ctx, nil); !errors.Is(err, ErrStopped) {
		t.Errorf("Advertise: got %v, want ErrStopped", err)
	}
	if err := sp.SetMeshPeers(ctx, nil); !errors.Is(err, ErrStopped) {
		t.Errorf("SetMeshPeers: got %v, want ErrStopped", err)
	}
	if _, err := sp.Peers(ctx); !errors.Is(err, ErrStopped) {
		t.Errorf("Peers: got %v, want ErrStopped", err)
	}
}
