//! The state directory: one JSON record per container
//! (`<state-dir>/containers/<id>.json`), written atomically, read back on recovery;
//! and, while a container is being created, an intent (`<id>.creating`) naming what
//! the create is about to make, so that a crash half-way leaves nothing recovery
//! cannot find and remove.
use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use super::model::ContainerInfo;

const INTENT_EXTENSION: &str = "creating";

/// What a create is about to make, by name: enough to find and remove it after a
/// crash.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Intent {
    pub id: String,
    /// The host end of its veth pair (`netiso<slot>`).
    pub host_veth: String,
}

fn remove_if_there(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Where containers are recorded.
pub struct Records {
    dir: PathBuf,
}

impl Records {
    /// Opens (creating it if needed) the records under `state_dir`. Both directories
    /// are root's alone (0700): records hold every container's labels. Records are
    /// written 0600.
    pub fn open(state_dir: &Path) -> anyhow::Result<Self> {
        let dir = state_dir.join("containers");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for private in [state_dir, dir.as_path()] {
            let mode = fs::metadata(private)
                .with_context(|| format!("reading {}", private.display()))?
                .permissions()
                .mode();
            if mode & 0o777 == 0o700 {
                continue;
            }
            // A read-only state directory still lets the agent serve what it records;
            // creates then fail, each with its reason.
            match fs::set_permissions(private, fs::Permissions::from_mode(0o700)) {
                Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
                    log::warn!(
                        "{} is read-only: containers cannot be created or destroyed",
                        private.display()
                    );
                }
                other => other.with_context(|| format!("making {} private", private.display()))?,
            }
        }
        Ok(Self { dir })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn intent_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.{INTENT_EXTENSION}"))
    }

    /// Writes a container's record atomically: a crash leaves the old file or the new
    /// one, never a torn one (a temporary file, synced, renamed over, directory synced).
    pub fn write(&self, info: &ContainerInfo) -> anyhow::Result<()> {
        let record = Record {
            version: RECORD_VERSION,
            info,
        };
        self.write_atomically(&info.id, &self.path(&info.id), &record)
    }

    fn write_atomically(
        &self,
        id: &str,
        path: &Path,
        value: &impl serde::Serialize,
    ) -> anyhow::Result<()> {
        let written = (|| -> io::Result<()> {
            let mut file = tempfile::Builder::new()
                .prefix(&format!(".{id}."))
                .suffix(".tmp")
                .tempfile_in(&self.dir)?;
            file.write_all(&serde_json::to_vec_pretty(value)?)?;
            file.as_file().sync_all()?;
            file.persist(path)?;
            fs::File::open(&self.dir)?.sync_all()
        })();
        written.with_context(|| {
            format!(
                "recording container {id} in {}; is the state directory writable and not full?",
                self.dir.display()
            )
        })
    }

    /// Removes container `id`'s record; none is fine.
    pub fn remove(&self, id: &str) -> anyhow::Result<()> {
        remove_if_there(&self.path(id))
            .with_context(|| format!("removing the record of container {id}"))
    }

    /// Records that container `id` is about to be made, with what: written before
    /// the first kernel change.
    pub fn begin(&self, intent: &Intent) -> anyhow::Result<()> {
        self.write_atomically(&intent.id, &self.intent_path(&intent.id), intent)
    }

    /// The create of container `id` is over (made and recorded, or undone).
    pub fn end(&self, id: &str) -> anyhow::Result<()> {
        remove_if_there(&self.intent_path(id))
            .with_context(|| format!("removing the intent of container {id}"))
    }

    /// Creates a crash interrupted: their intents, removed from the directory as they
    /// are read (the caller undoes what they name). An intent whose container was
    /// recorded in full is just removed.
    pub fn take_intents(&self) -> anyhow::Result<Vec<Intent>> {
        let mut intents = Vec::new();
        for entry in fs::read_dir(&self.dir)
            .with_context(|| format!("reading {}", self.dir.display()))?
            .flatten()
        {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != INTENT_EXTENSION) {
                continue;
            }
            match fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|bytes| Ok(serde_json::from_slice::<Intent>(&bytes)?))
            {
                Ok(intent) if !self.path(&intent.id).exists() => intents.push(intent),
                Ok(_) => {}
                Err(error) => log::warn!("ignoring unreadable {}: {error:#}", path.display()),
            }
            remove_if_there(&path)?;
        }
        Ok(intents)
    }

    /// Every readable record, and the veths of records this agent must leave alone
    /// (written by a newer netiso). Writes a crash interrupted are removed (the
    /// previous record, if any, stands); an unreadable record is named in a warning and
    /// moved aside to `<file>.bad`, and the rest are read.
    pub fn read_all(&self) -> anyhow::Result<Recorded> {
        let mut recorded = Recorded::default();
        for entry in fs::read_dir(&self.dir)
            .with_context(|| format!("reading {}", self.dir.display()))?
            .flatten()
        {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                let _ = fs::remove_file(&path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match read_record(&path) {
                Ok(Ok(info)) => recorded.records.push(info),
                Ok(Err((version, host_veth))) => {
                    log::warn!(
                        "record {} is of version {version}, from a newer netiso (this one reads version {RECORD_VERSION}); its container is left alone",
                        path.display()
                    );
                    recorded.foreign_veths.extend(host_veth);
                }
                Err(error) => {
                    let aside = path.with_extension("json.bad");
                    let moved = fs::rename(&path, &aside);
                    log::warn!(
                        "record {} is unreadable ({error:#}); {}; its container cannot be recovered",
                        path.display(),
                        match moved {
                            Ok(()) => format!("moved to {}", aside.display()),
                            Err(e) => format!("could not move it aside: {e}"),
                        }
                    );
                }
            }
        }
        Ok(recorded)
    }
}

