//! Control: what changes when containers come and go. The [`manager`] owns the
//! datapath, the port ledger and the records, and builds, updates and destroys
//! containers ([`recovery`] takes them over after a restart); it runs on its own thread
//! behind a [`handle::ManagerHandle`]. [`model`] is what the control API speaks;
//! [`client`] is the CLI's side of that API (its server is `crate::server`).
mod check;
pub mod client;
pub mod handle;
pub mod manager;
pub mod model;
mod records;
mod recovery;
mod shaping;

pub use handle::{ManagerHandle, RequestError};
pub use manager::Manager;
pub use model::{ContainerInfo, CreateRequest, UpdateRequest};
pub use shaping::Shaping;
