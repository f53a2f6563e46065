//! The rate each container is shaped to, from Mesos's flags: a fixed rate per
//! container, or a rate per CPU times the container's whole CPUs (`auto`: the link's
//! speed shared out over the agent's CPUs), clamped to a minimum and a maximum, with an
//! optional ceil and burst. All in bytes per second, 64-bit.
//!
//! A zero rate (`--egress_rate_limit_per_container=0B`, or a per-CPU rate of 0B) means
//! no limit, as Mesos's flag help says. (Mesos's code instead turned 0 into its 1 Mbit/s
//! floor; a limit nobody asked for is the worse surprise.)
use anyhow::bail;

use super::htb::HtbConfig;

/// Mesos's floor when a direction is limited and no minimum is given: 1 Mbit/s.
pub const DEFAULT_MINIMUM_RATE: u64 = 125_000;

/// How one direction's limit is computed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectionPolicy {
    pub fixed: Option<u64>,
    /// Already resolved for `auto`.
    pub per_cpu: Option<u64>,
    pub minimum: Option<u64>,
    pub maximum: Option<u64>,
    pub ceil: Option<u64>,
    pub burst: Option<u64>,
}

impl DirectionPolicy {
    /// The limit of a container with `cpus` CPUs (whole ones count), or `None` when
    /// this direction is not limited.
    pub fn limit(&self, cpus: Option<f64>) -> Option<HtbConfig> {
        let rate = match (self.fixed, self.per_cpu) {
            (Some(0), _) | (None, Some(0) | None) => return None,
            (Some(rate), _) => rate,
            (None, Some(per_cpu)) => {
                per_cpu.saturating_mul(cpus.unwrap_or(0.0).max(0.0).floor() as u64)
            }
        };
        let rate = rate.max(self.minimum.unwrap_or(DEFAULT_MINIMUM_RATE));
        let rate = self.maximum.map_or(rate, |maximum| rate.min(maximum));
        let ceil = self.ceil.filter(|ceil| *ceil > rate);
        Some(HtbConfig {
            rate,
            ceil,
            burst: ceil.and(self.burst),
        })
    }

    pub fn is_limited(&self) -> bool {
        matches!((self.fixed, self.per_cpu), (Some(r), _) | (None, Some(r)) if r != 0)
    }
}

/// Both directions, and whether running containers gain an ingress limit they were
/// created without.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RatePolicy {
    pub egress: DirectionPolicy,
    pub ingress: DirectionPolicy,
    pub ingress_isolate_existing_containers: bool,
}

