//! Commands of the CLI with more to them than one request to the agent.
pub mod doctor;
pub mod manual;
pub mod monitor;
pub mod top;
