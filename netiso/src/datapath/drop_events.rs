//! `netiso monitor`'s source: the datapath's drop events (`netiso-ebpf/src/
//! drop_events.rs`), read from their ring buffer and handed to every listener. The
//! datapath reports drops only while someone listens: the first listener switches
//! the reports on, the last one leaving switches them off.
use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use aya::maps::{Array, MapData, RingBuf};
use netiso_common::{Direction, DropEvent, DropReason, NO_CONTAINER};
use serde::Serialize;
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::broadcast,
};

use crate::datapath::DropEventMaps;

/// Events a slow listener may fall behind by before it loses some (it is told how
/// many).
const BACKLOG: usize = 4096;

#[derive(Clone)]
pub struct DropEventReader {
    shared: Arc<Shared>,
}

struct Shared {
    /// The datapath's switch, and how many listen.
    switch: Mutex<(Array<MapData, u32>, usize)>,
    events: broadcast::Sender<DropEvent>,
}

impl DropEventReader {
    /// Starts reading `maps`' ring buffer (on the current tokio runtime), with the
    /// reports switched off until someone listens.
    pub fn start(maps: DropEventMaps) -> anyhow::Result<Self> {
        let DropEventMaps { events, mut switch } = maps;
        // A previous agent may have stopped with listeners.
        switch.set(0, 0, 0).context("switching drop events off")?;
        let (sender, _) = broadcast::channel(BACKLOG);
        // SAFETY: the ring buffer owns its descriptor and keeps it open for as long
        // as the AsyncFd that owns the ring buffer lives.
        let ring = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
            .context("watching the drop event ring buffer")?;
        tokio::spawn(read(ring, sender.clone()));
        Ok(Self {
            shared: Arc::new(Shared {
                switch: Mutex::new((switch, 0)),
                events: sender,
            }),
        })
    }

    /// A new listener; the datapath reports drops while it lives.
    pub fn subscribe(&self) -> anyhow::Result<Subscription> {
        let events = self.shared.events.subscribe();
        let mut guard = self.shared.switch();
        let (switch, listeners) = &mut *guard;
        if *listeners == 0 {
            switch.set(0, 1, 0).context("switching drop events on")?;
        }
        *listeners += 1;
        Ok(Subscription {
            shared: Arc::clone(&self.shared),
            events,
        })
    }
}

impl Shared {
    /// The switch and the listeners' count (a panic elsewhere does not stop the
    /// count from being kept).
    fn switch(&self) -> std::sync::MutexGuard<'_, (Array<MapData, u32>, usize)> {
        self.switch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One listener's events; dropping it leaves.
pub struct Subscription {
    shared: Arc<Shared>,
    pub events: broadcast::Receiver<DropEvent>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut guard = self.shared.switch();
        let (switch, listeners) = &mut *guard;
        *listeners -= 1;
        if *listeners == 0
            && let Err(error) = switch.set(0, 0, 0)
        {
            log::warn!("switching drop events off: {error}");
        }
    }
}

async fn read(mut ring: AsyncFd<RingBuf<MapData>>, events: broadcast::Sender<DropEvent>) {
    loop {
        let mut guard = match ring.readable_mut().await {
            Ok(guard) => guard,
            Err(error) => {
                log::warn!("drop events: {error}; netiso monitor shows nothing more");
                return;
            }
        };
        let buffer = guard.get_inner_mut();
        while let Some(item) = buffer.next() {
            if item.len() >= size_of::<DropEvent>() {
                // SAFETY: the datapath wrote a whole DropEvent (plain data) there.
                let event = unsafe { item.as_ptr().cast::<DropEvent>().read_unaligned() };
                // No listener: nothing to do (the switch is going off).
                let _ = events.send(event);
            }
        }
        guard.clear_ready();
    }
}

/// A drop event as `netiso monitor` and the control API show it.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct DropRecord {
    /// When it was dropped, in nanoseconds since the Unix epoch.
    pub time_unix_ns: u64,
    /// The container's id, if the packet was a container's.
    pub container: Option<String>,
    /// From the container's side: `egress` for what it sent.
    pub direction: String,
    pub reason: String,
    /// `ipv4` or `ipv6`; absent when not IP.
    pub family: Option<String>,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or the protocol's number.
    pub protocol: Option<String>,
    /// Address and port (`[addr]:port` for IPv6), or the address alone.
    pub source: Option<String>,
    pub destination: Option<String>,
    /// The packet's length in bytes.
    pub length: u32,
    /// Drops on the same CPU not reported before this one (over the rate limit of
    /// reports, or a listener falling behind).
    pub suppressed_before: u64,
}

