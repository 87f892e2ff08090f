package jobs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"syscall"
)

// ErrForbiddenAddress is the dial-time refusal of an address a webhook may
// not reach.
var ErrForbiddenAddress = errors.New("webhook address is loopback, link-local, private or otherwise not public")

// forbiddenPrefixes are ranges that no public webhook receiver lives in,
// beyond those the netip predicates cover.
var forbiddenPrefixes = []netip.Prefix{
	netip.MustParsePrefix("100.64.0.0/10"),      // carrier-grade NAT (RFC 6598)
	netip.MustParsePrefix("0.0.0.0/8"),          // "this network": reaches the host on Linux
	netip.MustParsePrefix("255.255.255.255/32"), // limited broadcast
}

// ForbiddenIP reports whether a webhook must not be sent to ip: loopback,
// link-local, private (RFC 1918, ULA fc00::/7), unspecified, multicast or
// CGNAT, including IPv4 addresses written as IPv4-mapped IPv6.
func ForbiddenIP(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsPrivate() || ip.IsUnspecified() || ip.IsMulticast() || ip.IsInterfaceLocalMulticast() {
		return true
	}
	for _, p := range forbiddenPrefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// URLPolicy says which webhook URLs are allowed.
type URLPolicy struct {
	// AllowHTTP admits http:// URLs (https only otherwise).
	AllowHTTP bool
	// AllowPrivate admits addresses that ForbiddenIP refuses.
	AllowPrivate bool
	// Resolver looks host names up; nil means net.DefaultResolver.
	Resolver interface {
		LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
	}
}

// URLError is a webhook URL refused at submit time; its message is meant for
// the client.
type URLError struct{ Msg string }

func (e *URLError) Error() string { return e.Msg }

func urlErr(format string, args ...any) error { return &URLError{Msg: fmt.Sprintf(format, args...)} }

// checkScheme parses raw and checks the parts that need no lookup.
func (p URLPolicy) checkScheme(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil || !u.IsAbs() || u.Opaque != "":
		return nil, urlErr("webhook_url is not an absolute URL")
	case u.Scheme != "https" && !(u.Scheme == "http" && p.AllowHTTP):
		if p.AllowHTTP {
			return nil, urlErr("webhook_url must use https or http")
		}
		return nil, urlErr("webhook_url must use https")
	case u.Hostname() == "":
		return nil, urlErr("webhook_url has no host")
	case u.User != nil:
		return nil, urlErr("webhook_url must not contain credentials")
	case len(raw) > 2048:
		return nil, urlErr("webhook_url is longer than 2048 characters")
	}
	return u, nil
}

// Check refuses a webhook URL with a bad scheme, or whose host resolves to
// no address or only to forbidden ones. Refusals are *URLError values. The
// addresses are checked again when a webhook is sent, since DNS may change.
func (p URLPolicy) Check(ctx context.Context, raw string) error {
	u, err := p.checkScheme(raw)
	if err != nil {
		return err
	}
	host := u.Hostname()
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{ip}
	} else {
		r := p.Resolver
		if r == nil {
			r = net.DefaultResolver
		}
		addrs, err = r.LookupNetIP(ctx, "ip", host)
		if err != nil || len(addrs) == 0 {
			return urlErr("webhook_url host %q does not resolve", host)
		}
	}
	if p.AllowPrivate {
		return nil
	}
	for _, ip := range addrs {
		if !ForbiddenIP(ip) {
			return nil
		}
	}
	return urlErr("webhook_url host %q resolves only to loopback, link-local or private addresses", host)
}

// control is the dialer's Control hook: it sees the address actually being
// connected to, after resolution, so a host that resolves differently at
// send time (DNS rebinding) still cannot reach a forbidden address.
func (p URLPolicy) control(_, address string, _ syscall.RawConn) error {
	if p.AllowPrivate {
		return nil
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil || ForbiddenIP(ap.Addr()) {
		return ErrForbiddenAddress
	}
	return nil
}