/// What the state directory holds.
#[derive(Debug, Default, PartialEq)]
pub struct Recorded {
    pub records: Vec<ContainerInfo>,
    /// Host veths of containers recorded by a newer netiso.
    pub foreign_veths: Vec<String>,
}

/// The version of the records this agent writes and reads.
const RECORD_VERSION: u64 = 1;

/// A record as written: its version, then the container.
#[derive(serde::Serialize)]
struct Record<'a> {
    version: u64,
    #[serde(flatten)]
    info: &'a ContainerInfo,
}

/// A record's container, or (for a record of another version) that version and the
/// container's veth if it says.
fn read_record(path: &Path) -> anyhow::Result<Result<ContainerInfo, (u64, Option<String>)>> {
    let value: serde_json::Value = serde_json::from_slice(&fs::read(path)?)?;
    // Records of the first agents have no version: they are version 1.
    let version = value
        .get("version")
        .map_or(Some(RECORD_VERSION), serde_json::Value::as_u64)
        .context("its version is not a number")?;
    if version != RECORD_VERSION {
        let veth = value["host_veth"].as_str().map(str::to_owned);
        return Ok(Err((version, veth)));
    }
    Ok(Ok(serde_json::from_value(value)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{net::ContainerDevice, ports::PortRange};

    fn info(id: &str) -> ContainerInfo {
        ContainerInfo {
            id: id.to_owned(),
            netns: format!("/run/netns/netiso-{id}").into(),
            ephemeral_ports: PortRange::new(32768, 32783).unwrap(),
            ports: vec![PortRange::new(31000, 31009).unwrap()],
            port_mappings: Vec::new(),
            host_veth: "netiso3".into(),
            device: ContainerDevice::Netkit,
            adopted: false,
            interface: Some("eth0".into()),
            attachment: None,
            bandwidth: None,
            labels: std::collections::BTreeMap::new(),
            cpus: None,
            egress_limit: None,
            ingress_limit: None,
            egress_flow: Some(4),
            previous_sysctls: std::collections::BTreeMap::new(),
        }
    }

    #[test]
    fn records_round_trip_and_leftovers_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::open(dir.path()).unwrap();
        records.write(&info("a")).unwrap();
        let mut second = info("a");
        second.ports.clear();
        records.write(&second).unwrap();
        records.write(&info("b")).unwrap();
        // What a crash in the middle of a write leaves, and a torn file.
        let containers = dir.path().join("containers");
        fs::write(containers.join(".c.x1.tmp"), "{").unwrap();
        fs::write(containers.join("d.json"), "{").unwrap();
        let mut all = records.read_all().unwrap().records;
        all.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(all, vec![second, info("b")]);
        assert!(!containers.join(".c.x1.tmp").exists());
        assert!(
            containers.join("d.json.bad").exists(),
            "the torn one is kept aside"
        );
        records.remove("a").unwrap();
        records.remove("a").unwrap();
        assert_eq!(records.read_all().unwrap().records, vec![info("b")]);
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&containers), 0o700);
        assert_eq!(mode(&containers.join("b.json")), 0o600);
    }

    #[test]
    fn records_of_a_newer_version_are_left_alone_and_old_ones_read() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::open(dir.path()).unwrap();
        let containers = dir.path().join("containers");
        let mut newer = serde_json::to_value(info("n")).unwrap();
        newer["version"] = 2.into();
        fs::write(containers.join("n.json"), newer.to_string()).unwrap();
        // Written by the first agents: no version.
        let old = serde_json::to_value(info("o")).unwrap();
        fs::write(containers.join("o.json"), old.to_string()).unwrap();
        let recorded = records.read_all().unwrap();
        assert_eq!(recorded.records, vec![info("o")]);
        assert_eq!(recorded.foreign_veths, vec!["netiso3".to_owned()]);
        assert!(
            containers.join("n.json").exists(),
            "kept for the newer agent"
        );
        records.write(&info("w")).unwrap();
        let written: serde_json::Value =
            serde_json::from_slice(&fs::read(containers.join("w.json")).unwrap()).unwrap();
        assert_eq!(written["version"], 1);
    }

    #[test]
    fn intents_of_interrupted_creates_are_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::open(dir.path()).unwrap();
        let intent = |id: &str| Intent {
            id: id.to_owned(),
            host_veth: "netiso1".into(),
        };
        records.begin(&intent("half")).unwrap();
        records.begin(&intent("b")).unwrap();
        records.write(&info("b")).unwrap();
        records.begin(&intent("done")).unwrap();
        records.end("done").unwrap();
        assert_eq!(records.read_all().unwrap().records, vec![info("b")]);
        assert_eq!(records.take_intents().unwrap(), vec![intent("half")]);
        assert_eq!(records.take_intents().unwrap(), vec![]);
    }
}
