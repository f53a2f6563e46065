//! Datapath fuzzing against the model (`model.rs`): generated and mutated frames —
//! every EtherType, IPv4 options, IPv6 extension-header chains, fragments, VLAN tags,
//! bogus headers, truncation at any byte, other MACs — through every program, each
//! compared with the model's verdict and counters.
//! A fixed seed runs with every `cargo test`; `cargo xtask fuzz` runs longer ones
//! (`NETISO_FUZZ_FRAMES`, `NETISO_FUZZ_SEED`) and reports frames per second.
use std::time::Instant;

use super::{
    fixtures::*,
    model::{Model, Verdict},
};

/// xorshift64*: small, and the same frames for the same seed everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[self.below(choices.len())]
    }
}

const V4: [[u8; 4]; 9] = [
    [198, 18, 0, 1],
    [198, 18, 0, 2],
    [198, 18, 0, 99],
    [127, 0, 0, 1],
    [127, 1, 2, 3],
    [0, 0, 0, 0],
    [224, 0, 0, 251],
    [255, 255, 255, 255],
    [169, 254, 1, 1],
];
const V6: [&str; 8] = [
    "2001:db8::1",
    "2001:db8::2",
    "2001:db8::99",
    "::1",
    "::",
    "ff02::1",
    "fe80::1",
    "::ffff:198.18.0.2",
];
const PORTS: [u16; 10] = [
    30016, 30020, 31000, 31499, 31500, 32000, 40000, 53, 22, 5051,
];
/// Every program of the datapath.
const PROGRAMS: [&str; 6] = [
    PUBLIC_INGRESS_PROGRAM,
    PUBLIC_EGRESS_PROGRAM,
    HOST_LO_INGRESS_PROGRAM,
    CONTAINER_VETH_INGRESS_PROGRAM,
    CONTAINER_LO_EGRESS_COPY_PROGRAM,
    CONTAINER_ETH0_INGRESS_PROGRAM,
];
const ICMP_TYPES: [u8; 9] = [0, 3, 5, 8, 11, 12, 13, 4, 17];
const ICMPV6_TYPES: [u8; 10] = [1, 2, 3, 4, 128, 129, 130, 133, 135, 143];

fn address(rng: &mut Rng, ipv6: bool, usual: usize) -> Vec<u8> {
    let index = if rng.chance(70) {
        usual
    } else {
        rng.below(V4.len().min(V6.len()))
    };
    if ipv6 {
        V6[index].parse::<Ipv6Addr>().unwrap().octets().to_vec()
    } else {
        V4[index].to_vec()
    }
}

/// A transport header and payload for `protocol`.
fn transport(rng: &mut Rng, protocol: u8, ipv6: bool, depth: usize) -> Vec<u8> {
    match protocol {
        IPPROTO_TCP => tcp_segment(rng.pick(&PORTS), rng.pick(&PORTS)),
        IPPROTO_UDP => udp_segment(rng.pick(&PORTS), rng.pick(&PORTS), rng.below(24)),
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let icmp_type = if ipv6 {
                rng.pick(&ICMPV6_TYPES)
            } else {
                rng.pick(&ICMP_TYPES)
            };
            let code = rng.pick(&[0u8, 1, 3, 4]);
            if matches!(icmp_type, 0 | 8 | 13 | 128 | 129) || depth > 0 {
                let mut message = echo(icmp_type, rng.pick(&[1u16, 0x4242, 30020, 31000]));
                message[1] = code;
                message
            } else {
                // An error quoting a packet between the host and the remote.
                let inner_protocol = rng.pick(&[IPPROTO_UDP, IPPROTO_TCP, IPPROTO_ICMP]);
                let outbound = rng.chance(50);
                let inner = packet(rng, ipv6, inner_protocol, depth + 1, outbound);
                icmp_error(icmp_type, code, 1280, &inner)
            }
        }
        _ => vec![0u8; rng.below(16)],
    }
}

