//! A plain-Rust model of the datapath's decisions for the fixture's host and
//! containers (`fixtures::datapath`), written from docs/datapath.md: for a frame, the
//! verdict `public_ingress` and `container_veth_ingress` reach and the counters they
//! bump. `fuzz.rs` compares the programs with it on generated frames.
use std::collections::HashMap as Table;

use netiso_tests::packets::FRAME_SRC_MAC;

use super::fixtures::*;

/// What a program did with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Verdict {
    Pipe,
    Shot,
    Redirect,
}

impl Verdict {
    pub(crate) fn of(code: u32) -> Option<Self> {
        match code {
            PIPE => Some(Self::Pipe),
            SHOT => Some(Self::Shot),
            REDIRECT => Some(Self::Redirect),
            _ => None,
        }
    }
}

/// The model's view of a parsed frame.
#[derive(Clone, Copy, Debug)]
struct Flow {
    ipv6: bool,
    protocol: u8,
    l4: usize,
    fragment: Fragment,
    fragment_id: u32,
    src: [u8; 16],
    dst: [u8; 16],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fragment {
    Whole,
    First,
    Later,
}

enum Parsed {
    NotIp,
    Malformed,
    Ip(Flow),
}

fn u8_at(frame: &[u8], at: usize) -> Option<u8> {
    frame.get(at).copied()
}

fn u16_at(frame: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(frame.get(at..at + 2)?.try_into().ok()?))
}

fn bytes_at<const N: usize>(frame: &[u8], at: usize) -> Option<[u8; N]> {
    frame.get(at..at + N)?.try_into().ok()
}

fn widen(v4: [u8; 4]) -> [u8; 16] {
    let mut address = [0u8; 16];
    address[..4].copy_from_slice(&v4);
    address
}

fn parse(frame: &[u8]) -> Parsed {
    match u16_at(frame, 12) {
        Some(0x0800) => parse_ipv4(frame),
        Some(0x86dd) => parse_ipv6(frame),
        Some(_) => Parsed::NotIp,
        None => Parsed::Malformed,
    }
}

fn parse_ipv4(frame: &[u8]) -> Parsed {
    let Some(version_ihl) = u8_at(frame, 14) else {
        return Parsed::Malformed;
    };
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || ihl < 20 {
        return Parsed::Malformed;
    }
    let (Some(id), Some(frag), Some(protocol), Some(src), Some(dst)) = (
        u16_at(frame, 18),
        u16_at(frame, 20),
        u8_at(frame, 23),
        bytes_at::<4>(frame, 26),
        bytes_at::<4>(frame, 30),
    ) else {
        return Parsed::Malformed;
    };
    let l4 = 14 + ihl;
    if frame.len() < l4 {
        return Parsed::Malformed;
    }
    let fragment = if frag & 0x1fff != 0 {
        Fragment::Later
    } else if frag & 0x2000 != 0 {
        Fragment::First
    } else {
        Fragment::Whole
    };
    Parsed::Ip(Flow {
        ipv6: false,
        protocol,
        l4,
        fragment,
        fragment_id: u32::from(id),
        src: widen(src),
        dst: widen(dst),
    })
}

fn parse_ipv6(frame: &[u8]) -> Parsed {
    let (Some(version), Some(first), Some(src), Some(dst)) = (
        u8_at(frame, 14),
        u8_at(frame, 20),
        bytes_at::<16>(frame, 22),
        bytes_at::<16>(frame, 38),
    ) else {
        return Parsed::Malformed;
    };
    if version >> 4 != 6 {
        return Parsed::Malformed;
    }
    let (mut next, mut offset, mut fragment, mut fragment_id) = (first, 54, Fragment::Whole, 0);
    for _ in 0..6 {
        if !matches!(next, 0 | 43 | 44 | 51 | 60) {
            break;
        }
        let (Some(following), Some(len)) = (u8_at(frame, offset), u8_at(frame, offset + 1)) else {
            return Parsed::Malformed;
        };
        let header_len = match next {
            44 => {
                let (Some(frag), Some(id)) = (
                    u16_at(frame, offset + 2),
                    bytes_at::<4>(frame, offset + 4).map(u32::from_be_bytes),
                ) else {
                    return Parsed::Malformed;
                };
                fragment_id = id;
                fragment = if frag & 0xfff8 != 0 {
                    Fragment::Later
                } else if frag & 1 != 0 {
                    Fragment::First
                } else {
                    Fragment::Whole
                };
                8
            }
            51 => (usize::from(len) + 2) * 4,
            _ => (usize::from(len) + 1) * 8,
        };
        next = following;
        offset += header_len;
    }
    Parsed::Ip(Flow {
        ipv6: true,
        protocol: next,
        l4: offset,
        fragment,
        fragment_id,
        src,
        dst,
    })
}

