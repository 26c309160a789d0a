package announcer

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrInterfaceNotFound is wrapped by errors about an interface that does not
// exist: "interface eth9: not found".
var ErrInterfaceNotFound = errors.New("not found")

// addrs puts VIPs on one interface and takes them off, through netlink.
//
// A VIP is always a host address (/32 or /128): that is what this package
// adds, and matching on the full prefix length means remove never takes
// away an address someone configured with its subnet, such as the node's
// own address, even if it equals a VIP.
type addrs struct {
	h      *netlink.Handle
	ifname string
	// index is the interface's index when last found by name: a renamed
	// interface keeps its addresses, and remove finds it by it.
	index int
}

// link looks the interface up by name every time, so an interface that was
// recreated (new index) is still found.
func (a *addrs) link() (netlink.Link, error) {
	l, err := a.h.LinkByName(a.ifname)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("interface %s: %w", a.ifname, ErrInterfaceNotFound)
		}
		return nil, fmt.Errorf("interface %s: %w", a.ifname, err)
	}
	a.index = l.Attrs().Index
	return l, nil
}

// renamed is the interface that had our name, if it is still there under
// another one; nil if it is gone.
func (a *addrs) renamed() netlink.Link {
	if a.index == 0 {
		return nil
	}
	l, err := a.h.LinkByIndex(a.index)
	if err != nil {
		return nil
	}
	return l
}

// hostAddr is vip as the netlink address this package adds.
func hostAddr(vip netip.Addr) *netlink.Addr {
	bits := vip.BitLen()
	na := &netlink.Addr{IPNet: &net.IPNet{
		IP:   net.IP(vip.AsSlice()),
		Mask: net.CIDRMask(bits, bits),
	}}
	if vip.Is6() {
		// Duplicate address detection would keep the VIP "tentative", and
		// unusable, for about a second after every failover; the cluster,
		// not DAD, decides who owns it.
		na.Flags = unix.IFA_F_NODAD
	}
	return na
}

// add puts vip on the interface; already being there is fine.
func (a *addrs) add(vip netip.Addr) error {
	l, err := a.link()
	if err != nil {
		return fmt.Errorf("add vip %s to %s: %w", vip, a.ifname, err)
	}
	if err := a.h.AddrAdd(l, hostAddr(vip)); err != nil && !errors.Is(err, unix.EEXIST) {
		if vip.Is6() && errors.Is(err, unix.EACCES) {
			// What the kernel answers when IPv6 is off on the interface.
			return fmt.Errorf("add vip %s to %s: is IPv6 disabled on %s (sysctl net.ipv6.conf.%s.disable_ipv6)? %w", vip, a.ifname, a.ifname, a.ifname, err)
		}
		return fmt.Errorf("add vip %s to %s: %w", vip, a.ifname, err)
	}
	return nil
}

// remove takes vip off the interface; not being there is fine, and so is a
// missing interface, which took its addresses with it. A renamed one kept
// them: it is found by its index, so a VIP never stays behind on it.
func (a *addrs) remove(vip netip.Addr) error {
	l, err := a.link()
	if errors.Is(err, ErrInterfaceNotFound) {
		if l = a.renamed(); l == nil {
			return nil
		}
		err = nil
	}
	if err != nil {
		return fmt.Errorf("remove vip %s from %s: %w", vip, a.ifname, err)
	}
	if err := a.h.AddrDel(l, hostAddr(vip)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("remove vip %s from %s: %w", vip, a.ifname, err)
	}
	return nil
}

// has reports whether vip is on the interface as a host address.
func (a *addrs) has(vip netip.Addr) (bool, error) {
	l, err := a.link()
	if err != nil {
		return false, err
	}
	family := netlink.FAMILY_V4
	if vip.Is6() {
		family = netlink.FAMILY_V6
	}
	var list []netlink.Addr
	// An address added or removed during the dump interrupts it; the
	// watcher sees exactly such changes, so read again.
	for range 3 {
		if list, err = a.h.AddrList(l, family); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return false, fmt.Errorf("list addresses of %s: %w", a.ifname, err)
	}
	for _, na := range list {
		ip, ok := netip.AddrFromSlice(na.IP)
		ones, bits := na.Mask.Size()
		if ok && ip.Unmap() == vip && ones == bits && bits == vip.BitLen() {
			return true, nil
		}
	}
	return false, nil
}

// iface is the interface as the net package describes it, for the ARP and
// NDP sockets. It comes from the same netlink handle so it is looked up in
// the announcer's network namespace.
func (a *addrs) iface() (*net.Interface, error) {
	l, err := a.link()
	if err != nil {
		return nil, err
	}
	return ifaceOf(l), nil
}

func ifaceOf(l netlink.Link) *net.Interface {
	at := l.Attrs()
	return &net.Interface{
		Index:        at.Index,
		MTU:          at.MTU,
		Name:         at.Name,
		HardwareAddr: at.HardwareAddr,
		Flags:        at.Flags,
	}
}
