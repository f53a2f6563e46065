//! Socket statistics of the namespace the calling thread is in: TCP connection counts
//! from `sockstat` (Mesos's summary) and RTT percentiles from an inet_diag dump
//! (Mesos's details). Both families: Mesos looked at IPv4 only.
use anyhow::bail;
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP, SOCK_DIAG_BY_FAMILY},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags, nlas::Nla},
};

use crate::net::NetlinkSocket;

/// TCP sockets in use (listening ones included, as Mesos counts them) and in TIME_WAIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionCounts {
    pub active: u64,
    pub time_wait: u64,
}

/// The counts in a namespace's `sockstat` and `sockstat6` texts.
pub fn tcp_connection_counts(v4: &str, v6: &str) -> anyhow::Result<ConnectionCounts> {
    let field = |text: &str, line: &str, name: &str| -> Option<u64> {
        let rest = text.lines().find_map(|l| l.strip_prefix(line))?;
        let words: Vec<&str> = rest.split_whitespace().collect();
        words
            .chunks(2)
            .find(|pair| pair[0] == name)
            .and_then(|pair| pair.get(1)?.parse().ok())
    };
    let (Some(inuse), Some(time_wait)) = (field(v4, "TCP:", "inuse"), field(v4, "TCP:", "tw"))
    else {
        bail!("/proc/net/sockstat has no TCP inuse/tw counts");
    };
    // TIME_WAIT sockets of both families are counted in `tw` already.
    let inuse6 = field(v6, "TCP6:", "inuse").unwrap_or(0);
    Ok(ConnectionCounts {
        active: inuse + inuse6,
        time_wait,
    })
}

/// Percentiles of the smoothed RTT of the namespace's TCP sockets, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RttPercentiles {
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
}

/// Byte offset of `tcpi_rtt` in the kernel's `struct tcp_info`.
const TCPI_RTT_OFFSET: usize = std::mem::offset_of!(libc::tcp_info, tcpi_rtt);

/// Dumps every TCP socket of the namespace of `socket` (a sock_diag socket) with its
/// `tcp_info` and takes the percentiles of the non-zero RTTs, by nearest rank as Mesos
/// does. `None` when no socket has an RTT.
pub fn tcp_rtt_percentiles(socket: &mut NetlinkSocket) -> anyhow::Result<Option<RttPercentiles>> {
    let mut rtts = Vec::new();
    for (family, socket_id) in [
        (AF_INET, SocketId::new_v4()),
        (AF_INET6, SocketId::new_v6()),
    ] {
        let request = SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::INFO,
            states: StateFlags::all(),
            socket_id,
        });
        for answer in socket.dump(request, SOCK_DIAG_BY_FAMILY)? {
            let SockDiagMessage::InetResponse(response) = answer else {
                continue;
            };
            for nla in &response.nlas {
                if let Nla::TcpInfo(info) = nla
                    && let Some(bytes) = info.get(TCPI_RTT_OFFSET..TCPI_RTT_OFFSET + 4)
                {
                    let rtt = u32::from_ne_bytes(bytes.try_into().expect("four bytes"));
                    if rtt != 0 {
                        rtts.push(rtt);
                    }
                }
            }
        }
    }
    Ok(rtt_percentiles(rtts))
}

fn rtt_percentiles(mut rtts: Vec<u32>) -> Option<RttPercentiles> {
    if rtts.is_empty() {
        return None;
    }
    rtts.sort_unstable();
    let rank = |p: usize| f64::from(rtts[(rtts.len() * p / 100).min(rtts.len() - 1)]);
    Some(RttPercentiles {
        p50: rank(50),
        p90: rank(90),
        p95: rank(95),
        p99: rank(99),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockstat_counts_both_families() {
        let v4 = "sockets: used 9\nTCP: inuse 3 orphan 0 tw 2 alloc 5 mem 1\nUDP: inuse 1 mem 0\n";
        let v6 = "TCP6: inuse 4\nUDP6: inuse 0\n";
        assert_eq!(
            tcp_connection_counts(v4, v6).unwrap(),
            ConnectionCounts {
                active: 7,
                time_wait: 2
            }
        );
        assert!(tcp_connection_counts("UDP: inuse 1\n", "").is_err());
    }

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(rtt_percentiles(vec![]), None);
        let p = rtt_percentiles((1..=100).rev().collect()).unwrap();
        // rtts[n*p/100] of the sorted list 1..=100.
        assert_eq!((p.p50, p.p90, p.p95, p.p99), (51.0, 91.0, 96.0, 100.0));
        let one = rtt_percentiles(vec![7]).unwrap();
        assert_eq!((one.p50, one.p99), (7.0, 7.0));
    }
}
