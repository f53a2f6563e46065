// Empty library target: it lets the agent list this crate as a build-dependency, so
// cargo rebuilds the agent when the eBPF sources change.
#![no_std]
