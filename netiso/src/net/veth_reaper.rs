//! Deleting containers' veth pairs in the background. Deleting a link waits for RCU
//! grace periods under the rtnl lock (about 35 ms here, whatever the link), which
//! would be most of a container's destroy; nothing needs the pair gone before the
//! answer once the container is out of the datapath and its namespace has lost its
//! name. Its slot is not given out again until the pair is gone, and an agent that
//! stops waits for what it queued.
use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, PoisonError, mpsc},
    thread,
};

use super::NetlinkSocket;

/// A veth pair to delete: the datapath slot it was made for, the host end's name.
type Doomed = (u32, String);

pub struct VethReaper {
    queue: Option<mpsc::Sender<Doomed>>,
    /// Slots whose pair is queued or being deleted.
    pending: Arc<Mutex<BTreeSet<u32>>>,
    worker: Option<thread::JoinHandle<()>>,
}

impl VethReaper {
    /// Starts the worker, in the calling thread's network namespace (the host's).
    pub fn start() -> std::io::Result<Self> {
        let (queue, doomed) = mpsc::channel::<Doomed>();
        let pending = Arc::new(Mutex::new(BTreeSet::new()));
        let done = Arc::clone(&pending);
        let worker = thread::Builder::new()
            .name("veth-reaper".into())
            .spawn(move || {
                let mut socket = None;
                for (slot, name) in doomed {
                    delete(&mut socket, &name);
                    done.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&slot);
                }
            })?;
        Ok(Self {
            queue: Some(queue),
            pending,
            worker: Some(worker),
        })
    }

    /// Queues the deletion of the pair whose host end is `name`, made for `slot`.
    pub fn delete(&self, slot: u32, name: &str) {
        self.lock().insert(slot);
        let queued = self
            .queue
            .as_ref()
            .is_some_and(|queue| queue.send((slot, name.to_owned())).is_ok());
        if !queued {
            // The worker is gone (it cannot panic short of a bug): delete here.
            delete(&mut None, name);
            self.lock().remove(&slot);
        }
    }

    /// The slots whose pair is not deleted yet.
    pub fn pending(&self) -> BTreeSet<u32> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<u32>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Deletes the link `name` through `socket` (opened on first use). A failure is
/// logged: the name then stays taken, and new containers skip its slot.
fn delete(socket: &mut Option<NetlinkSocket>, name: &str) {
    let deleted = match socket {
        Some(socket) => Ok(socket),
        None => NetlinkSocket::route().map(|s| socket.insert(s)),
    }
    .map_err(anyhow::Error::from)
    .and_then(|socket| socket.delete_link_named(name));
    if let Err(error) = deleted {
        log::warn!("deleting {name}: {error:#}");
    }
}

impl Drop for VethReaper {
    /// Deletes what is queued before returning.
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}
