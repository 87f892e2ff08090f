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
	netip.MustParsePrefix("64:ff9b:1::/48"),     // local-use NAT64 (RFC 8215): a private translator
}

// Prefixes of IPv6 addresses that carry an IPv4 address a translator or relay
// would reach: the well-known NAT64 prefix (RFC 6052, the IPv4 address in the
// last 32 bits) and 6to4 (RFC 3056, in bits 16 to 47).
var (
	nat64Prefix = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour   = netip.MustParsePrefix("2002::/16")
)

// ForbiddenIP reports whether a webhook must not be sent to ip: loopback,
// link-local, private (RFC 1918, ULA fc00::/7), unspecified, multicast or
// CGNAT, including IPv4 addresses written as IPv4-mapped IPv6 or embedded in
// NAT64 and 6to4 addresses.
func ForbiddenIP(ip netip.Addr) bool {
	ip = ip.Unmap()
	if embedded, ok := embeddedIPv4(ip); ok && ForbiddenIP(embedded) {
		return true
	}
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

// embeddedIPv4 is the IPv4 address a NAT64 or 6to4 address stands for.
func embeddedIPv4(ip netip.Addr) (netip.Addr, bool) {
	b := ip.As16()
	switch {
	case !ip.Is6():
		return netip.Addr{}, false
	case nat64Prefix.Contains(ip):
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case sixToFour.Contains(ip):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
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
