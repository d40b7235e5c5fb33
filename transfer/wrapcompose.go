package transfer

import (
	"context"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/registry"
)

// Wrap keeps exactly the optional interfaces oras-go type-asserts that
// the wrapped target has: registry.ReferenceFetcher (RF),
// registry.ReferencePusher (RP), registry.Mounter (MO) and
// content.PredecessorFinder (PF). Go builds no type at run time, so each
// of the 16 combinations has its own: *wrapped with the method providers
// of the interfaces the target has.

// Bits of the interfaces a target has.
const (
	hasRF = 1 << iota
	hasRP
	hasMO
	hasPF
)

// Method providers, one per optional interface.
type (
	rfImpl struct{ w *wrapped }
	rpImpl struct{ w *wrapped }
	moImpl struct{ w *wrapped }
	pfImpl struct{ w *wrapped }
)

type (
	wrappedRF struct {
		*wrapped
		rfImpl
	}
	wrappedRP struct {
		*wrapped
		rpImpl
	}
	wrappedRFRP struct {
		*wrapped
		rfImpl
		rpImpl
	}
	wrappedMO struct {
		*wrapped
		moImpl
	}
	wrappedRFMO struct {
		*wrapped
		rfImpl
		moImpl
	}
	wrappedRPMO struct {
		*wrapped
		rpImpl
		moImpl
	}
	wrappedRFRPMO struct {
		*wrapped
		rfImpl
		rpImpl
		moImpl
	}
	wrappedPF struct {
		*wrapped
		pfImpl
	}
	wrappedRFPF struct {
		*wrapped
		rfImpl
		pfImpl
	}
	wrappedRPPF struct {
		*wrapped
		rpImpl
		pfImpl
	}
	wrappedRFRPPF struct {
		*wrapped
		rfImpl
		rpImpl
		pfImpl
	}
	wrappedMOPF struct {
		*wrapped
		moImpl
		pfImpl
	}
	wrappedRFMOPF struct {
		*wrapped
		rfImpl
		moImpl
		pfImpl
	}
	wrappedRPMOPF struct {
		*wrapped
		rpImpl
		moImpl
		pfImpl
	}
	wrappedRFRPMOPF struct {
		*wrapped
		rfImpl
		rpImpl
		moImpl
		pfImpl
	}
)

// compose returns w with the interfaces of mask.
func compose(w *wrapped, mask int) oras.Target {
	switch mask {
	case 0:
		return w
	case hasRF:
		return &wrappedRF{w, rfImpl{w}}
	case hasRP:
		return &wrappedRP{w, rpImpl{w}}
	case hasRF | hasRP:
		return &wrappedRFRP{w, rfImpl{w}, rpImpl{w}}
	case hasMO:
		return &wrappedMO{w, moImpl{w}}
	case hasRF | hasMO:
		return &wrappedRFMO{w, rfImpl{w}, moImpl{w}}
	case hasRP | hasMO:
		return &wrappedRPMO{w, rpImpl{w}, moImpl{w}}
	case hasRF | hasRP | hasMO:
		return &wrappedRFRPMO{w, rfImpl{w}, rpImpl{w}, moImpl{w}}
	case hasPF:
		return &wrappedPF{w, pfImpl{w}}
	case hasRF | hasPF:
		return &wrappedRFPF{w, rfImpl{w}, pfImpl{w}}
	case hasRP | hasPF:
		return &wrappedRPPF{w, rpImpl{w}, pfImpl{w}}
	case hasRF | hasRP | hasPF:
		return &wrappedRFRPPF{w, rfImpl{w}, rpImpl{w}, pfImpl{w}}
	case hasMO | hasPF:
		return &wrappedMOPF{w, moImpl{w}, pfImpl{w}}
	case hasRF | hasMO | hasPF:
		return &wrappedRFMOPF{w, rfImpl{w}, moImpl{w}, pfImpl{w}}
	case hasRP | hasMO | hasPF:
		return &wrappedRPMOPF{w, rpImpl{w}, moImpl{w}, pfImpl{w}}
	case hasRF | hasRP | hasMO | hasPF:
		return &wrappedRFRPMOPF{w, rfImpl{w}, rpImpl{w}, moImpl{w}, pfImpl{w}}
	}
	return w
}

// wrappedRepository is the Wrap of a *remote.Repository: every optional
// interface oras-go type-asserts, plus the repository's listing, deleting
// and reference parsing, passed through (listing pages are delivered once:
// they are not retried, so that fn never sees a page twice).
type wrappedRepository struct {
	*wrapped
	rfImpl
	rpImpl
	moImpl
	pfImpl
}

type repositoryExtras interface {
	registry.ReferrerLister
	registry.TagLister
	Delete(ctx context.Context, target ocispec.Descriptor) error
	ParseReference(reference string) (registry.Reference, error)
}

// Referrers implements registry.ReferrerLister.
func (w *wrappedRepository) Referrers(ctx context.Context, desc ocispec.Descriptor, artifactType string, fn func([]ocispec.Descriptor) error) error {
	if w.invalid != nil {
		return w.invalid
	}
	return redacted(w.t.(repositoryExtras).Referrers(ctx, desc, artifactType, fn))
}

// Tags implements registry.TagLister.
func (w *wrappedRepository) Tags(ctx context.Context, last string, fn func([]string) error) error {
	if w.invalid != nil {
		return w.invalid
	}
	return redacted(w.t.(repositoryExtras).Tags(ctx, last, fn))
}

// Delete implements content.Deleter.
func (w *wrappedRepository) Delete(ctx context.Context, target ocispec.Descriptor) error {
	return w.do(ctx, opDelete, target, func(ctx context.Context) error {
		return w.t.(repositoryExtras).Delete(ctx, target)
	})
}

// ParseReference lets oras-go's Tag and TagN resolve references the
// repository's way (and scope their auth), as on the repository itself.
func (w *wrappedRepository) ParseReference(reference string) (registry.Reference, error) {
	if w.invalid != nil {
		return registry.Reference{}, w.invalid
	}
	return w.t.(repositoryExtras).ParseReference(reference)
}
