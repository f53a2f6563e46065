//! A lab with the datapath loaded in the test process and containers made through the
//! library, as the agent will make them: the container plumbing and the eBPF programs
//! are exercised directly, on a real kernel.
use netiso::{
    bpffs,
    container::{self, ContainerNetwork, ContainerSpec, HostNetwork},
    datapath::Datapath,
    ports::{PortRange, parse_list},
};
use netiso_common::ContainerCounters;

use crate::{
    lab::{Lab, PUBLIC_IFACE},
    netns::Netns,
};

/// A container of the lab. Dropping it removes its namespace, which takes its veth pair
/// along.
pub struct TestContainer {
    pub network: ContainerNetwork,
    pub netns: Netns,
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        let _ = container::destroy_namespace(&self.network.id);
    }
}

/// Field order is drop order: containers, then the datapath, then the namespaces.
pub struct IsolationLab {
    pub containers: Vec<TestContainer>,
    pub datapath: Datapath,
    pub host_network: HostNetwork,
    pub lab: Lab,
}

impl IsolationLab {
    /// A lab whose host namespace has the datapath loaded and attached to `eth0`.
    pub fn new() -> Self {
        let lab = Lab::new();
        let pin_root = lab.pin_root().to_owned();
        let (datapath, host_network) = lab.host.run(|| {
            bpffs::prepare_pin_root(&pin_root).expect("preparing the pin directory");
            let host = HostNetwork::discover(PUBLIC_IFACE).expect("reading the public interface");
            let mut datapath = Datapath::load(&pin_root).expect("loading the datapath");
            datapath.configure(&host).expect("configuring the datapath");
            datapath
                .attach_public_iface(PUBLIC_IFACE)
                .expect("attaching to the public interface");
            datapath.attach_host_lo("lo").expect("attaching to lo");
            host.prepare_loopback("lo").expect("preparing lo");
            (datapath, host)
        });
        Self {
            containers: Vec::new(),
            datapath,
            host_network,
            lab,
        }
    }

    /// Makes a container owning `ports` (like "31000-31499") and `ephemeral`, and
    /// returns its index in `containers`.
    pub fn add_container(&mut self, name: &str, ephemeral: &str, ports: &str) -> usize {
        let spec = ContainerSpec {
            // The lab's prefix lets a later lab remove it if this test gets killed.
            id: format!("lab-{}-{name}", self.lab.id),
            slot: self.containers.len() as u32,
            ephemeral: ephemeral.parse::<PortRange>().expect("ephemeral range"),
            ports: parse_list(ports).expect("port ranges"),
        };
        let host = &self.host_network;
        let datapath = &mut self.datapath;
        let network = self.lab.host.run(|| {
            let network = container::create(host, &spec).expect("creating the container");
            datapath
                .add_container(&network)
                .expect("adding the container to the datapath");
            network
        });
        let netns = Netns::existing(&format!("{}{}", container::NETNS_PREFIX, spec.id));
        self.containers.push(TestContainer { network, netns });
        self.containers.len() - 1
    }

    pub fn container(&self, index: usize) -> &TestContainer {
        &self.containers[index]
    }

    pub fn counters(&self, index: usize) -> ContainerCounters {
        self.datapath
            .container_counters(self.containers[index].network.slot)
            .expect("reading container counters")
    }
}

impl Default for IsolationLab {
    fn default() -> Self {
        Self::new()
    }
}
