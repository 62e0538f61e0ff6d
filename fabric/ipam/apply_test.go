package ipam_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/loom-cni/loom/fabric/ipam"
	"github.com/loom-cni/loom/fabric/ipam/ipamtest"
)

func TestApply(t *testing.T) {
	store := ipamtest.NewStore()
	ctx := context.Background()
	a := newAllocator(t, store, "node-a", nil)
	b := newAllocator(t, store, "node-b", nil)
	c := newAllocator(t, store, "node-c", nil)
	for i := range 3 {
		mustAllocate(t, a, clusterPool, pod(i, "eth0"))
	}
	mustAllocate(t, a, clusterPool, ipam.Owner{Kind: ipam.OwnerNode, Name: "vtep"})
	mustAllocate(t, b, clusterPool, pod(10, "eth0"))
	mustAllocate(t, c, clusterPool, pod(20, "eth0"))

	blocks, err := store.List(ctx, ipam.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	// Nodes b and c are gone, and so are pods 1 and 2.
	nodes := map[string]bool{"node-a": true}
	pods := map[string]bool{"uid-0": true}
	plan := ipam.Plan(blocks, nodes, pods, time.Now().Add(time.Hour), 10*time.Minute)
	if len(plan.DeleteBlocks) != 2 || len(plan.Releases) != 1 || len(plan.Releases[0].Allocations) != 2 {
		t.Fatalf("Plan() = %+v, want node-b's and node-c's blocks deleted and two of node-a's addresses released", plan)
	}

	// Between plan and apply, node-a allocates again and node-c comes back.
	fresh, _ := mustAllocate(t, a, clusterPool, pod(3, "eth0"))
	mustAllocate(t, c, clusterPool, pod(21, "eth0"))

	done, err := ipam.Apply(ctx, store, plan)
	if err != nil {
		t.Fatal(err)
	}
	if len(done.DeleteBlocks) != 1 || done.DeleteBlocks[0].Node != "node-b" {
		t.Errorf("Apply() deleted %+v, want only node-b's block: node-c's changed after the plan", done.DeleteBlocks)
	}
	if len(done.Releases) != 1 || len(done.Releases[0].Allocations) != 2 {
		t.Errorf("Apply() released %+v, want the addresses of pods 1 and 2", done.Releases)
	}
	var held []string
	for _, blk := range checkStore(t, store) {
		if blk.Spec.Node == "node-b" {
			t.Errorf("node-b's block %s survived", blk.Name)
		}
		if blk.Spec.Node == "node-a" {
			for _, al := range blk.Spec.Allocations {
				held = append(held, al.Owner.ContainerID+al.Owner.Name)
			}
		}
	}
	// The allocation node-a made after the plan survives the conflict it caused.
	if len(held) != 3 || held[0] != "container-0pod-0" || held[1] != "vtep" || held[2] != "container-3pod-3" {
		t.Errorf("node-a's block holds %v, want container-0, vtep and the fresh %s of container-3", held, fresh)
	}

	// Applying the same plan again finds nothing left to do.
	again, err := ipam.Apply(ctx, store, plan)
	if err != nil || !again.Empty() {
		t.Errorf("second Apply() = %+v, %v, want nothing done", again, err)
	}

	// A failing write is reported, and does not stop the rest.
	store.BeforeWrite = func(verb, name string) error {
		if verb == ipamtest.VerbDelete {
			return errors.New("etcd is on fire")
		}
		return nil
	}
	blocks, _ = store.List(ctx, ipam.Filter{})
	plan = ipam.Plan(blocks, map[string]bool{"node-a": true}, map[string]bool{"uid-x": true}, time.Now().Add(time.Hour), 0)
	done, err = ipam.Apply(ctx, store, plan)
	if err == nil || len(done.DeleteBlocks) != 0 || len(done.Releases) != 1 {
		t.Errorf("Apply() with failing deletes = %+v, %v, want the failure and node-a's releases", done, err)
	}
}
