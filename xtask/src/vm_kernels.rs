//! The kernels the VMs boot: Debian's generic kernel packages, each from its archive
//! (through a private apt list where it is not this machine's own), downloaded and
//! unpacked into the VM cache, never installed on the host.
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::cmd::{self, output};

/// Debian's meta package whose dependency names the current generic kernel.
const KERNEL_META_PACKAGE: &str = "linux-image-amd64";

/// A kernel the VM tests boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Kernel {
    /// Debian 12's 6.1, from this machine's own apt sources.
    #[default]
    #[value(name = "6.1")]
    Debian12,
    /// Debian 11's 5.10, from Debian's security archive (signed by the archive keys
    /// this machine already trusts).
    #[value(name = "5.10")]
    Debian11,
    /// Debian 12's backported 6.12, from bookworm-backports: netkit (6.7 and later),
    /// tcx, fq_codel.
    #[value(name = "6.12")]
    Backports,
}

impl Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Debian12 => "6.1",
            Kernel::Debian11 => "5.10",
            Kernel::Backports => "6.12",
        }
    }

    /// The archive this kernel comes from, if not the machine's own: a directory
    /// name for its private apt lists, and its sources line.
    fn archive(self) -> Option<(&'static str, &'static str)> {
        match self {
            Kernel::Debian12 => None,
            Kernel::Debian11 => Some((
                "bullseye-apt",
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main",
            )),
            Kernel::Backports => Some((
                "bookworm-backports-apt",
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main",
            )),
        }
    }

    /// apt options that make apt read this kernel's archive (none: the machine's).
    fn apt_options(self, cache: &Path) -> anyhow::Result<Vec<String>> {
        let Some((lists, sources_line)) = self.archive() else {
            return Ok(Vec::new());
        };
        let apt = cache.join(lists);
        let sources = apt.join("sources.list");
        let options = vec![
            format!("-oDir::Etc::SourceList={}", sources.display()),
            "-oDir::Etc::SourceParts=/dev/null".to_owned(),
            format!("-oDir::State::Lists={}", apt.join("lists").display()),
            format!("-oDir::Cache={}", apt.join("cache").display()),
            "-oDir::State::status=/dev/null".to_owned(),
        ];
        if !apt.join("lists").exists() {
            for dir in ["lists/partial", "cache/archives/partial"] {
                fs::create_dir_all(apt.join(dir))?;
            }
            fs::write(&sources, format!("{sources_line}\n"))?;
            let updated = cmd::run(
                &format!(
                    "reading the archive index of the {} kernel (apt-get update, private lists)",
                    self.name()
                ),
                Command::new("apt-get").arg("update").args(&options),
            );
            if let Err(error) = updated {
                let _ = fs::remove_dir_all(apt.join("lists"));
                return Err(error);
            }
        }
        Ok(options)
    }
}
/// Downloads and unpacks Debian's generic kernel into a cache (never installed on the
/// host) and returns its vmlinuz.
pub fn kernel(which: Kernel) -> anyhow::Result<PathBuf> {
    let cache = vm_cache()?;
    let apt_options = which.apt_options(&cache)?;
    let depends = output(
        Command::new("apt-cache")
            .args(&apt_options)
            .args(["depends", KERNEL_META_PACKAGE]),
    )?;
    let package = String::from_utf8_lossy(&depends.stdout)
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Depends: linux-image-")
                .map(str::to_owned)
        })
        .map(|rest| format!("linux-image-{rest}"))
        .with_context(|| {
            format!("apt-cache knows no dependency of {KERNEL_META_PACKAGE}; run `apt-get update`")
        })?;
    let tree = cache.join(&package);
    let version = package.trim_start_matches("linux-image-");
    let vmlinuz = tree.join(format!("boot/vmlinuz-{version}"));
    if vmlinuz.exists() {
        return Ok(vmlinuz);
    }
    cmd::run(
        &format!("downloading {package} into {}", cache.display()),
        Command::new("apt-get")
            .args(&apt_options)
            .args(["download", &package])
            .current_dir(&cache),
    )?;
    let deb = fs::read_dir(&cache)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
        })
        .context("apt-get download left no .deb")?;
    let unpacking = tree.with_extension("partial");
    let _ = fs::remove_dir_all(&unpacking);
    cmd::run(
        &format!("unpacking {}", deb.display()),
        Command::new("dpkg").arg("-x").arg(&deb).arg(&unpacking),
    )?;
    // Rename last, so an interrupted unpack is never mistaken for a complete one.
    fs::rename(&unpacking, &tree)?;
    fs::remove_file(&deb)?;
    if !vmlinuz.exists() {
        bail!("{} has no {}", package, vmlinuz.display());
    }
    Ok(vmlinuz)
}

/// Where the VMs' kernels and images are kept between runs.
pub fn vm_cache() -> anyhow::Result<PathBuf> {
    let cache =
        env::var_os("NETISO_VM_CACHE").map_or_else(|| cmd::cache_dir().join("vm"), PathBuf::from);
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    Ok(cache)
}
