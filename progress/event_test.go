package progress

import (
	"reflect"
	"testing"
)

func TestKindString(t *testing.T) {
	want := map[Kind]string{
		0:          "kind(0)",
		Started:    "started",
		Progressed: "progressed",
		Retrying:   "retrying",
		Resumed:    "resumed",
		Skipped:    "skipped",
		Mounted:    "mounted",
		Completed:  "completed",
		Failed:     "failed",
		Note:       "note",
		Note + 1:   "kind(10)",
		-1:         "kind(-1)",
	}
	for k, s := range want {
		if got := k.String(); got != s {
			t.Errorf("Kind(%d).String() = %q, want %q", int(k), got, s)
		}
	}
}

func TestStateString(t *testing.T) {
	want := map[State]string{
		StatePending:    "pending",
		StateActive:     "active",
		StateRetrying:   "retrying",
		StateDone:       "done",
		StateSkipped:    "skipped",
		StateMounted:    "mounted",
		StateFailed:     "failed",
		-1:              "state(-1)",
		StateFailed + 1: "state(7)",
	}
	for s, name := range want {
		if got := s.String(); got != name {
			t.Errorf("State(%d).String() = %q, want %q", int(s), got, name)
		}
	}
}

func TestNilFunc(t *testing.T) {
	var f Func
	f.OnEvent(Event{Kind: Started}) // must not panic
}

type recorder struct {
	name string
	log  *[]string
}

func (r recorder) OnEvent(e Event) { *r.log = append(*r.log, r.name+":"+e.Kind.String()) }

func TestMulti(t *testing.T) {
	var log []string
	a := recorder{"a", &log}
	b := recorder{"b", &log}
	c := recorder{"c", &log}

	tests := []struct {
		name string
		obs  Observer
		want []string
	}{
		{"nothing", Multi(), nil},
		{"only nils", Multi(nil, nil), nil},
		{"one", Multi(nil, a), []string{"a:started"}},
		{"order", Multi(a, nil, b, c), []string{"a:started", "b:started", "c:started"}},
		{"nested flattens in order", Multi(a, Multi(b, nil, c), a), []string{"a:started", "b:started", "c:started", "a:started"}},
		{"nil Func", Multi(Func(nil), b), []string{"b:started"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log = nil
			if tt.obs == nil {
				t.Fatal("Multi returned nil")
			}
			tt.obs.OnEvent(Event{Kind: Started})
			if !reflect.DeepEqual(log, tt.want) {
				t.Errorf("got %v, want %v", log, tt.want)
			}
		})
	}
}

func TestMultiOneIsIdentity(t *testing.T) {
	tr := NewTracker()
	if got := Multi(nil, tr); got != Observer(tr) {
		t.Errorf("Multi(nil, tr) = %T, want the tracker itself", got)
	}
}

func TestMultiCopiesArguments(t *testing.T) {
	var log []string
	obs := []Observer{recorder{"a", &log}, recorder{"b", &log}}
	m := Multi(obs...)
	obs[0] = recorder{"x", &log}
	m.OnEvent(Event{Kind: Failed})
	if want := []string{"a:failed", "b:failed"}; !reflect.DeepEqual(log, want) {
		t.Errorf("got %v, want %v", log, want)
	}
}
