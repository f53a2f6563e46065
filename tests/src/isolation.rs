//! A lab with the datapath loaded in the test process and containers made through the
//! library, as the agent will make them: the container plumbing and the eBPF programs
//! are exercised directly, on a real kernel.
use netiso::{
    datapath::bpffs,
    datapath::{Datapath, DatapathLogLevel, Delivery, read_pinned_container_counters},
    net::{
        container_network::{self as container, ContainerNetwork, ContainerSpec},
        host::HostNetwork,
    },
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
    /// `None` between [`IsolationLab::stop_datapath`] and
    /// [`IsolationLab::start_datapath`], like an agent that is down.
    datapath: Option<Datapath>,
    pub host_network: HostNetwork,
    pub lab: Lab,
}

impl IsolationLab {
    /// A lab whose host namespace has the datapath loaded and attached to `eth0`.
    pub fn new() -> Self {
        let lab = Lab::new();
        let host_network = lab.host.run(|| {
            let mut host =
                HostNetwork::discover(PUBLIC_IFACE).expect("reading the public interface");
            host.prepare_loopback("lo").expect("preparing lo");
            host.container_device = crate::agent::container_device();
            host
        });
        let mut lab = Self {
            containers: Vec::new(),
            datapath: None,
            host_network,
            lab,
        };
        lab.start_datapath();
        lab
    }

    /// The loaded datapath; panics while it is stopped.
    pub fn datapath(&mut self) -> &mut Datapath {
        self.datapath.as_mut().expect("the datapath is stopped")
    }

    /// Drops the datapath object, as an agent exiting would: the kernel keeps every
    /// attachment and map.
    pub fn stop_datapath(&mut self) {
        self.datapath = None;
    }

    /// Loads the datapath (again) and gives it every container, as a restarted agent
    /// would: it takes over what the kernel kept.
    pub fn start_datapath(&mut self) {
        let pin_root = self.lab.pin_root().to_owned();
        let host = &self.host_network;
        let containers = &self.containers;
        let datapath = self.lab.host.run(|| {
            bpffs::prepare_pin_root(&pin_root).expect("preparing the pin directory");
            let mut datapath = Datapath::load(&pin_root, DatapathLogLevel::Off, host.public.mtu)
                .expect("loading the datapath");
            datapath
                .configure(host, 0, Delivery::Peer)
                .expect("configuring the datapath");
            datapath
                .attach_public_iface(PUBLIC_IFACE)
                .expect("attaching to the public interface");
            datapath.attach_host_lo("lo").expect("attaching to lo");
            for container in containers {
                datapath
                    .add_container(&container.network)
                    .expect("taking the container over");
            }
            datapath
        });
        self.datapath = Some(datapath);
    }

    /// Makes a container owning `ports` (like "31000-31499") and `ephemeral`, and
    /// returns its index in `containers`.
    pub fn add_container(&mut self, name: &str, ephemeral: &str, ports: &str) -> usize {
        let spec = ContainerSpec {
            // The lab's prefix lets a later lab remove it if this test gets killed.
            id: format!("lab-{}-{name}", self.lab.id),
            netns: None,
            slot: self.containers.len() as u32,
            interface: PUBLIC_IFACE.to_owned(),
            device: self.host_network.container_device,
            ephemeral: ephemeral.parse::<PortRange>().expect("ephemeral range"),
            ports: parse_list(ports).expect("port ranges"),
            port_mappings: Vec::new(),
        };
        let host = &self.host_network;
        let datapath = self.datapath.as_mut().expect("the datapath is stopped");
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

    /// Container `index`'s counters, read from the pinned map (so also while the
    /// datapath is stopped).
    pub fn counters(&self, index: usize) -> ContainerCounters {
        read_pinned_container_counters(self.lab.pin_root(), self.containers[index].network.slot)
            .expect("reading container counters")
    }
}

impl Default for IsolationLab {
    fn default() -> Self {
        Self::new()
    }
}
