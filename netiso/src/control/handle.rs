//! The manager runs on a thread of its own (in the host's network namespace: netlink
//! and namespace work must not run on the async runtime's threads). Servers reach it
//! through a [`ManagerHandle`], whose methods send a typed request and await the
//! answer.
use std::{sync::mpsc, thread};

use tokio::sync::oneshot;

use crate::failure::Failure;

use super::{
    manager::Manager,
    model::{ContainerInfo, CreateRequest, HostInfo, UpdateRequest},
};

/// Why a request to the manager got no result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// The manager refused or failed it; the message says why.
    Refused(Failure, String),
    /// The manager is gone: the agent is stopping.
    ShuttingDown,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::Refused(_, message) => f.write_str(message),
            RequestError::ShuttingDown => f.write_str("the agent is shutting down"),
        }
    }
}

impl std::error::Error for RequestError {}

impl RequestError {
    /// What kind of failure this is (stopping is "try again later").
    pub fn kind(&self) -> Failure {
        match self {
            RequestError::Refused(kind, _) => *kind,
            RequestError::ShuttingDown => Failure::Unavailable,
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, (Failure, String)>>;

/// A request for the manager thread, with where to send the answer.
enum Command {
    List(Reply<Vec<ContainerInfo>>),
    Get(String, Reply<ContainerInfo>),
    Check(String, Reply<()>),
    Host(Reply<HostInfo>),
    Create(Box<CreateRequest>, Reply<ContainerInfo>),
    Update(String, UpdateRequest, Reply<ContainerInfo>),
    Destroy(String, Reply<()>),
}

/// The agent's exit status when its manager thread failed (EX_SOFTWARE).
pub const MANAGER_FAILED: i32 = 70;

/// Answers requests until every handle is gone.
fn serve(manager: &mut Manager, requests: mpsc::Receiver<Command>) {
    let failed = |e: anyhow::Error| (Failure::of(&e), format!("{e:#}"));
    for command in requests {
        match command {
            Command::List(reply) => {
                let _ = reply.send(Ok(manager.list()));
            }
            Command::Get(id, reply) => {
                let _ = reply.send(manager.get(&id).map_err(failed));
            }
            Command::Check(id, reply) => {
                let _ = reply.send(manager.check(&id).map_err(failed));
            }
            Command::Host(reply) => {
                let _ = reply.send(Ok(manager.host()));
            }
            Command::Create(request, reply) => {
                let _ = reply.send(manager.create(*request).map_err(failed));
            }
            Command::Update(id, update, reply) => {
                let _ = reply.send(manager.update(&id, update).map_err(failed));
            }
            Command::Destroy(id, reply) => {
                let _ = reply.send(manager.destroy(&id).map_err(failed));
                // What the container held (its object copy, probes, buffers) goes
                // back to the system, so the agent's memory follows its containers.
                crate::heap::trim();
            }
        }
    }
}

/// The manager thread's mailbox.
#[derive(Clone)]
pub struct ManagerHandle(mpsc::Sender<Command>);

impl ManagerHandle {
    /// Runs `manager` on a thread of its own and returns its handle. If the thread
    /// panics, the agent exits with status [`MANAGER_FAILED`]: its state may be half
    /// changed, and a restart (by its service manager) recovers every container from
    /// the kernel and the records, where answering "shutting down" forever would not.
    pub fn spawn(mut manager: Manager) -> Self {
        let (sender, receiver) = mpsc::channel();
        thread::Builder::new()
            .name("netiso-manager".into())
            .spawn(move || {
                let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    serve(&mut manager, receiver);
                }));
                if served.is_err() {
                    log::error!(
                        "the container manager failed (see the panic above); exiting so that the agent is restarted and recovers its containers"
                    );
                    std::process::exit(MANAGER_FAILED);
                }
            })
            .expect("starting the manager thread");
        Self(sender)
    }

    async fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, RequestError> {
        let (reply, answer) = oneshot::channel();
        self.0
            .send(command(reply))
            .map_err(|_| RequestError::ShuttingDown)?;
        answer
            .await
            .map_err(|_| RequestError::ShuttingDown)?
            .map_err(|(kind, message)| RequestError::Refused(kind, message))
    }

    /// The containers, as the manager knows them now.
    pub async fn list(&self) -> Result<Vec<ContainerInfo>, RequestError> {
        self.ask(Command::List).await
    }

    pub async fn get(&self, id: String) -> Result<ContainerInfo, RequestError> {
        self.ask(|reply| Command::Get(id, reply)).await
    }

    /// Whether container `id` is as it was made (a conflict naming what differs).
    pub async fn check(&self, id: String) -> Result<(), RequestError> {
        self.ask(|reply| Command::Check(id, reply)).await
    }

    /// What containers are given of the host; answered by the manager thread, so
    /// an answer also says it is alive.
    pub async fn host(&self) -> Result<HostInfo, RequestError> {
        self.ask(Command::Host).await
    }

    pub async fn create(&self, request: CreateRequest) -> Result<ContainerInfo, RequestError> {
        self.ask(|reply| Command::Create(Box::new(request), reply))
            .await
    }

    pub async fn update(
        &self,
        id: String,
        update: UpdateRequest,
    ) -> Result<ContainerInfo, RequestError> {
        self.ask(|reply| Command::Update(id, update, reply)).await
    }

    /// Destroys container `id`; an unknown id is not an error.
    pub async fn destroy(&self, id: String) -> Result<(), RequestError> {
        self.ask(|reply| Command::Destroy(id, reply)).await
    }
}
