package ipam

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"
)

// Store reads and writes IPBlocks. Its errors are the API server's, so that
// apierrors.IsNotFound, IsAlreadyExists and IsConflict tell what happened: Create of a name
// that exists fails with AlreadyExists, Update of a stale resourceVersion and Delete with a
// stale one fail with Conflict.
type Store interface {
	// List returns the blocks that match f, sorted by name.
	List(ctx context.Context, f Filter) ([]IPBlock, error)
	// Get returns the named block.
	Get(ctx context.Context, name string) (IPBlock, error)
	// Create creates b and returns it as stored, with its resourceVersion.
	Create(ctx context.Context, b IPBlock) (IPBlock, error)
	// Update replaces b if its resourceVersion is still current and returns it as stored.
	Update(ctx context.Context, b IPBlock) (IPBlock, error)
	// Delete deletes the named block; a non-empty resourceVersion makes it a precondition.
	Delete(ctx context.Context, name, resourceVersion string) error
}

// Filter selects blocks by their labels; an empty field matches any value.
type Filter struct {
	Pool string
	Node string
}

func (f Filter) selector() string {
	set := labels.Set{}
	if f.Pool != "" {
		set[LabelPool] = f.Pool
	}
	if f.Node != "" {
		set[LabelNode] = f.Node
	}
	return set.AsSelector().String()
}

// listPageSize bounds each List response, so that a large cluster's blocks arrive in pages
// instead of one response the API server has to build in memory.
const listPageSize = 500

// kubeStore is the Store of a cluster, through the dynamic client.
type kubeStore struct {
	res dynamic.NamespaceableResourceInterface
}

var _ Store = (*kubeStore)(nil)

// NewKubeStore returns a Store that keeps IPBlocks in the cluster client talks to.
func NewKubeStore(client dynamic.Interface) Store {
	return &kubeStore{res: client.Resource(GVR)}
}

func (s *kubeStore) List(ctx context.Context, f Filter) ([]IPBlock, error) {
	var out []IPBlock
	opts := metav1.ListOptions{LabelSelector: f.selector(), Limit: listPageSize}
	for {
		list, err := s.res.List(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("list IPBlocks %q: %w", opts.LabelSelector, err)
		}
		for i := range list.Items {
			b, err := FromUnstructured(&list.Items[i])
			if err != nil {
				return nil, err
			}
			out = append(out, *b)
		}
		if opts.Continue = list.GetContinue(); opts.Continue == "" {
			return out, nil
		}
	}
}

func (s *kubeStore) Get(ctx context.Context, name string) (IPBlock, error) {
	u, err := s.res.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return IPBlock{}, fmt.Errorf("get IPBlock %s: %w", name, err)
	}
	return value(FromUnstructured(u))
}

func (s *kubeStore) Create(ctx context.Context, b IPBlock) (IPBlock, error) {
	u, err := b.ToUnstructured()
	if err != nil {
		return IPBlock{}, err
	}
	if u, err = s.res.Create(ctx, u, metav1.CreateOptions{}); err != nil {
		return IPBlock{}, fmt.Errorf("create IPBlock %s: %w", b.Name, err)
	}
	return value(FromUnstructured(u))
}

func (s *kubeStore) Update(ctx context.Context, b IPBlock) (IPBlock, error) {
	u, err := b.ToUnstructured()
	if err != nil {
		return IPBlock{}, err
	}
	if u, err = s.res.Update(ctx, u, metav1.UpdateOptions{}); err != nil {
		return IPBlock{}, fmt.Errorf("update IPBlock %s: %w", b.Name, err)
	}
	return value(FromUnstructured(u))
}

func (s *kubeStore) Delete(ctx context.Context, name, resourceVersion string) error {
	var opts metav1.DeleteOptions
	if resourceVersion != "" {
		opts.Preconditions = &metav1.Preconditions{ResourceVersion: &resourceVersion}
	}
	if err := s.res.Delete(ctx, name, opts); err != nil {
		return fmt.Errorf("delete IPBlock %s: %w", name, err)
	}
	return nil
}

func value(b *IPBlock, err error) (IPBlock, error) {
	if err != nil {
		return IPBlock{}, err
	}
	return *b, nil
}
