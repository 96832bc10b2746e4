//! The terminal UI of `ccflare` (SPEC §2, §10): six tabs — Overview, Accounts, Requests,
//! Analytics, Logs, Strategy & settings — over a running server, driven by the keyboard.
//!
//! The parts, each testable alone:
//! - [`Source`] (`source.rs`): where the data comes from and where changes go. The binary's
//!   source is in-process; [`FakeSource`] is a seeded one for tests.
//! - [`App`] (`app.rs`): the state and its pure update function, `(state, event) → state +
//!   commands`.
//! - [`keymap`]: every key as data; the help screen and `docs/tui.md` are generated from it.
//! - `ui/`: drawing, pure functions of the state (insta snapshots of every tab).
//! - [`run`] (`run.rs`): the async loop joining them on a real terminal, which it always
//!   restores.
//!
//! **Invariant:** nothing blocks the runtime — input is crossterm's async event stream, every
//! source call that may wait runs in a task the loop owns, and the screen is redrawn only when
//! something changed, at most ten times a second.
//!
//! **Invariant:** no credential is shown: accounts carry only their masked key, and the fields
//! where a key or an OAuth code is typed show one `•` per character (also in `Debug`).

pub mod app;
pub mod fake;
pub mod format;
pub mod keymap;
pub mod run;
pub mod source;
pub mod ui;

pub use app::{App, Command, Event, Outcome, Tab};
pub use fake::FakeSource;
pub use run::{Exit, TuiError, restore_terminal, run, run_with};
pub use source::{
    AccountRow, DatabaseHealth, Ended, Feed, FeedItem, LiveSettings, OAuthStart, ServerInfo,
    SettingChange, Source, SourceError, feed_item,
};
pub use ui::{Theme, draw};