/// An IP packet (no Ethernet header) between the host and the remote, or odd ones:
/// from the host (a container) to the remote (`outbound`), or the other way round.
fn packet(rng: &mut Rng, ipv6: bool, protocol: u8, depth: usize, outbound: bool) -> Vec<u8> {
    let (src, dst) = if outbound {
        let src = if rng.chance(85) {
            address(rng, ipv6, 0)
        } else {
            address(rng, ipv6, 2)
        };
        let local = rng.chance(30);
        (src, address(rng, ipv6, if local { 0 } else { 1 }))
    } else {
        (address(rng, ipv6, 1), address(rng, ipv6, 0))
    };
    let l4 = transport(rng, protocol, ipv6, depth);
    let id = rng.pick(&[1u16, 2, 3]);
    let (fragment_offset, more) = match rng.below(10) {
        0 => (0, true),
        1 => (rng.pick(&[1u16, 3, 100]), rng.chance(50)),
        _ => (0, false),
    };
    if ipv6 {
        let mut chain = Vec::new();
        let headers: Vec<u8> = (0..rng.pick(&[0, 0, 1, 2, 3]))
            .map(|_| rng.pick(&[0u8, 60, 43, 44]))
            .collect();
        let mut next_header = protocol;
        for header in headers.iter().rev() {
            let mut piece = if *header == 44 {
                ipv6_fragment(next_header, fragment_offset, more, u32::from(id))
            } else {
                ipv6_ext_header(next_header, rng.pick(&[0u8, 1]))
            };
            piece.extend_from_slice(&chain);
            chain = piece;
            next_header = *header;
        }
        chain.extend_from_slice(&l4);
        let src = Ipv6Addr::from(<[u8; 16]>::try_from(src).unwrap());
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(dst).unwrap());
        ipv6_packet(src, dst, next_header, &chain)
    } else {
        let options = vec![1u8; 4 * rng.pick(&[0, 0, 0, 1, 3])];
        let flags = fragment_offset | if more { 0x2000 } else { 0 };
        let src = Ipv4Addr::from(<[u8; 4]>::try_from(src).unwrap());
        let dst = Ipv4Addr::from(<[u8; 4]>::try_from(dst).unwrap());
        let mut packet = ipv4_packet_full(src, dst, protocol, &options, flags, &l4);
        packet[4..6].copy_from_slice(&id.to_be_bytes());
        packet
    }
}

/// A frame for `public_ingress` (`outbound` false) or from container 0.
fn generate(rng: &mut Rng, outbound: bool) -> Vec<u8> {
    let ethertype = match rng.below(100) {
        0..=44 => ETH_P_IP,
        45..=89 => ETH_P_IPV6,
        90..=92 => ETH_P_ARP,
        93..=95 => ETH_P_8021Q,
        _ => rng.next() as u16,
    };
    let ipv6 = ethertype == ETH_P_IPV6;
    let protocol = match rng.below(100) {
        0..=29 => IPPROTO_TCP,
        30..=59 => IPPROTO_UDP,
        60..=84 if ipv6 => IPPROTO_ICMPV6,
        60..=84 => IPPROTO_ICMP,
        _ => rng.pick(&[IPPROTO_GRE, 0, 99]),
    };
    let payload = if ethertype == ETH_P_IP || ethertype == ETH_P_IPV6 {
        packet(rng, ipv6, protocol, 0, outbound)
    } else {
        vec![0x45; rng.below(60)]
    };
    let dst_mac = if !outbound && rng.chance(10) {
        [0x02, 0x11, 0x22, 0x33, 0x44, 0x55]
    } else {
        [0; 6]
    };
    let src_mac = match rng.below(20) {
        0 => [0; 6],
        1 => [0x02, 0x99, 0, 0, 0, 1],
        _ => [0x02, 0, 0, 0, 0, 2],
    };
    let mut frame = with_macs(frame(ethertype, &payload), dst_mac, src_mac);
    if rng.chance(10) && frame.len() > 14 {
        let at = 14 + rng.below(frame.len() - 14);
        frame[at] ^= 1 << rng.below(8);
    }
    if rng.chance(15) && frame.len() > 14 {
        frame.truncate(14 + rng.below(frame.len() - 14));
    }
    frame
}

/// Runs `program` on `frame`; `None` if the kernel refuses to.
fn try_run(ebpf: &Ebpf, program: &str, frame: &[u8]) -> Option<u32> {
    let program: &SchedClassifier = ebpf.program(program).unwrap().try_into().unwrap();
    program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            ..Default::default()
        })
        .ok()
        .map(|result| result.return_value)
}