/// `struct ethtool_cmd` (uapi ethtool.h), for `ETHTOOL_GSET`.
#[repr(C)]
#[derive(Default)]
struct EthtoolCmd {
    cmd: u32,
    supported: u32,
    advertising: u32,
    speed: u16,
    duplex: u8,
    port: u8,
    phy_address: u8,
    transceiver: u8,
    autoneg: u8,
    mdio_support: u8,
    maxtxpkt: u32,
    maxrxpkt: u32,
    speed_hi: u16,
    eth_tp_mdix: u8,
    eth_tp_mdix_ctrl: u8,
    lp_advertising: u32,
    reserved: [u32; 2],
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GSET: u32 = 1;

// SIOCETHTOOL passes a `struct ifreq` whose data pointer leads to the ethtool command.
nix::ioctl_readwrite_bad!(ethtool_ioctl, SIOCETHTOOL, libc::ifreq);

/// The speed of interface `iface` of the calling thread's namespace in bytes/s, as
/// its driver reports it. (Not from sysfs: `/sys/class/net` shows the namespace sysfs
/// was mounted in, which for an agent started in a namespace is another one.)
pub fn link_speed(iface: &str) -> anyhow::Result<u64> {
    use std::os::fd::AsRawFd as _;

    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    let unknown = |why: &str| {
        anyhow::anyhow!("cannot tell the speed of {iface} ({why}); pass --network_link_speed")
    };
    let socket = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| unknown(&e.to_string()))?;
    let mut command = EthtoolCmd {
        cmd: ETHTOOL_GSET,
        ..Default::default()
    };
    // SAFETY: ifreq is plain data; all zeros is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    if iface.len() >= request.ifr_name.len() {
        return Err(unknown("name too long"));
    }
    for (to, from) in request.ifr_name.iter_mut().zip(iface.bytes()) {
        *to = from as libc::c_char;
    }
    request.ifr_ifru.ifru_data = (&raw mut command).cast();
    // SAFETY: SIOCETHTOOL reads the name and writes at most an ethtool_cmd through
    // ifru_data, which points at one that outlives the call.
    unsafe { ethtool_ioctl(socket.as_raw_fd(), &mut request) }
        .map_err(|e| unknown(&e.to_string()))?;
    let mbits = u32::from(command.speed) | (u32::from(command.speed_hi) << 16);
    if mbits == 0 || mbits == u32::MAX {
        bail!(
            "cannot tell the speed of {iface} (its driver says it is unknown); pass --network_link_speed"
        );
    }
    Ok(u64::from(mbits) * 1_000_000 / 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_cpu(per_cpu: u64, minimum: u64, maximum: u64) -> DirectionPolicy {
        DirectionPolicy {
            per_cpu: Some(per_cpu),
            minimum: Some(minimum),
            maximum: Some(maximum),
            ..Default::default()
        }
    }

    fn rate(policy: &DirectionPolicy, cpus: f64) -> Option<u64> {
        policy.limit(Some(cpus)).map(|l| l.rate)
    }

    #[test]
    fn link_speed_of_a_missing_interface_says_what_to_do() {
        let error = link_speed("no-such-iface0").unwrap_err().to_string();
        assert!(error.contains("--network_link_speed"), "{error}");
    }

    #[test]
    fn mesos_scale_egress_with_cpu() {
        // Mesos's ROOT_ScaleEgressWithCPU: 1000 B/s per CPU, clamped to [2000, 4000].
        let policy = per_cpu(1000, 2000, 4000);
        assert_eq!(rate(&policy, 1.0), Some(2000));
        assert_eq!(rate(&policy, 3.1), Some(3000));
        assert_eq!(rate(&policy, 5.0), Some(4000));
    }

    #[test]
    fn mesos_scale_egress_with_cpu_large_has_no_overflow() {
        // ROOT_ScaleEgressWithCPULarge: a 100 Gbit/s link over 64 CPUs.
        let policy = per_cpu(12_500_000_000 / 64, 625_000_000, 11_250_000_000);
        assert_eq!(rate(&policy, 30.0), Some(5_859_375_000));
        assert_eq!(rate(&policy, 1.0), Some(625_000_000));
        assert_eq!(rate(&policy, 60.0), Some(11_250_000_000));
    }

    #[test]
    fn the_floor_applies_unless_a_minimum_is_given_and_zero_means_no_limit() {
        let fixed = |rate, minimum| DirectionPolicy {
            fixed: Some(rate),
            minimum,
            ..Default::default()
        };
        assert_eq!(rate(&fixed(2000, None), 1.0), Some(DEFAULT_MINIMUM_RATE));
        assert_eq!(rate(&fixed(2000, Some(0)), 1.0), Some(2000));
        assert_eq!(fixed(0, None).limit(Some(1.0)), None);
        assert!(!fixed(0, None).is_limited());
        assert_eq!(DirectionPolicy::default().limit(Some(4.0)), None);
    }

    #[test]
    fn ceil_only_above_the_rate_and_burst_only_with_a_ceil() {
        let policy = DirectionPolicy {
            fixed: Some(1_000_000),
            ceil: Some(2_000_000),
            burst: Some(64_000),
            ..Default::default()
        };
        let limit = policy.limit(None).unwrap();
        assert_eq!((limit.ceil, limit.burst), (Some(2_000_000), Some(64_000)));
        let low_ceil = DirectionPolicy {
            ceil: Some(500_000),
            ..policy
        };
        let limit = low_ceil.limit(None).unwrap();
        assert_eq!((limit.ceil, limit.burst), (None, None));
    }
}
