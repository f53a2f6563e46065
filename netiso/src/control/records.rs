//! The state directory: one JSON record per container
//! (`<state-dir>/containers/<id>.json`), written atomically, read back on recovery.
use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use super::model::ContainerInfo;

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
            fs::set_permissions(private, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("making {} private", private.display()))?;
        }
        Ok(Self { dir })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes a container's record atomically: a crash leaves the old file or the new
    /// one, never a torn one (a temporary file, synced, renamed over, directory synced).
    pub fn write(&self, info: &ContainerInfo) -> anyhow::Result<()> {
        let path = self.path(&info.id);
        let mut file = tempfile::Builder::new()
            .prefix(&format!(".{}.", info.id))
            .suffix(".tmp")
            .tempfile_in(&self.dir)
            .with_context(|| format!("writing a record in {}", self.dir.display()))?;
        file.write_all(&serde_json::to_vec_pretty(info)?)?;
        file.as_file().sync_all()?;
        file.persist(&path)
            .with_context(|| format!("renaming to {}", path.display()))?;
        fs::File::open(&self.dir)?.sync_all()?;
        Ok(())
    }

    /// Removes container `id`'s record; none is fine.
    pub fn remove(&self, id: &str) -> anyhow::Result<()> {
        match fs::remove_file(self.path(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing the state of {id}")),
        }
    }

    /// Every readable record. Writes a crash interrupted are removed (the previous
    /// record, if any, stands); unreadable records are skipped with a warning.
    pub fn read_all(&self) -> anyhow::Result<Vec<ContainerInfo>> {
        let mut records = Vec::new();
        for entry in fs::read_dir(&self.dir)
            .with_context(|| format!("reading {}", self.dir.display()))?
            .flatten()
        {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                let _ = fs::remove_file(&path);
                continue;
            }
            match fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|bytes| Ok(serde_json::from_slice::<ContainerInfo>(&bytes)?))
            {
                Ok(info) => records.push(info),
                Err(error) => {
                    log::warn!("ignoring unreadable record {}: {error:#}", path.display());
                }
            }
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::PortRange;

    fn info(id: &str) -> ContainerInfo {
        ContainerInfo {
            id: id.to_owned(),
            netns: format!("/run/netns/netiso-{id}").into(),
            ephemeral_ports: PortRange::new(32768, 32783).unwrap(),
            ports: vec![PortRange::new(31000, 31009).unwrap()],
            host_veth: "netiso3".into(),
            adopted: false,
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
        let mut all = records.read_all().unwrap();
        all.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(all, vec![second, info("b")]);
        assert!(!containers.join(".c.x1.tmp").exists());
        records.remove("a").unwrap();
        records.remove("a").unwrap();
        assert_eq!(records.read_all().unwrap(), vec![info("b")]);
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&containers), 0o700);
        assert_eq!(mode(&containers.join("b.json")), 0o600);
    }
}