impl Flow {
    fn has_ports(&self) -> bool {
        self.protocol == IPPROTO_TCP || self.protocol == IPPROTO_UDP
    }

    fn is_icmp(&self) -> bool {
        (!self.ipv6 && self.protocol == IPPROTO_ICMP)
            || (self.ipv6 && self.protocol == IPPROTO_ICMPV6)
    }

    fn is_host(&self, address: &[u8; 16]) -> bool {
        if self.ipv6 {
            *address == HOST_IPV6.octets()
        } else {
            *address == widen(HOST_IPV4.octets())
        }
    }

    fn is_loopback(&self, address: &[u8; 16]) -> bool {
        if self.ipv6 {
            *address == LOCALHOST6.octets()
        } else {
            address[0] == 127
        }
    }

    fn is_to_link_or_group(&self) -> bool {
        let d = &self.dst;
        if self.ipv6 {
            d[0] == 0xff || (d[0] == 0xfe && d[1] & 0xc0 == 0x80)
        } else {
            d[0] >= 224 || (d[0] == 169 && d[1] == 254)
        }
    }

    fn impossible_source(&self) -> bool {
        let s = &self.src;
        if self.is_host(s) || self.is_loopback(s) {
            return true;
        }
        if self.ipv6 {
            *s == [0; 16] || s[0] == 0xff || (s[..10] == [0; 10] && s[10] == 0xff && s[11] == 0xff)
        } else {
            s[0] == 0 || s[0] >= 224
        }
    }

    fn ports(&self, frame: &[u8]) -> Option<(u16, u16)> {
        let min = if self.protocol == IPPROTO_TCP { 20 } else { 8 };
        if frame.len() < self.l4 + min {
            return None;
        }
        Some((u16_at(frame, self.l4)?, u16_at(frame, self.l4 + 2)?))
    }
}

/// The fixture's port owners: container 0 owns 31000-31499 and 30016-30031,
/// container 1 31500-32000.
fn owner(port: u16) -> Option<u32> {
    match port {
        31000..=31499 | 30016..=30031 => Some(0),
        31500..=32000 => Some(1),
        _ => None,
    }
}

/// A TCP or UDP packet quoted in an ICMP error at `at`.
struct Quoted {
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
}

/// The TCP or UDP packet quoted in an ICMP error at `at`, if it can be read.
fn quoted(frame: &[u8], ipv6: bool, at: usize) -> Option<Quoted> {
    let (protocol, src, dst, header_len) = if ipv6 {
        (
            u8_at(frame, at + 6)?,
            bytes_at::<16>(frame, at + 8)?,
            bytes_at::<16>(frame, at + 24)?,
            40,
        )
    } else {
        (
            u8_at(frame, at + 9)?,
            widen(bytes_at::<4>(frame, at + 12)?),
            widen(bytes_at::<4>(frame, at + 16)?),
            usize::from(u8_at(frame, at)? & 0x0f) * 4,
        )
    };
    let l4 = at + header_len;
    match protocol {
        IPPROTO_TCP | IPPROTO_UDP => Some(Quoted {
            src,
            dst,
            sport: u16_at(frame, l4)?,
            dport: u16_at(frame, l4 + 2)?,
        }),
        _ => None,
    }
}

/// The model's state and counters: what the datapath's maps would hold.
#[derive(Default)]
pub(crate) struct Model {
    pub(crate) counters: [ContainerCounters; 2],
    /// The datagrams whose first fragment a container sent.
    fragments: Table<FragmentId, (u32, Route)>,
    /// The datagrams from the network whose first fragment went to a container.
    inbound_fragments: Table<FragmentId, u32>,
}

/// (peer address, identification, protocol, IPv6).
type FragmentId = ([u8; 16], u32, u8, bool);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Network,
    Host,
    Container(u32),
}