impl DropRecord {
    /// Describes `event`, whose container is `container`; `clock_offset_ns` turns the
    /// datapath's monotonic time into Unix time.
    pub fn new(event: &DropEvent, container: Option<String>, clock_offset_ns: i128) -> Self {
        let reason = DropReason::from_u8(event.reason).map_or("unknown", DropReason::name);
        let direction = if event.direction == Direction::Egress as u8 {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        let address = |bytes: &[u8; 16]| -> Option<IpAddr> {
            match event.family {
                4 => Some(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).into()),
                6 => Some(Ipv6Addr::from(*bytes).into()),
                _ => None,
            }
        };
        let has_ports = matches!(event.protocol, 6 | 17) && (event.sport, event.dport) != (0, 0);
        let endpoint = |bytes: &[u8; 16], port: u16| {
            address(bytes).map(|ip| match (ip, has_ports) {
                (IpAddr::V6(ip), true) => format!("[{ip}]:{port}"),
                (ip, true) => format!("{ip}:{port}"),
                (ip, false) => ip.to_string(),
            })
        };
        let protocol = (event.family != 0).then(|| match (event.protocol, event.family) {
            (6, _) => "tcp".to_owned(),
            (17, _) => "udp".to_owned(),
            (1, 4) => "icmp".to_owned(),
            (58, 6) => "icmpv6".to_owned(),
            // IPv6 packets with extension headers: the first one's.
            (0, 6) => "ipv6-hop-by-hop".to_owned(),
            (other, _) => other.to_string(),
        });
        Self {
            time_unix_ns: u64::try_from(i128::from(event.timestamp_ns) + clock_offset_ns)
                .unwrap_or_default(),
            container,
            direction: direction.name().to_owned(),
            reason: reason.to_owned(),
            family: match event.family {
                4 => Some("ipv4".to_owned()),
                6 => Some("ipv6".to_owned()),
                _ => None,
            },
            protocol,
            source: endpoint(&event.src, event.sport),
            destination: endpoint(&event.dst, event.dport),
            length: event.length,
            suppressed_before: event.suppressed,
        }
    }

    /// One line for people: time (UTC), container, direction, reason, flow, length.
    pub fn to_line(&self) -> String {
        let seconds = self.time_unix_ns / 1_000_000_000;
        let micros = (self.time_unix_ns % 1_000_000_000) / 1000;
        let day_seconds = seconds % 86_400;
        let mut line = format!(
            "{:02}:{:02}:{:02}.{micros:06}  {}  {}  {}  {}  {} -> {}  {} B",
            day_seconds / 3600,
            day_seconds / 60 % 60,
            day_seconds % 60,
            self.container.as_deref().unwrap_or("-"),
            self.direction,
            self.reason,
            self.protocol.as_deref().unwrap_or("non-ip"),
            self.source.as_deref().unwrap_or("?"),
            self.destination.as_deref().unwrap_or("?"),
            self.length,
        );
        if self.suppressed_before > 0 {
            let _ = write!(line, "  (+{} not shown)", self.suppressed_before);
        }
        line
    }
}

/// Unix time minus monotonic time, in nanoseconds: what turns `bpf_ktime_get_ns`
/// into wall-clock time.
pub fn clock_offset_ns() -> i128 {
    let now = |clock| {
        let mut time = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec it is given.
        unsafe { libc::clock_gettime(clock, &raw mut time) };
        i128::from(time.tv_sec) * 1_000_000_000 + i128::from(time.tv_nsec)
    };
    now(libc::CLOCK_REALTIME) - now(libc::CLOCK_MONOTONIC)
}

/// The slot a [`DropEvent`] names, if any.
pub fn slot_of(event: &DropEvent) -> Option<u32> {
    (event.slot != NO_CONTAINER).then_some(event.slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_reads_as_its_flow_and_reason() {
        let mut event = DropEvent {
            timestamp_ns: 1_000,
            suppressed: 3,
            slot: 0,
            length: 36,
            reason: DropReason::PortNotOwned as u8,
            direction: Direction::Egress as u8,
            family: 4,
            protocol: 17,
            sport: 29999,
            dport: 7002,
            ..DropEvent::default()
        };
        event.src[..4].copy_from_slice(&[198, 18, 0, 1]);
        event.dst[..4].copy_from_slice(&[198, 18, 1, 2]);
        let record = DropRecord::new(&event, Some("web".into()), 3_600_000_000_000 - 1_000);
        assert_eq!(record.source.as_deref(), Some("198.18.0.1:29999"));
        assert_eq!(record.destination.as_deref(), Some("198.18.1.2:7002"));
        assert_eq!(record.reason, "port_not_owned");
        assert_eq!(record.direction, "egress");
        assert_eq!(
            record.to_line(),
            "01:00:00.000000  web  egress  port_not_owned  udp  198.18.0.1:29999 -> 198.18.1.2:7002  36 B  (+3 not shown)"
        );
    }

    #[test]
    fn ipv6_endpoints_are_bracketed_and_non_ip_has_no_flow() {
        let mut event = DropEvent {
            family: 6,
            protocol: 6,
            sport: 80,
            dport: 443,
            reason: DropReason::SpoofedSource as u8,
            ..DropEvent::default()
        };
        event.src = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        let record = DropRecord::new(&event, None, 0);
        assert_eq!(record.source.as_deref(), Some("[2001:db8::1]:80"));
        assert_eq!(record.direction, "ingress");
        let none = DropRecord::new(&DropEvent::default(), None, 0);
        assert_eq!(
            (none.family, none.protocol, none.source),
            (None, None, None)
        );
    }
}
