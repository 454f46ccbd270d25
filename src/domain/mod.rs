//! The vocabulary every layer shares, and nothing else: channel names,
//! invoice keys and statuses, ids, the clock, quiet-hour windows, money.
//!
//! This module uses nothing of the service (a test, `tests/architecture.rs`,
//! holds it to that), so any layer may use it without tying itself to
//! another: the router, the channels, the store and the server all speak
//! of a `ChannelName` without knowing of one another.

mod channel;
pub mod clock;
pub mod debtor;
pub mod ids;
mod invoice;
pub mod money;
pub mod quiet;

pub use channel::ChannelName;
pub use clock::{Clock, ManualClock, SystemClock};
pub use invoice::{InvoiceKey, Status, UnknownStatus};
pub use money::Amount;
pub use quiet::QuietHours;