impl Model {
    /// `public_ingress` on `frame` (addressed to the host when its destination MAC is
    /// all zeros, as test runs take it).
    pub(crate) fn inbound(&mut self, frame: &[u8]) -> Verdict {
        if frame.get(..6) != Some(&[0u8; 6][..]) {
            return Verdict::Pipe;
        }
        let Parsed::Ip(flow) = parse(frame) else {
            return Verdict::Pipe;
        };
        if !flow.is_host(&flow.dst) {
            return Verdict::Pipe;
        }
        // Later fragments follow their datagram's first, if it went to a container.
        let key = (flow.src, flow.fragment_id, flow.protocol, flow.ipv6);
        let slot = match flow.fragment {
            Fragment::Later => self.inbound_fragments.get(&key).copied(),
            _ if flow.has_ports() => {
                let Some((_, dport)) = flow.ports(frame) else {
                    return Verdict::Pipe;
                };
                let slot = owner(dport);
                if flow.fragment == Fragment::First && slot.is_none() {
                    self.inbound_fragments.remove(&key);
                }
                slot
            }
            Fragment::Whole if flow.is_icmp() => Self::icmp_owner(frame, &flow),
            _ => None,
        };
        let Some(slot) = slot else {
            return Verdict::Pipe;
        };
        let counters = &mut self.counters[slot as usize];
        if flow.impossible_source() {
            counters.rx_dropped_spoofed_source += 1;
            return Verdict::Shot;
        }
        if flow.fragment == Fragment::First {
            self.inbound_fragments.insert(key, slot);
        }
        counters.rx_packets += 1;
        counters.rx_bytes += frame.len() as u64;
        Verdict::Redirect
    }

    /// The owner of an inbound ICMP message: errors quoting a packet the host's
    /// address sent from a container's port. (Echo replies need a conversation,
    /// which generated frames to the fixture never have.)
    fn icmp_owner(frame: &[u8], flow: &Flow) -> Option<u32> {
        let icmp_type = u8_at(frame, flow.l4)?;
        let is_error = if flow.ipv6 {
            matches!(icmp_type, 1..=4)
        } else {
            matches!(icmp_type, 3 | 11 | 12)
        };
        let (echo_request, echo_reply) = if flow.ipv6 { (128, 129) } else { (8, 0) };
        if icmp_type == echo_request || icmp_type == echo_reply {
            // The identifier must be readable; no conversation either way.
            u16_at(frame, flow.l4 + 4)?;
            return None;
        }
        if !is_error {
            return None;
        }
        // The quoted packet must be one the host's address sent.
        let quoted = quoted(frame, flow.ipv6, flow.l4 + 8)?;
        if quoted.src == flow.dst {
            owner(quoted.sport)
        } else {
            None
        }
    }

    /// `host_lo_ingress`: the host reaching a container's port through its address or
    /// loopback.
    pub(crate) fn host_loopback(&mut self, frame: &[u8]) -> Verdict {
        let Parsed::Ip(flow) = parse(frame) else {
            return Verdict::Pipe;
        };
        if !flow.has_ports() || flow.fragment == Fragment::Later {
            return Verdict::Pipe;
        }
        if !(flow.is_loopback(&flow.dst) || flow.is_host(&flow.dst)) {
            return Verdict::Pipe;
        }
        let Some(slot) = flow.ports(frame).and_then(|(_, dport)| owner(dport)) else {
            return Verdict::Pipe;
        };
        let counters = &mut self.counters[slot as usize];
        counters.rx_packets += 1;
        counters.rx_bytes += frame.len() as u64;
        Verdict::Redirect
    }

    /// `container_eth0_ingress`: loopback destinations go to the container's lo.
    pub(crate) fn container_eth0(frame: &[u8]) -> Verdict {
        match parse(frame) {
            Parsed::Ip(flow) if flow.is_loopback(&flow.dst) => Verdict::Redirect,
            _ => Verdict::Pipe,
        }
    }

    /// `container_lo_egress` of container 0: its own ports stay, others go out.
    pub(crate) fn container_loopback(frame: &[u8]) -> Verdict {
        let Parsed::Ip(flow) = parse(frame) else {
            return Verdict::Pipe;
        };
        if !flow.has_ports() || flow.fragment == Fragment::Later {
            return Verdict::Pipe;
        }
        match flow.ports(frame) {
            Some((_, dport)) if owner(dport) != Some(0) => Verdict::Redirect,
            _ => Verdict::Pipe,
        }
    }

