//! Fuzzing of everything the agent parses from people and programs: flags and their
//! checks, `--resources`, Mesos byte sizes and durations, port lists, container ids
//! and control API bodies. Random and mutated inputs must never panic, and every
//! refusal must be one line. (Deterministic: a fixed seed, so a failure reproduces.)
use std::panic::{AssertUnwindSafe, catch_unwind};

use clap::Parser as _;

use super::{
    AgentArgs,
    resources::Resources,
    units::{Bytes, MesosDuration},
};
use crate::{
    control::{CreateRequest, UpdateRequest},
    net::container_network::check_id,
    ports::{self, PortRange},
};

/// The few things the fuzzer draws.
trait Draw {
    fn below(&mut self, n: usize) -> usize;
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str;
}

impl Draw for fastrand::Rng {
    fn below(&mut self, n: usize) -> usize {
        self.usize(..n)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.usize(..items.len())]
    }
}

/// Pieces inputs are made of: the syntax of every format, numbers at and past their
/// limits, and bytes that are not ASCII.
const PIECES: &[&str] = &[
    "0",
    "1",
    "9",
    "16",
    "1024",
    "31000",
    "32000",
    "65535",
    "65536",
    "99999999999999999999",
    "-",
    "-1",
    ":",
    ";",
    ",",
    "[",
    "]",
    "(",
    ")",
    "*",
    " ",
    "\t",
    "",
    ".",
    "..",
    "e9",
    "nan",
    "inf",
    "B",
    "KB",
    "MB",
    "GB",
    "TB",
    "ns",
    "us",
    "ms",
    "secs",
    "mins",
    "hrs",
    "days",
    "weeks",
    "ports",
    "ephemeral_ports",
    "cpus",
    "mem",
    "é",
    "\u{202e}",
    "\0",
    "{",
    "}",
    "\"",
    "=",
    "true",
    "false",
    "auto",
    "netiso",
];

/// Valid inputs of each format, to mutate.
const SEEDS: &[&str] = &[
    "ports:[31000-32000];ephemeral_ports:[32768-57344];cpus:8",
    "ports(*):[31000-31099, 31200-31299]",
    "37500KB",
    "50ms",
    "31000-31499,31600",
    "web-1.a_b",
    r#"{"id":"a","ports":[{"begin":31000,"end":31009}],"labels":{"k":"v"},"cpus":2}"#,
    r#"{"ports":[{"begin":1,"end":2}],"cpus":0.5}"#,
];

/// A random input: pieces glued together, or a seed with pieces inserted, removed or
/// replaced.
fn input(random: &mut fastrand::Rng) -> String {
    if random.below(2) == 0 {
        (0..random.below(12)).map(|_| random.pick(PIECES)).collect()
    } else {
        let mut text: Vec<char> = random.pick(SEEDS).chars().collect();
        for _ in 0..=random.below(4) {
            let at = random.below(text.len() + 1);
            let piece: Vec<char> = random.pick(PIECES).chars().collect();
            match random.below(3) {
                0 => drop(text.splice(at..at, piece)),
                1 if at < text.len() => drop(text.remove(at)),
                _ => drop(text.splice(at..(at + 1).min(text.len()), piece)),
            }
        }
        text.into_iter().collect()
    }
}

/// Inputs per parser: 3000, or `NETISO_PARSER_FUZZ_INPUTS` for a longer run (whose
/// seeds `NETISO_FUZZ_SEED` shifts).
fn inputs() -> (usize, u64) {
    let var = |name: &str| std::env::var(name).ok();
    (
        var("NETISO_PARSER_FUZZ_INPUTS")
            .and_then(|n| n.parse().ok())
            .unwrap_or(3000),
        var("NETISO_FUZZ_SEED")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
    )
}

/// Runs `parse` on many inputs: no panic, and every error one line.
fn fuzz<T>(what: &str, seed: u64, parse: impl Fn(&str) -> Result<T, String>) {
    let (count, shift) = inputs();
    let mut random = fastrand::Rng::with_seed(seed.wrapping_add(shift));
    for _ in 0..count {
        let text = input(&mut random);
        let outcome = catch_unwind(AssertUnwindSafe(|| parse(&text)));
        match outcome {
            Err(_) => panic!("{what} panicked on {text:?}"),
            Ok(Err(message)) => assert!(
                !message.contains('\n') && !message.is_empty(),
                "{what}: {text:?} gave a refusal that is not one line: {message:?}"
            ),
            Ok(Ok(_)) => {}
        }
    }
}

fn line(error: &anyhow::Error) -> String {
    format!("{error:#}")
}

#[test]
fn value_parsers_never_panic_and_refuse_in_one_line() {
    fuzz("--resources", 1, |t| {
        Resources::parse(t).map_err(|e| line(&e))
    });
    fuzz("byte sizes", 2, |t| {
        t.parse::<Bytes>().map_err(|e| line(&e))
    });
    fuzz("durations", 3, |t| {
        t.parse::<MesosDuration>().map_err(|e| line(&e))
    });
    fuzz("port lists", 4, |t| {
        ports::parse_list(t).map_err(|e| line(&e))
    });
    fuzz("port ranges", 5, |t| {
        t.parse::<PortRange>().map_err(|e| line(&e))
    });
    fuzz("container ids", 6, |t| check_id(t).map_err(|e| line(&e)));
    fuzz("create bodies", 7, |t| {
        let request: CreateRequest = serde_json::from_str(t).map_err(|e| e.to_string())?;
        request.check_sizes()?;
        check_id(&request.id).map_err(|e| line(&e))
    });
    fuzz("update bodies", 8, |t| {
        serde_json::from_str::<UpdateRequest>(t).map_err(|e| e.to_string())
    });
}

#[test]
fn agent_flags_never_panic_and_refuse_in_one_line() {
    const FLAGS: &[&str] = &[
        "--resources",
        "--ephemeral_ports_per_container",
        "--egress_rate_limit_per_container",
        "--egress_rate_per_cpu",
        "--minimum_egress_rate_limit",
        "--ingress_rate_per_cpu",
        "--network_link_speed",
        "--http_timeout",
        "--http_max_connections",
        "--isolation",
        "--egress_unique_flow_per_container",
        "--container_host_ports",
    ];
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }
    let (count, shift) = inputs();
    let mut random = fastrand::Rng::with_seed(9_u64.wrapping_add(shift));
    for _ in 0..count {
        let flag = random.pick(FLAGS);
        let value = input(&mut random);
        let argv = ["agent".to_owned(), format!("{flag}={value}")];
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            // clap's own refusals are multi-line usage texts by design; the agent's
            // checks after parsing must be one line.
            let Ok(cli) = Cli::try_parse_from(&argv) else {
                return Ok(());
            };
            let host = PortRange::new(32768, 60999).map_err(|e| line(&e))?;
            super::check(&cli.agent, host)
                .map(drop)
                .map_err(|e| line(&e))?;
            super::rate_policy(&cli.agent, Some(4.0), || Ok(10_000_000_000))
                .map(drop)
                .map_err(|e| line(&e))
        }));
        match outcome {
            Err(_) => panic!("{argv:?} panicked"),
            Ok(Err(message)) => assert!(
                !message.contains('\n'),
                "{argv:?}: a refusal that is not one line: {message:?}"
            ),
            Ok(Ok(())) => {}
        }
    }
}
