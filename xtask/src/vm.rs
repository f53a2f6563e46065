//! `cargo xtask vm-test`: runs the kernel-dependent tests on Debian's generic kernels
//! under virtme-ng: 12's backported 6.12 (netkit, so containers get netkit pairs; tcx;
//! fq_codel, which the host kernel lacks), 11's 5.10, the oldest kernel netiso
//! supports (the first with `bpf_redirect_peer`; no tcx, so the netlink attach path),
//! and, with `--kernel 6.1`, 12's own 6.1.
use std::{
    env,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;

pub use crate::vm_kernels::Kernel;
use crate::{
    cmd::{build_test_agent, cargo, output, step, workspace_root},
    package, previous_release, setup, systemd_vm,
    vm_kernels::{kernel, vm_cache},
    vm_lanes::{self, Filters},
};

/// Test binaries of this package run in the VM: all of them touch the kernel.
const TEST_PACKAGE: &str = "netiso-tests";
/// Most time one VM's run may take. A full lab run takes about 35 minutes
/// under emulation on two cores (longer on a loaded host); CI allows 90 in all.
const VM_TIMEOUT: Duration = Duration::from_secs(55 * 60);

#[derive(Debug, Default, Args)]
pub struct VmTestArgs {
    /// Only run tests whose name contains this text; repeat for several (a test runs
    /// if it matches any).
    #[arg(long)]
    pub filter: Vec<String>,
    /// A kernel to boot; repeat for several. Without it (and without --systemd),
    /// 6.12 and 5.10, side by side, then the systemd VM.
    #[arg(long = "kernel", value_enum)]
    pub kernels: Vec<Kernel>,
    /// Boot the Debian 12 VM with systemd as PID 1 and test the Debian package there
    /// as a service (`tests/tests/systemd/`), after the kernels asked for, if any.
    #[arg(long)]
    pub systemd: bool,
}

/// What a VM run left.
struct VmRun {
    /// The VM, as reports name it: its kernel, or "systemd".
    name: &'static str,
    log: String,
    status: String,
    seconds: f64,
    out_dir: PathBuf,
    /// Names of which at least one test must have run (a lane's filters).
    expected: Vec<String>,
}

/// The systemd VM's packages: the previous release's and this tree's.
struct Packages {
    previous: PathBuf,
    new: PathBuf,
}

pub fn run(args: VmTestArgs) -> anyhow::Result<()> {
    setup::ensure()?;
    // Nothing asked for: every kernel and the systemd VM.
    let everything = args.kernels.is_empty() && !args.systemd;
    let kernels = if everything {
        vec![Kernel::Backports, Kernel::Debian11]
    } else {
        args.kernels.clone()
    };
    let systemd = everything || args.systemd;
    let vmlinuzes = kernels
        .iter()
        .map(|k| kernel(*k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    build_test_agent()?;
    let previous = previous_release::build()?;
    let built = [
        vec![workspace_root().join("target/debug/netiso")],
        test_binaries()?,
    ]
    .concat();
    let packages = if systemd {
        Some(Packages {
            previous: package::build_from(&previous, previous_release::VERSION)?,
            new: package::build_test_package()?,
        })
    } else {
        None
    };
    let vng = setup::vng().context("virtme-ng (vng) is missing; run `cargo xtask setup`")?;
    // Run beside 6.12 (the default), 5.10 takes a share of the lab tests, to keep CI
    // within its time.
    let beside = everything;
    if !vmlinuzes.is_empty() {
        step(&format!(
            "booting {} under emulation, side by side, and running {} test binaries in each (several minutes){}",
            vmlinuzes
                .iter()
                .map(|v| v.display().to_string())
                .collect::<Vec<_>>()
                .join(" and "),
            built.len() - 1,
            if systemd {
                "; the systemd VM follows the last"
            } else {
                ""
            },
        ));
    }
    let lanes = kernels.len().max(1);
    let runs: Vec<anyhow::Result<VmRun>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..lanes)
            .map(|lane| {
                let (built, vng, previous) = (&built, &vng, &previous);
                let (kernels, vmlinuzes, packages, args) = (&kernels, &vmlinuzes, &packages, &args);
                scope.spawn(move || {
                    let mut runs = Vec::new();
                    if let Some(kernel) = kernels.get(lane) {
                        let filters = match kernel {
                            _ if !args.filter.is_empty() => Filters::All(args.filter.clone()),
                            Kernel::Debian11 if beside => Filters::Lane(&vm_lanes::BESIDE_ON_5_10),
                            Kernel::Backports if beside => Filters::Lane(&vm_lanes::BESIDE_ON_6_12),
                            _ => Filters::All(Vec::new()),
                        };
                        runs.push(boot_and_test(
                            *kernel,
                            &vmlinuzes[lane],
                            built,
                            previous,
                            &filters,
                            vng,
                        ));
                    }
                    // The systemd VM follows the last kernel's, in the same lane (5.10's,
                    // the shorter when it runs beside 6.12).
                    if let Some(packages) = packages.as_ref().filter(|_| lane + 1 == lanes) {
                        runs.push(systemd_boot_and_test(built, packages));
                    }
                    runs
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![Err(anyhow::anyhow!("a VM runner panicked"))])
            })
            .collect()
    });
    let mut failures = Vec::new();
    for run in runs {
        match run.and_then(|run| report(&run)) {
            Ok(()) => {}
            Err(error) => failures.push(format!("{error:#}")),
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

/// Boots the systemd VM with the package tests' binary among `built`.
fn systemd_boot_and_test(built: &[PathBuf], packages: &Packages) -> anyhow::Result<VmRun> {
    let test_binary = built
        .iter()
        .find(|b| {
            b.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("systemd-"))
        })
        .context("the systemd test binary was not built")?;
    let files = systemd_vm::GuestFiles {
        test_binary,
        previous_deb: &packages.previous,
        new_deb: &packages.new,
    };
    let (log, status, seconds, out_dir) = systemd_vm::boot_and_test(&vm_cache()?, &files)?;
    Ok(VmRun {
        name: "systemd",
        log,
        status,
        seconds,
        out_dir,
        expected: Vec::new(),
    })
}

/// Copies the binaries into the kernel's own directory (the guest runs copies, so the
/// host may rebuild meanwhile), boots it and runs the tests.
fn boot_and_test(
    kernel: Kernel,
    vmlinuz: &Path,
    built: &[PathBuf],
    previous: &Path,
    filters: &Filters,
    vng: &Path,
) -> anyhow::Result<VmRun> {
    let out_dir = workspace_root().join(format!("target/vm-test-{}", kernel.name()));
    let _ = fs::remove_dir_all(&out_dir);
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let binaries = copy_into(&out_dir, built)?;
    let (netiso, binaries) = binaries.split_first().context("no binaries")?;
    let previous_copy = out_dir.join("bin/netiso-previous");
    copy_stripped(previous, &previous_copy)?;
    let agents = Agents {
        netiso,
        previous: &previous_copy,
    };
    let script = out_dir.join("guest.sh");
    fs::write(&script, guest_script(&agents, binaries, &out_dir, filters))
        .context("writing the guest script")?;
    let started = Instant::now();
    let mut vm = Command::new("timeout");
    vm.arg(VM_TIMEOUT.as_secs().to_string())
        .arg(vng)
        .arg("--run")
        .arg(vmlinuz)
        // KVM here is PVM, on which stock kernels do not boot; emulation works.
        .args(["--disable-kvm", "--cpus", "2", "--memory", "2G"])
        .arg("--rwdir")
        .arg(&out_dir)
        .arg("--exec")
        .arg(format!("sh {}", script.display()))
        .current_dir(workspace_root());
    let vm_output = vm.output().context("starting vng")?;
    let log = fs::read_to_string(out_dir.join("tests.log")).unwrap_or_default();
    let status = fs::read_to_string(out_dir.join("status")).unwrap_or_default();
    if status.trim().is_empty() {
        bail!(
            "the {} VM did not finish its tests (vng {}, after {:.0}s): {}",
            kernel.name(),
            vm_output.status,
            started.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&vm_output.stderr).trim()
        );
    }
    Ok(VmRun {
        name: kernel.name(),
        log,
        status,
        seconds: started.elapsed().as_secs_f64(),
        out_dir,
        expected: filters.expected(),
    })
}

/// Runs the benchmark `binary` (with `agent`, this tree's release build) in a VM
/// booting `which`, printing its output.
pub fn run_bench(which: Kernel, binary: &Path, agent: &Path) -> anyhow::Result<()> {
    let vmlinuz = kernel(which)?;
    let vng = setup::vng().context("virtme-ng (vng) is missing; run `cargo xtask setup`")?;
    let out_dir = workspace_root().join(format!("target/vm-bench-{}", which.name()));
    let _ = fs::remove_dir_all(&out_dir);
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let copies = copy_into(&out_dir, &[agent.to_owned(), binary.to_owned()])?;
    let log = out_dir.join("bench.log");
    // The benchmark's own settings (NETISO_TRAFFIC_COUNTS and the like) go along.
    let settings: String = env::vars()
        .filter(|(name, _)| name.starts_with("NETISO_TRAFFIC_"))
        .map(|(name, value)| format!(" {name}='{value}'"))
        .collect();
    let script = out_dir.join("guest.sh");
    fs::write(
        &script,
        format!(
            "mount -t bpf bpf /sys/fs/bpf 2>/dev/null\n\
             export NETISO_BIN={agent} NETISO_IN_VM=1{settings}\n\
             echo \"kernel $(uname -r)\" > {log}\n\
             {bench} >> {log} 2>&1\n\
             echo $? > {status}\n",
            agent = copies[0].display(),
            bench = copies[1].display(),
            log = log.display(),
            status = out_dir.join("status").display(),
        ),
    )
    .context("writing the guest script")?;
    step(&format!(
        "booting {} under emulation and running {} there (the figures are emulated: compare ratios only)",
        vmlinuz.display(),
        binary.display()
    ));
    let started = Instant::now();
    let vm_output = Command::new("timeout")
        .arg(VM_TIMEOUT.as_secs().to_string())
        .arg(&vng)
        .arg("--run")
        .arg(&vmlinuz)
        .args(["--disable-kvm", "--cpus", "2", "--memory", "4G"])
        .arg("--rwdir")
        .arg(&out_dir)
        .arg("--exec")
        .arg(format!("sh {}", script.display()))
        .current_dir(workspace_root())
        .output()
        .context("starting vng")?;
    let text = fs::read_to_string(&log).unwrap_or_default();
    println!("{text}");
    let status = fs::read_to_string(out_dir.join("status")).unwrap_or_default();
    if status.trim() != "0" {
        bail!(
            "the benchmark in the {} VM failed (vng {}, after {:.0}s; status '{}'); output in {}",
            which.name(),
            vm_output.status,
            started.elapsed().as_secs_f64(),
            status.trim(),
            log.display()
        );
    }
    Ok(())
}

/// How many of a VM's slowest tests its report names.
const SLOWEST_SHOWN: usize = 15;

/// Prints a VM run's verdicts and its slowest tests; fails if a test failed or none ran.
fn report(run: &VmRun) -> anyhow::Result<()> {
    let report = Report::parse(&run.log);
    let kernel = run
        .log
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("kernel "))
        .unwrap_or(run.name);
    // (The systemd VM's test is ignored in the others: not theirs to report.)
    for (name, verdict) in report
        .results
        .iter()
        .filter(|(_, v)| !v.starts_with("ignored"))
    {
        println!("    vm {kernel}: {verdict:<7} {name}");
    }
    // Where the VM's time went: its slowest tests.
    let mut slowest = report.seconds.clone();
    slowest.sort_by(|a, b| b.1.total_cmp(&a.1));
    let tested: f64 = slowest.iter().map(|(_, s)| s).sum();
    for (name, seconds) in slowest.iter().take(SLOWEST_SHOWN) {
        println!("    vm {kernel}: {seconds:>6.1}s  {name}");
    }
    let timed = if slowest.is_empty() {
        String::new()
    } else {
        format!("tests {tested:.0}s of ")
    };
    println!(
        "vm-test {}: {} passed, {} failed; {timed}the VM run's {:.0}s",
        run.name,
        report.passed(),
        report.failed(),
        run.seconds
    );
    let log_path = run.out_dir.join("tests.log");
    if report.failed() > 0 || run.status.trim() != "0" {
        eprintln!("--- test output from the {} VM ---\n{}", run.name, run.log);
        bail!(
            "VM tests on {} failed; full output in {}",
            run.name,
            log_path.display()
        );
    }
    // A lane's entry that matches no test would leave its check out unnoticed.
    let unmatched: Vec<&String> = run
        .expected
        .iter()
        .filter(|name| {
            !report
                .results
                .iter()
                .any(|(test, _)| test.contains(name.as_str()))
        })
        .collect();
    if !unmatched.is_empty() {
        bail!(
            "the {} VM ran no test named like {unmatched:?}: a test was renamed; update xtask/src/vm_lanes.rs",
            run.name
        );
    }
    if report.passed() == 0 {
        bail!(
            "the {} VM ran no test; output in {}",
            run.name,
            log_path.display()
        );
    }
    Ok(())
}

/// Builds the integration test binaries and returns their paths.
fn test_binaries() -> anyhow::Result<Vec<PathBuf>> {
    step("building the integration test binaries");
    let built = output(cargo().args([
        "test",
        "--package",
        TEST_PACKAGE,
        "--tests",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]))?;
    let binaries: Vec<PathBuf> = String::from_utf8_lossy(&built.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact" && msg["profile"]["test"] == true)
        .filter(|msg| {
            msg["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "test"))
        })
        .filter_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .collect();
    if binaries.is_empty() {
        bail!("no test binaries were built for {TEST_PACKAGE}");
    }
    Ok(binaries)
}

/// Copies `files` into `<out_dir>/bin` and returns the copies' paths, in order.
fn copy_into(out_dir: &Path, files: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let bin = out_dir.join("bin");
    fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    files
        .iter()
        .map(|file| {
            let copy = bin.join(file.file_name().context("a binary without a name")?);
            copy_stripped(file, &copy)?;
            Ok(copy)
        })
        .collect()
}

/// Copies the program `from` to `to` without its debug information (a fifth of the
/// size, for the guest's copy below; panics still name their lines), or whole where
/// `strip` is missing.
fn copy_stripped(from: &Path, to: &Path) -> anyhow::Result<()> {
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(to)
        .arg(from)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        fs::copy(from, to).with_context(|| format!("copying {} for the VM", from.display()))?;
    }
    Ok(())
}

/// Where the guest copies the agents it runs: its own tmpfs. A program started from
/// the shared directory (9p, uncached) reads its whole file again at every start,
/// about a second each under emulation against 0.2 s from the tmpfs, and the tests
/// start the agent and its command line hundreds of times.
const GUEST_AGENT_DIR: &str = "/run/netiso-vm";

/// The agents a VM's tests run: this tree's, and the previous release's.
struct Agents<'a> {
    netiso: &'a Path,
    previous: &'a Path,
}

fn guest_script(
    agents: &Agents,
    binaries: &[PathBuf],
    out_dir: &Path,
    filters: &Filters,
) -> String {
    let log = out_dir.join("tests.log");
    // The guest's PATH may find another Python than the one setup installed into.
    let python = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".to_owned());
    let guest_copy =
        |agent: &Path| Path::new(GUEST_AGENT_DIR).join(agent.file_name().unwrap_or_default());
    let mut script = format!(
        "# Runs inside the VM. The host's filesystem is visible read-only, except {out}.\n\
         mount -t bpf bpf /sys/fs/bpf 2>/dev/null\n\
         mkdir -p {GUEST_AGENT_DIR} && cp {netiso_shared} {previous_shared} {GUEST_AGENT_DIR}/\n\
         export NETISO_BIN={netiso} {previous_var}={previous} NETISO_PYTHON={python} RUST_BACKTRACE=1 NETISO_IN_VM=1\n\
         # Each test's time in the log (libtest's --report-time is unstable, hence the variable).\n\
         export RUSTC_BOOTSTRAP=1\n\
         echo \"kernel $(uname -r)\" > {log}\n\
         status=0\n",
        out = out_dir.display(),
        netiso_shared = agents.netiso.display(),
        previous_shared = agents.previous.display(),
        netiso = guest_copy(agents.netiso).display(),
        previous_var = previous_release::BIN_VARIABLE,
        previous = guest_copy(agents.previous).display(),
        log = log.display()
    );
    for binary in binaries {
        let _ = writeln!(
            script,
            "{bin} {TEST_ARGS} {filter} >> {log} 2>&1 || status=1",
            bin = binary.display(),
            filter = filters.for_binary(binary),
            log = log.display()
        );
        if let Some(filter) = filters.veth_pass(binary) {
            let _ = writeln!(
                script,
                "echo '{VETH_PASS_MARKER}' >> {log}\n\
                 NETISO_TEST_CONTAINER_DEVICE=veth {bin} {TEST_ARGS} {filter} >> {log} 2>&1 || status=1",
                bin = binary.display(),
                log = log.display()
            );
        }
    }
    let _ = writeln!(
        script,
        "echo $status > {}",
        out_dir.join("status").display()
    );
    script
}

/// libtest's arguments in a VM: one test at a time (the VM has two emulated CPUs),
/// each test's time after its verdict (`ok <12.345s>`).
const TEST_ARGS: &str = "--test-threads=1 -Z unstable-options --report-time";

/// The line the guest logs before the veth pass.
const VETH_PASS_MARKER: &str = "== the lab again, with veth containers";

/// Per-test verdicts read from libtest's output.
struct Report {
    results: Vec<(String, String)>,
    /// Each test's seconds, where libtest reported them.
    seconds: Vec<(String, f64)>,
}

impl Report {
    fn parse(log: &str) -> Self {
        // Tests of the veth pass (after its marker line) are named as such.
        let mut pass = "";
        let mut seconds = Vec::new();
        let results = log
            .lines()
            .filter_map(|line| {
                if line.starts_with(VETH_PASS_MARKER) {
                    pass = "[veth] ";
                }
                let rest = line.strip_prefix("test ")?;
                let (name, verdict) = rest.rsplit_once(" ... ")?;
                let name = format!("{pass}{name}");
                // "ok <12.345s>"
                let (verdict, time) = verdict
                    .trim()
                    .split_once(' ')
                    .unwrap_or((verdict.trim(), ""));
                if let Some(time) = time
                    .strip_prefix('<')
                    .and_then(|t| t.strip_suffix("s>"))
                    .and_then(|t| t.parse().ok())
                {
                    seconds.push((name.clone(), time));
                }
                Some((name, verdict.to_owned()))
            })
            .collect();
        Self { results, seconds }
    }

    fn passed(&self) -> usize {
        self.results.iter().filter(|(_, v)| v == "ok").count()
    }

    fn failed(&self) -> usize {
        self.results.iter().filter(|(_, v)| v == "FAILED").count()
    }
}
