// Package ipamtest provides an in-memory ipam.Store for tests of the packages that allocate
// addresses or reclaim them, without an API server.
package ipamtest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/loom-cni/loom/fabric/ipam"
)

// Verbs passed to Store.BeforeWrite.
const (
	VerbCreate = "create"
	VerbUpdate = "update"
	VerbDelete = "delete"
)

// Store is an in-memory ipam.Store that behaves as the API server does where the allocator
// relies on it: Create of an existing name fails with AlreadyExists, Create with a
// resourceVersion is refused, Update without one is invalid and with a stale one conflicts,
// Delete with a stale resourceVersion precondition conflicts, and a missing object is
// NotFound. Every write gets a new resourceVersion from one counter. It is safe for
// concurrent use; it hands out and keeps copies, never shared objects.
type Store struct {
	// BeforeWrite, when set, is called before each Create, Update and Delete takes effect,
	// outside the store's lock, with the verb and the object's name. A test uses it to let a
	// competing writer in first (writing with a context from Unhooked, so as not to call
	// itself), or returns an error to make the write fail with it. Set it while no write is
	// in flight.
	BeforeWrite func(verb, name string) error

	mu   sync.Mutex
	objs map[string]ipam.IPBlock
	rv   uint64
}

var _ ipam.Store = (*Store)(nil)

// NewStore returns an empty Store.
func NewStore() *Store {
	return &Store{objs: map[string]ipam.IPBlock{}}
}

var groupResource = ipam.GVR.GroupResource()

// List returns copies of the blocks whose labels match f, sorted by name.
func (s *Store) List(ctx context.Context, f ipam.Filter) ([]ipam.IPBlock, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ipam.IPBlock
	for _, name := range slices.Sorted(maps.Keys(s.objs)) {
		b := s.objs[name]
		if (f.Pool == "" || b.Labels[ipam.LabelPool] == f.Pool) && (f.Node == "" || b.Labels[ipam.LabelNode] == f.Node) {
			out = append(out, *b.DeepCopy())
		}
	}
	return out, nil
}

// Get returns a copy of the named block.
func (s *Store) Get(ctx context.Context, name string) (ipam.IPBlock, error) {
	if err := ctx.Err(); err != nil {
		return ipam.IPBlock{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.objs[name]
	if !ok {
		return ipam.IPBlock{}, apierrors.NewNotFound(groupResource, name)
	}
	return *b.DeepCopy(), nil
}

// Create stores a copy of b with a new resourceVersion, UID and creation time.
func (s *Store) Create(ctx context.Context, b ipam.IPBlock) (ipam.IPBlock, error) {
	if err := s.before(ctx, VerbCreate, b.Name); err != nil {
		return ipam.IPBlock{}, err
	}
	if err := validate(b); err != nil {
		return ipam.IPBlock{}, err
	}
	if b.ResourceVersion != "" {
		return ipam.IPBlock{}, apierrors.NewBadRequest("resourceVersion should not be set on objects to be created")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.objs[b.Name]; ok {
		return ipam.IPBlock{}, apierrors.NewAlreadyExists(groupResource, b.Name)
	}
	c := b.DeepCopy()
	c.UID = types.UID(fmt.Sprintf("uid-%s-%d", b.Name, s.rv+1))
	c.CreationTimestamp = metav1.NewTime(time.Now().Truncate(time.Second))
	c.Generation = 1
	s.store(c)
	return *c.DeepCopy(), nil
}

// Update replaces the stored block with a copy of b if b's resourceVersion is current.
func (s *Store) Update(ctx context.Context, b ipam.IPBlock) (ipam.IPBlock, error) {
	if err := s.before(ctx, VerbUpdate, b.Name); err != nil {
		return ipam.IPBlock{}, err
	}
	if err := validate(b); err != nil {
		return ipam.IPBlock{}, err
	}
	if b.ResourceVersion == "" {
		return ipam.IPBlock{}, apierrors.NewInvalid(ipam.GVR.GroupVersion().WithKind(ipam.Kind).GroupKind(), b.Name, field.ErrorList{
			field.Invalid(field.NewPath("metadata", "resourceVersion"), "", "must be specified for an update"),
		})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.objs[b.Name]
	if !ok {
		return ipam.IPBlock{}, apierrors.NewNotFound(groupResource, b.Name)
	}
	if old.ResourceVersion != b.ResourceVersion {
		return ipam.IPBlock{}, apierrors.NewConflict(groupResource, b.Name,
			errors.New("the object has been modified; please apply your changes to the latest version and try again"))
	}
	c := b.DeepCopy()
	c.UID, c.CreationTimestamp, c.Generation = old.UID, old.CreationTimestamp, old.Generation+1
	s.store(c)
	return *c.DeepCopy(), nil
}

// Delete deletes the named block; a non-empty resourceVersion must be current.
func (s *Store) Delete(ctx context.Context, name, resourceVersion string) error {
	if err := s.before(ctx, VerbDelete, name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.objs[name]
	if !ok {
		return apierrors.NewNotFound(groupResource, name)
	}
	if resourceVersion != "" && old.ResourceVersion != resourceVersion {
		return apierrors.NewConflict(groupResource, name, fmt.Errorf("the ResourceVersion in the precondition (%s) "+
			"does not match the ResourceVersion in record (%s). The object might have been modified",
			resourceVersion, old.ResourceVersion))
	}
	delete(s.objs, name)
	s.rv++
	return nil
}

// store records c under a new resourceVersion, with s.mu held.
func (s *Store) store(c *ipam.IPBlock) {
	s.rv++
	c.ResourceVersion = strconv.FormatUint(s.rv, 10)
	c.APIVersion, c.Kind = ipam.GVR.GroupVersion().String(), ipam.Kind
	s.objs[c.Name] = *c
}

func (s *Store) before(ctx context.Context, verb, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.BeforeWrite != nil && ctx.Value(unhookedKey{}) == nil {
		return s.BeforeWrite(verb, name)
	}
	return nil
}

type unhookedKey struct{}

// Unhooked returns a context whose writes skip BeforeWrite: the context for the writes of a
// competing writer that BeforeWrite lets in.
func Unhooked(ctx context.Context) context.Context {
	return context.WithValue(ctx, unhookedKey{}, true)
}

// validate refuses what the API server would: an object name that is not a DNS subdomain,
// and label values it does not accept.
func validate(b ipam.IPBlock) error {
	var errs field.ErrorList
	for _, msg := range validation.IsDNS1123Subdomain(b.Name) {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), b.Name, msg))
	}
	for k, v := range b.Labels {
		for _, msg := range validation.IsValidLabelValue(v) {
			errs = append(errs, field.Invalid(field.NewPath("metadata", "labels").Key(k), v, msg))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return apierrors.NewInvalid(ipam.GVR.GroupVersion().WithKind(ipam.Kind).GroupKind(), b.Name, errs)
}
