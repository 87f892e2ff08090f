package tracing

import "testing"

func TestParse(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", true},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", false},
		{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false},
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", false},
		{"", false},
		{"garbage", false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			p, ok := Parse(tc.in)
			if ok != tc.ok {
				t.Fatalf("ok = %v", ok)
			}
			if ok && p.TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" {
				t.Errorf("trace id %q", p.TraceID)
			}
		})
	}
}

func TestChildKeepsTrace(t *testing.T) {
	p, _ := Parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	c := p.Child()
	if c.TraceID != p.TraceID || c.SpanID == p.SpanID || c.Flags != "01" {
		t.Errorf("child %+v of %+v", c, p)
	}
	if back, ok := Parse(c.String()); !ok || back != c {
		t.Errorf("child does not round-trip: %q", c.String())
	}
	if n, ok := Parse(New().String()); !ok || n.Flags != "01" {
		t.Errorf("new trace %+v", n)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f.Add("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		p, ok := Parse(s)
		if !ok {
			return
		}
		// Whatever was accepted must format to a header that parses back.
		if back, ok := Parse(p.String()); !ok || back != p {
			t.Errorf("%q parsed to %+v, which does not round-trip", s, p)
		}
	})
}
