//! The commands, one file per group; `main.rs` holds the table that names them.

pub mod compile;
pub mod exec;
pub mod inspect;
pub mod options;
pub mod train;

use incc::Error;

/// Prints a failure once, after `error:` (compile errors as their located diagnostics, each
/// with its own header).
pub fn print_error(e: &Error) {
    match e {
        Error::Compile(failure) => eprint!("{}", failure.render()),
        // Asked for, not a failure: said as it is.
        Error::Interrupted(_) => eprintln!("{e}"),
        other => eprintln!("error: {}", other.to_string().trim_end()),
    }
}
