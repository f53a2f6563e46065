//! The errors a CNI plugin reports: a code from the spec (or ours, from 100) and a
//! one-line message, written to stdout as JSON with a non-zero exit.
use serde::Serialize;

use crate::failure::Failure;

/// Codes from the CNI spec, and ours (100 and up).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODING_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot serve ADD (the agent does not answer).
    pub const NOT_AVAILABLE: u32 = 50;
    /// The agent refused: the ports, the id or the interface are taken.
    pub const CONFLICT: u32 = 101;
    /// CHECK found the attachment different from what ADD made.
    pub const CHECK_FAILED: u32 = 102;
}

#[derive(Debug, Serialize)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
        }
    }

    /// A failure of a request to the agent, with the code of its kind.
    pub fn from_agent(error: &anyhow::Error) -> Self {
        let code = match Failure::of(error) {
            Failure::Invalid | Failure::TooLarge => code::INVALID_CONFIG,
            Failure::NotFound => code::UNKNOWN_CONTAINER,
            Failure::Conflict => code::CONFLICT,
            Failure::Unavailable => code::TRY_AGAIN_LATER,
            Failure::Internal => code::IO_FAILURE,
        };
        Self::new(code, format!("{error:#}"))
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)
    }
}
