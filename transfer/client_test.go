package transfer

import (
	"net/http"
	"reflect"
	"testing"

	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// rewire copies a *remote.Repository field by field (it holds locks and
// cannot be copied whole). A field oras-go adds must be copied too, or a
// caller's setting is silently lost: this test names each one.
func TestRewireCopiesEveryExportedField(t *testing.T) {
	copied := map[string]bool{
		"Client": true, "Reference": true, "PlainHTTP": true, "ManifestMediaTypes": true,
		"TagListPageSize": true, "ReferrerListPageSize": true, "TagListMaxPages": true,
		"ReferrerListMaxPages": true, "MaxMetadataBytes": true, "SkipReferrersGC": true,
		"HandleWarning": true,
	}
	typ := reflect.TypeOf(remote.Repository{})
	for i := range typ.NumField() {
		f := typ.Field(i)
		if f.IsExported() && !copied[f.Name] {
			t.Errorf("remote.Repository has a field %s that rewire does not copy", f.Name)
		}
	}
	r := &remote.Repository{PlainHTTP: true, TagListPageSize: 7, MaxMetadataBytes: 9, SkipReferrersGC: true,
		ManifestMediaTypes: []string{"x"}, TagListMaxPages: 3, ReferrerListPageSize: 5, ReferrerListMaxPages: 2}
	r.Reference.Registry, r.Reference.Repository = "r.example", "a/b"
	got := rewire(r, Options{})
	for _, name := range []string{"PlainHTTP", "TagListPageSize", "MaxMetadataBytes", "SkipReferrersGC",
		"ManifestMediaTypes", "TagListMaxPages", "ReferrerListPageSize", "ReferrerListMaxPages", "Reference"} {
		a, b := reflect.ValueOf(r).Elem().FieldByName(name), reflect.ValueOf(got).Elem().FieldByName(name)
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			t.Errorf("%s: %v, want %v", name, b, a)
		}
	}
}

// A client that would use http.DefaultTransport gets the pooled clone; a
// transport of the caller's own, and the caller's client, are left alone.
func TestPooledTransport(t *testing.T) {
	for _, c := range []*auth.Client{
		{},
		{Client: &http.Client{}},
		{Client: &http.Client{Transport: http.DefaultTransport}},
	} {
		got := withPooledTransport(c).(*auth.Client)
		if got == c || got.Client.Transport != pooledTransport() {
			t.Fatalf("client %+v: transport %v", c, got.Client.Transport)
		}
		if c.Client != nil && c.Client.Transport == pooledTransport() {
			t.Fatal("the caller's client was modified")
		}
	}
	own := &auth.Client{Client: &http.Client{Transport: &http.Transport{}}}
	if withPooledTransport(own) != remote.Client(own) {
		t.Fatal("a caller's own transport was replaced")
	}
	if tr, ok := pooledTransport().(*http.Transport); !ok || tr.MaxIdleConnsPerHost < DefaultMaxPullConnections {
		t.Fatalf("pooled transport %+v", pooledTransport())
	}
}
