package ipam

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// ReclaimPlan is what loom-controller gives back to the pools: the blocks of nodes that are
// gone, and the addresses of pods that are gone. Plan computes it; Apply carries it out.
type ReclaimPlan struct {
	// DeleteBlocks are blocks whose node no longer exists.
	DeleteBlocks []BlockRef
	// Releases are the allocations of pods that no longer exist, per block of a node that
	// does.
	Releases []BlockRelease
}

// BlockRef names a block as it was read, so that a change to it is made only if the block
// has not changed since.
type BlockRef struct {
	Name            string
	ResourceVersion string
	Pool            string
	CIDR            string
	Node            string
}

// BlockRelease lists allocations to remove from one block.
type BlockRelease struct {
	Block       BlockRef
	Allocations []Allocation
}

// Empty reports whether the plan changes nothing.
func (p ReclaimPlan) Empty() bool { return len(p.DeleteBlocks) == 0 && len(p.Releases) == 0 }

// String summarises the plan for a log line: the blocks it deletes, with their nodes, and
// how many addresses it releases in which blocks.
func (p ReclaimPlan) String() string {
	var parts []string
	for _, ref := range p.DeleteBlocks {
		parts = append(parts, fmt.Sprintf("delete %s of node %s", ref.Name, ref.Node))
	}
	for _, rel := range p.Releases {
		parts = append(parts, fmt.Sprintf("release %d in %s", len(rel.Allocations), rel.Block.Name))
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}

// Plan decides what to reclaim from blocks, given the names of the nodes and the UIDs of
// the pods that exist. It deletes the blocks of nodes that no longer exist, and releases
// the pod allocations whose pod no longer exists; it leaves alone everything younger than
// grace (a node's block may be claimed before the controller sees the node, an address
// allocated before it sees the pod), pod allocations without a pod UID (the node reconciles
// those against its runtime), and the node's own addresses while the node exists.
//
// An empty nodes or pods set plans nothing for it: it more likely means the set was not read
// than that the cluster has no nodes or pods.
func Plan(blocks []IPBlock, nodes map[string]bool, pods map[string]bool, now time.Time, grace time.Duration) ReclaimPlan {
	var plan ReclaimPlan
	for _, b := range blocks {
		ref := BlockRef{Name: b.Name, ResourceVersion: b.ResourceVersion, Pool: b.Spec.Pool, CIDR: b.Spec.CIDR, Node: b.Spec.Node}
		if len(nodes) > 0 && !nodes[b.Spec.Node] {
			if now.Sub(b.CreationTimestamp.Time) > grace {
				plan.DeleteBlocks = append(plan.DeleteBlocks, ref)
			}
			continue
		}
		if len(pods) == 0 {
			continue
		}
		var gone []Allocation
		for _, al := range b.Spec.Allocations {
			if al.Owner.Kind == OwnerPod && al.Owner.UID != "" && !pods[al.Owner.UID] && now.Sub(al.Since.Time) > grace {
				gone = append(gone, al)
			}
		}
		if len(gone) > 0 {
			plan.Releases = append(plan.Releases, BlockRelease{Block: ref, Allocations: gone})
		}
	}
	slices.SortFunc(plan.DeleteBlocks, func(x, y BlockRef) int { return cmp.Compare(x.Name, y.Name) })
	slices.SortFunc(plan.Releases, func(x, y BlockRelease) int { return cmp.Compare(x.Block.Name, y.Block.Name) })
	return plan
}

// Apply carries out plan against store and returns what it did. A block is deleted only if
// it has not changed since it was planned; one that has is left for the next plan. Planned
// allocations are removed from the block as it is then, re-read after each conflict, so an
// allocation the node made meanwhile is never lost. Apply goes on past a failure and
// returns every failure; what is already gone is not one.
func Apply(ctx context.Context, store Store, plan ReclaimPlan) (ReclaimPlan, error) {
	var done ReclaimPlan
	var errs []error
	for _, ref := range plan.DeleteBlocks {
		err := store.Delete(ctx, ref.Name, ref.ResourceVersion)
		switch {
		case err == nil:
			done.DeleteBlocks = append(done.DeleteBlocks, ref)
		case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		default:
			errs = append(errs, fmt.Errorf("reclaim block %s of node %s: %w", ref.Name, ref.Node, err))
		}
	}
	for _, rel := range plan.Releases {
		removed, err := release(ctx, store, rel)
		if err != nil {
			errs = append(errs, fmt.Errorf("reclaim addresses in block %s: %w", rel.Block.Name, err))
		}
		if len(removed.Allocations) > 0 {
			done.Releases = append(done.Releases, removed)
		}
	}
	return done, errors.Join(errs...)
}

// release removes rel's allocations from the current version of its block and returns the
// ones it removed.
func release(ctx context.Context, store Store, rel BlockRelease) (BlockRelease, error) {
	cur, err := store.Get(ctx, rel.Block.Name)
	if apierrors.IsNotFound(err) {
		return BlockRelease{}, nil
	}
	if err != nil {
		return BlockRelease{}, err
	}
	for attempt := 1; ; attempt++ {
		var keep, removed []Allocation
		for _, al := range cur.Spec.Allocations {
			if slices.ContainsFunc(rel.Allocations, al.same) {
				removed = append(removed, al)
			} else {
				keep = append(keep, al)
			}
		}
		if len(removed) == 0 {
			return BlockRelease{}, nil
		}
		next := cur.DeepCopy()
		next.Spec.Allocations = keep
		stored, err := store.Update(ctx, *next)
		switch {
		case err == nil:
			ref := rel.Block
			ref.ResourceVersion = stored.ResourceVersion
			return BlockRelease{Block: ref, Allocations: removed}, nil
		case apierrors.IsNotFound(err):
			return BlockRelease{}, nil
		case !apierrors.IsConflict(err) || attempt >= maxWriteAttempts:
			return BlockRelease{}, err
		}
		if cur, err = store.Get(ctx, rel.Block.Name); err != nil {
			if apierrors.IsNotFound(err) {
				return BlockRelease{}, nil
			}
			return BlockRelease{}, err
		}
	}
}
