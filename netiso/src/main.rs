use std::process::ExitCode;

fn main() -> ExitCode {
    // A runtime runs this binary as its CNI plugin with CNI_COMMAND set.
    netiso::cni::run_if_invoked().unwrap_or_else(netiso::cli::main)
}
