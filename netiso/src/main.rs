use std::process::ExitCode;

fn main() -> ExitCode {
    netiso::cli::main()
}
