//! Ctrl-C (SIGINT) and SIGTERM for work that must stop at a safe point: the first signal only
//! raises a flag that the work checks between its steps (a training run finishes its step, writes
//! a checkpoint and says how to resume); a second one ends the process at once, with the status a
//! shell gives a process killed by SIGINT (130).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Whether a stop was asked for. The default one is never asked (no handlers installed: the
/// signals keep their usual effect).
#[derive(Clone, Debug, Default)]
pub struct Interrupt(Arc<AtomicBool>);

/// The exit status after a second signal: 128 + SIGINT, as shells report a Ctrl-C.
pub const EXIT_STATUS: i32 = 130;

impl Interrupt {
    /// Installs the handlers of SIGINT and SIGTERM for the rest of the process.
    ///
    /// # Errors
    /// The operating system refused a handler.
    pub fn install() -> std::io::Result<Interrupt> {
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // Registered before the flag's own handler, so it sees the flag as an earlier signal
            // left it: set means this is the second signal.
            signal_hook::flag::register_conditional_shutdown(signal, EXIT_STATUS, Arc::clone(&flag))?;
            signal_hook::flag::register(signal, Arc::clone(&flag))?;
        }
        Ok(Interrupt(flag))
    }

    /// Whether a stop was asked for.
    #[must_use]
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Asks for a stop, as a signal would.
    pub fn request(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