    /// `container_veth_ingress` on `frame` sent by container 0.
    pub(crate) fn outbound(&mut self, frame: &[u8]) -> Verdict {
        match self.decide(frame) {
            Ok(route) => {
                let counters = &mut self.counters[0];
                counters.tx_packets += 1;
                counters.tx_bytes += frame.len() as u64;
                if let Route::Container(slot) = route {
                    let owner = &mut self.counters[slot as usize];
                    owner.rx_packets += 1;
                    owner.rx_bytes += frame.len() as u64;
                }
                Verdict::Redirect
            }
            Err(bump) => {
                bump(&mut self.counters[0]);
                Verdict::Shot
            }
        }
    }

    fn decide(&mut self, frame: &[u8]) -> Result<Route, fn(&mut ContainerCounters)> {
        let flow = match parse(frame) {
            Parsed::Ip(flow) => flow,
            Parsed::NotIp => return Err(|c| c.tx_dropped_other += 1),
            Parsed::Malformed => return Err(|c| c.tx_dropped_malformed += 1),
        };
        if flow.ipv6 && flow.is_icmp() && flow.fragment != Fragment::Later {
            let icmp_type = u8_at(frame, flow.l4).ok_or(malformed as fn(&mut _))?;
            if matches!(icmp_type, 130..=137 | 143) {
                return Err(|c| c.tx_dropped_other += 1);
            }
        }
        let local = flow.is_host(&flow.dst) || flow.is_loopback(&flow.dst);
        let mac = bytes_at::<6>(frame, 6).ok_or(malformed as fn(&mut _))?;
        let mac_ok = mac == FRAME_SRC_MAC || (local && mac == [0; 6]);
        let address_ok = flow.is_host(&flow.src) || (local && flow.is_loopback(&flow.src));
        if !(mac_ok && address_ok) {
            return Err(|c| c.tx_dropped_spoofed += 1);
        }
        if !local && flow.is_to_link_or_group() {
            return Err(|c| c.tx_dropped_multicast += 1);
        }
        let key = (flow.dst, flow.fragment_id, flow.protocol, flow.ipv6);
        if flow.fragment == Fragment::Later {
            return match self.fragments.get(&key) {
                Some((0, route)) => Ok(*route),
                _ => Err(|c| c.tx_dropped_fragment += 1),
            };
        }
        let dport = if flow.has_ports() {
            let (sport, dport) = flow.ports(frame).ok_or(malformed as fn(&mut _))?;
            if owner(sport) != Some(0) {
                return Err(|c| c.tx_dropped_port_not_owned += 1);
            }
            Some(dport)
        } else if flow.is_icmp() {
            Self::check_icmp(frame, &flow)?;
            None
        } else {
            return Err(|c| c.tx_dropped_other += 1);
        };
        let route = if local {
            match dport.and_then(owner) {
                Some(slot) => Route::Container(slot),
                None => Route::Host,
            }
        } else {
            Route::Network
        };
        if flow.fragment == Fragment::First {
            self.fragments.insert(key, (0, route));
        }
        Ok(route)
    }

    fn check_icmp(frame: &[u8], flow: &Flow) -> Result<(), fn(&mut ContainerCounters)> {
        let (Some(icmp_type), Some(code)) = (u8_at(frame, flow.l4), u8_at(frame, flow.l4 + 1))
        else {
            return Err(malformed);
        };
        let (echo_request, is_error) = if flow.ipv6 {
            (icmp_type == 128, matches!(icmp_type, 1 | 3 | 4))
        } else {
            (
                icmp_type == 8,
                (icmp_type == 3 && code != 4) || icmp_type == 11 || icmp_type == 12,
            )
        };
        if echo_request {
            return Ok(());
        }
        if !is_error {
            return Err(|c| c.tx_dropped_icmp += 1);
        }
        match quoted(frame, flow.ipv6, flow.l4 + 8) {
            Some(quoted) if flow.is_host(&quoted.dst) && owner(quoted.dport) == Some(0) => Ok(()),
            _ => Err(|c| c.tx_dropped_icmp += 1),
        }
    }
}

fn malformed(counters: &mut ContainerCounters) {
    counters.tx_dropped_malformed += 1;
}