/// Runs `count` frames from `seed`: the disagreements, the frames the kernel refused
/// to test-run, the seconds taken.
fn fuzz(seed: u64, count: usize) -> (Vec<String>, usize, f64) {
    let mut rng = Rng(seed | 1);
    let (inbound, outbound) = (datapath(), datapath());
    // The netkit program sees every outbound frame too, on a datapath of its own.
    let netkit = datapath();
    let (mut inbound_model, mut outbound_model) = (Model::default(), Model::default());
    let mut disagreements = Vec::new();
    let mut refused = 0;
    let mut seen = std::collections::BTreeMap::new();
    let started = Instant::now();
    for index in 0..count {
        let program = rng.pick(&PROGRAMS);
        let from_container = matches!(
            program,
            CONTAINER_VETH_INGRESS_PROGRAM
                | CONTAINER_LO_EGRESS_COPY_PROGRAM
                | CONTAINER_ETH0_INGRESS_PROGRAM
        );
        let frame = generate(&mut rng, from_container);
        // Programs that keep state (counters, the fragment and echo tables) run on
        // the datapath of their side.
        let (ebpf, model) = if from_container {
            (&outbound, &mut outbound_model)
        } else {
            (&inbound, &mut inbound_model)
        };
        // The kernel refuses to test-run IP frames shorter than an IP header (the lab
        // sends those through a real interface).
        let Some(code) = try_run(ebpf, program, &frame) else {
            refused += 1;
            continue;
        };
        let verdict = Verdict::of(code);
        // The shared loopback program must decide as the per-container copy does.
        if program == CONTAINER_LO_EGRESS_COPY_PROGRAM && kernel_has_shared_loopback() {
            let shared = try_run(ebpf, CONTAINER_LO_EGRESS_PROGRAM, &frame).map(Verdict::of);
            if shared != Some(verdict) {
                disagreements.push(format!(
                    "frame {index}: the shared loopback program says {shared:?}, its copy {verdict:?}"
                ));
            }
        }
        // The netkit pair's program must decide and count as the veth's does; it drops
        // by a redirect to no device (the counters tell that from a forward).
        if program == CONTAINER_VETH_INGRESS_PROGRAM {
            let on_netkit =
                try_run(&netkit, CONTAINER_NETKIT_PEER_PROGRAM, &frame).map(Verdict::of);
            let counted = [counters(&netkit, 0), counters(&netkit, 1)];
            let veth_counted = [counters(ebpf, 0), counters(ebpf, 1)];
            let expected = match verdict {
                Some(Verdict::Shot) => Some(Verdict::Redirect),
                other => other,
            };
            if on_netkit != Some(expected) || counted != veth_counted {
                disagreements.push(format!(
                    "frame {index}: the netkit program says {on_netkit:?} and counts {counted:?}, the veth program {verdict:?} and {veth_counted:?}"
                ));
            }
        }
        *seen.entry((program, verdict)).or_insert(0) += 1;
        let expected = match program {
            PUBLIC_INGRESS_PROGRAM => model.inbound(&frame),
            // It counts and picks flows; it never decides a packet's fate.
            PUBLIC_EGRESS_PROGRAM => Verdict::Pipe,
            HOST_LO_INGRESS_PROGRAM => model.host_loopback(&frame),
            CONTAINER_VETH_INGRESS_PROGRAM => model.outbound(&frame),
            CONTAINER_LO_EGRESS_COPY_PROGRAM => Model::container_loopback(&frame),
            _ => Model::container_eth0(&frame),
        };
        let counters = [counters(ebpf, 0), counters(ebpf, 1)];
        if verdict != Some(expected) || counters != model.counters {
            disagreements.push(format!(
                "frame {index} through {program}: {verdict:?}, the model {expected:?}; counters {counters:?}, the model {:?}; frame {}",
                model.counters,
                frame.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ));
            // Carry on from the datapath's counters, to find the next disagreement.
            model.counters = counters;
        }
    }
    println!("fuzz verdicts (program, verdict): {seen:?}");
    (disagreements, refused, started.elapsed().as_secs_f64())
}

#[test]
fn the_datapath_agrees_with_its_model_on_generated_frames() {
    let seed = std::env::var("NETISO_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6e65_7469_736f);
    let count = std::env::var("NETISO_FUZZ_FRAMES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let (disagreements, refused, seconds) = fuzz(seed, count);
    println!(
        "fuzz: {count} frames (seed {seed}; {refused} too short for a test run) in {seconds:.1}s, {:.0} frames/s, {} disagreements",
        count as f64 / seconds,
        disagreements.len()
    );
    assert!(refused < count / 4, "most frames were refused: {refused}");
    assert!(
        disagreements.is_empty(),
        "{} disagreements, the first: {}",
        disagreements.len(),
        disagreements
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
