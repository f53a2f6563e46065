//! The agent's two servers: [`monitor`], the read-only HTTP server for statistics
//! and health (TCP, `--listen`), and [`control_api`], the control API on a Unix
//! socket. Both answer from the manager (through its handle) and the statistics
//! collector.
mod connections;
pub mod control_api;
mod drop_stream;
mod response;
pub mod statistics_http;

pub use connections::Limits;

use std::sync::Arc;

use crate::{
    control::ManagerHandle,
    stats::{Collector, MonitorEntry},
};

/// Where the servers get statistics: the manager for the containers, the collector for
/// their numbers.
#[derive(Clone)]
pub struct StatisticsSource {
    pub manager: ManagerHandle,
    pub collector: Arc<Collector>,
}

impl StatisticsSource {
    /// Every container's statistics, or only `id`'s (`None` if there is no such
    /// container).
    pub async fn entries(&self, id: Option<&str>) -> anyhow::Result<Option<Vec<MonitorEntry>>> {
        let mut containers = self.manager.list().await?;
        if let Some(id) = id {
            containers.retain(|c| c.id == id);
            if containers.is_empty() {
                return Ok(None);
            }
        }
        self.collector
            .collect(containers, id.is_none())
            .await
            .map(Some)
    }
}
