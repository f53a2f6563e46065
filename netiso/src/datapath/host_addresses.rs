//! The host's addresses as the datapath knows them (`HOST_ADDRESSES`): what a
//! container sends to any of them goes to the host's services, not out to the
//! network. Addresses come and go, so a thread of the agent's keeps the map in step.
use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use anyhow::Context as _;
use aya::maps::{HashMap, Map, MapData};
use netiso_common::{HOST_ADDRESSES_MAP, HostAddress};

use crate::net::NetlinkSocket;

/// How often the addresses are read again.
const REFRESH: Duration = Duration::from_secs(2);

fn key(address: IpAddr) -> HostAddress {
    let mut bytes = [0u8; 16];
    let ipv6 = match address {
        IpAddr::V4(a) => {
            bytes[..4].copy_from_slice(&a.octets());
            0
        }
        IpAddr::V6(a) => {
            bytes = a.octets();
            1
        }
    };
    HostAddress {
        address: bytes,
        ipv6,
        _pad: [0; 3],
    }
}

/// The pinned map, opened for writing.
pub struct HostAddresses {
    map: HashMap<MapData, HostAddress, u8>,
}

impl HostAddresses {
    pub fn open(pin_root: &Path) -> anyhow::Result<Self> {
        let pin = pin_root.join(HOST_ADDRESSES_MAP);
        let data = MapData::from_pin(&pin)
            .with_context(|| format!("opening pinned map {}", pin.display()))?;
        Ok(Self {
            map: HashMap::try_from(Map::from_map_data(data)?)?,
        })
    }

    /// Makes the map hold exactly `addresses`; whether anything changed.
    pub fn set(&mut self, addresses: &[IpAddr]) -> anyhow::Result<bool> {
        let wanted: BTreeSet<HostAddress> = addresses.iter().copied().map(key).collect();
        let present: BTreeSet<HostAddress> = self.map.keys().filter_map(Result::ok).collect();
        for gone in present.difference(&wanted) {
            let _ = self.map.remove(gone);
        }
        for new in wanted.difference(&present) {
            self.map
                .insert(*new, 1, 0)
                .context("recording a host address for the datapath")?;
        }
        Ok(wanted != present)
    }

    /// Reads the host's addresses in the calling thread's namespace and records them.
    pub fn refresh(&mut self) -> anyhow::Result<bool> {
        let addresses = NetlinkSocket::route()
            .context("opening a netlink socket")?
            .all_addresses()?;
        self.set(&addresses)
    }
}

/// Records the host's addresses now, then keeps them up to date from a thread of its
/// own (in the caller's network namespace: threads start in their parent's).
pub fn keep_up_to_date(pin_root: &Path) -> anyhow::Result<()> {
    let mut addresses = HostAddresses::open(pin_root)?;
    addresses.refresh()?;
    let pin_root: PathBuf = pin_root.to_owned();
    thread::Builder::new()
        .name("netiso-addresses".into())
        .spawn(move || {
            loop {
                thread::sleep(REFRESH);
                match addresses.refresh() {
                    Ok(true) => log::info!("the host's addresses changed; the datapath follows"),
                    Ok(false) => {}
                    Err(error) => log::warn!(
                        "reading the host's addresses for {}: {error:#}",
                        pin_root.display()
                    ),
                }
            }
        })
        .context("starting the host address thread")?;
    Ok(())
}
