//! Why a request failed, in kinds the control API's status codes and the CLI's exit
//! codes follow. Code that refuses a request on purpose raises a [`Refusal`] of its
//! kind; any other error (the kernel's, the disk's) is [`Failure::Internal`].
use std::fmt;

/// What kind of failure a request met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The request is wrong (a bad id, ports outside the agent's, a bad number): 400.
    Invalid,
    /// It names a container that does not exist: 404.
    NotFound,
    /// It clashes with what exists (the id, ports another container owns): 409.
    Conflict,
    /// It is larger than the agent accepts: 413.
    TooLarge,
    /// The agent cannot serve it now (ephemeral ranges or slots used up, the agent
    /// stopping or unreachable); trying again later may work: 503.
    Unavailable,
    /// Something failed that should not have (the kernel, the disk): 500.
    Internal,
}

impl Failure {
    /// The control API's status for this kind.
    pub fn status(self) -> u16 {
        match self {
            Failure::Invalid => 400,
            Failure::NotFound => 404,
            Failure::Conflict => 409,
            Failure::TooLarge => 413,
            Failure::Unavailable => 503,
            Failure::Internal => 500,
        }
    }

    /// The kind a control API status stands for (the CLI's side).
    pub fn from_status(status: u16) -> Self {
        match status {
            404 => Failure::NotFound,
            409 => Failure::Conflict,
            413 => Failure::TooLarge,
            503 => Failure::Unavailable,
            400..=499 => Failure::Invalid,
            _ => Failure::Internal,
        }
    }

    /// The CLI's exit status for this kind (2 is the command line's own errors).
    pub fn exit_code(self) -> u8 {
        match self {
            Failure::Internal => 1,
            Failure::Invalid => 3,
            Failure::NotFound => 4,
            Failure::Conflict => 5,
            Failure::TooLarge => 6,
            Failure::Unavailable => 7,
        }
    }

    /// The kind of `error`: that of the first [`Refusal`] in its chain, else internal.
    pub fn of(error: &anyhow::Error) -> Self {
        error
            .chain()
            .find_map(|cause| cause.downcast_ref::<Refusal>())
            .map_or(Failure::Internal, |refusal| refusal.kind)
    }
}

/// A request refused on purpose, with its kind and the one line that says why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub kind: Failure,
    pub message: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refusal {}

/// An error of kind `kind` saying `message`.
pub fn refusal(kind: Failure, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Refusal {
        kind,
        message: message.into(),
    })
}

/// `return Err(refuse(kind, format!(…)))`.
macro_rules! refuse {
    ($kind:ident, $($message:tt)+) => {
        return Err($crate::failure::refusal(
            $crate::failure::Failure::$kind,
            format!($($message)+),
        ))
    };
}
pub(crate) use refuse;

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    use super::*;

    #[test]
    fn the_kind_survives_context_and_others_are_internal() {
        let refused: anyhow::Result<()> = Err(refusal(Failure::Conflict, "taken"));
        let error = refused.context("creating a").unwrap_err();
        assert_eq!(Failure::of(&error), Failure::Conflict);
        assert_eq!(format!("{error:#}"), "creating a: taken");
        let io = anyhow::Error::new(std::io::Error::other("disk"));
        assert_eq!(Failure::of(&io), Failure::Internal);
    }

    #[test]
    fn statuses_and_exit_codes_round_trip() {
        let all = [
            Failure::Invalid,
            Failure::NotFound,
            Failure::Conflict,
            Failure::TooLarge,
            Failure::Unavailable,
            Failure::Internal,
        ];
        for kind in all {
            assert_eq!(Failure::from_status(kind.status()), kind);
        }
        let mut codes: Vec<u8> = all.iter().map(|k| k.exit_code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        assert!(!codes.contains(&2) && !codes.contains(&0));
    }
}
