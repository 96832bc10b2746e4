//! The run loop: terminal input, the live feeds, a slow tick and the outcomes of operations
//! go into [`App::update`]; the commands it returns run as tasks the loop owns; the screen is
//! drawn when something changed, at most [`MAX_FPS`] times a second.
//!
//! The live feeds are taken on the frame clock, all that waits at once, rather than awaited
//! item by item: at 1,000 requests a second, awaiting them woke this thread twice a
//! millisecond, and each wake-up was a system call on the proxy's request path (measured in
//! docs/benchmarks.md). A frame shows no more than it would have anyway.
//!
//! Nothing here blocks the runtime: keys arrive through crossterm's async `EventStream`, and
//! every [`Source`] call that may wait (the database, an OAuth exchange) runs in a task of its
//! own, so a slow one never freezes the screen.
//!
//! [`run`] owns the real terminal: raw mode, the alternate screen and bracketed paste are
//! switched on by a guard that switches them off on every way out — a return, an error, a
//! panic (through a panic hook), the shutdown signal. [`run_with`] is the loop itself, on any
//! backend and input stream, which is how the tests drive it.

use crate::app::{App, Change, Changed, Command, Event, Outcome, RECENT_ROWS};
use crate::source::{Ended, Feed, FeedItem, Source};
use crate::ui::{self, Theme};
use crossterm::event::{DisableBracketedPaste, EnableBracketedPaste, Event as TermEvent};
use crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen};
use futures_core::Stream;
use ratatui::Terminal;
use ratatui::backend::{Backend, CrosstermBackend};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::task::{JoinError, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

/// Frames per second at most, however fast events come.
pub const MAX_FPS: u64 = 10;
const FRAME: Duration = Duration::from_millis(1_000 / MAX_FPS);
/// The slow tick: countdowns move, and the accounts, health and settings are read again.
pub const TICK: Duration = Duration::from_secs(1);
/// How long quitting waits for account and setting changes still running (a change a person
/// asked for just before quitting should still happen).
pub const CHANGE_GRACE: Duration = Duration::from_secs(5);

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The person quit (`q`, Ctrl-C).
    Quit,
    /// The shutdown signal fired (SIGTERM, or the server stopped).
    Shutdown,
    /// The terminal's input ended.
    InputClosed,
}

/// Failures of the UI.
#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error("terminal: {0}")]
    Terminal(#[from] io::Error),
}

impl From<Infallible> for TuiError {
    fn from(never: Infallible) -> TuiError {
        match never {}
    }
}

/// Whether the terminal is in the UI's modes now (so that restoring happens once).
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Leaves raw mode, the alternate screen and bracketed paste, and shows the cursor, if the UI
/// had switched them on. Safe to call from a panic hook and more than once.
pub fn restore_terminal() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = crossterm::execute!(
            io::stdout(),
            DisableBracketedPaste,
            LeaveAlternateScreen,
            crossterm::cursor::Show
        );
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// Restores the terminal before the panic message is printed, so it is readable and the shell
/// is usable. Installed once; it chains to the hook that was there before.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
    });
}

/// The terminal in the UI's modes for as long as it lives.
#[derive(Debug)]
pub struct TerminalGuard(());

impl TerminalGuard {
    pub fn enter() -> io::Result<TerminalGuard> {
        install_panic_hook();
        crossterm::terminal::enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        // From here on, dropping the guard restores whatever was switched on.
        let guard = TerminalGuard(());
        crossterm::execute!(
            io::stdout(),
            EnterAlternateScreen,
            EnableBracketedPaste,
            crossterm::cursor::Hide
        )?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Runs the UI on this process's terminal until the person quits, the input ends or
/// `shutdown` resolves; the terminal is restored however it ends.
pub async fn run<S: Source>(
    source: S,
    theme: Theme,
    shutdown: impl Future<Output = ()>,
) -> Result<Exit, TuiError> {
    let _guard = TerminalGuard::enter()?;
    let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    terminal.clear()?;
    let input = crossterm::event::EventStream::new();
    run_with(source, &mut terminal, input, theme, shutdown).await
}

/// Everything `feed` holds now, each item through `update`; false once the feed has ended
/// (and then it is not read again).
fn take_all<T>(feed: &mut impl Feed<T>, mut update: impl FnMut(FeedItem<T>)) -> bool {
    loop {
        match feed.try_next() {
            Ok(Some(item)) => update(item),
            Ok(None) => return true,
            Err(Ended) => return false,
        }
    }
}

async fn next<I: Stream + Unpin>(input: &mut I) -> Option<I::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *input).poll_next(cx)).await
}

/// What a terminal event means to the UI (mouse and focus events mean nothing).
fn event_of(event: TermEvent) -> Option<Event> {
    match event {
        TermEvent::Key(key) => Some(Event::Key(key)),
        TermEvent::Paste(text) => Some(Event::Paste(text)),
        TermEvent::Resize(..) => Some(Event::Resize),
        _ => None,
    }
}

fn outcome(joined: Result<Outcome, JoinError>) -> Option<Outcome> {
    match joined {
        Ok(outcome) => Some(outcome),
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        // Only the loop aborts its tasks, when it ends.
        Err(_) => None,
    }
}

/// Runs a change on the source; the outcome says what it was and how it went.
pub async fn perform<S: Source>(source: S, change: Change) -> Outcome {
    let result = match change.clone() {
        Change::AddApiKey { key, name } => {
            source.add_api_key(key, name).await.map(Changed::Account)
        }
        Change::OAuthBegin { mode, name } => source
            .oauth_begin(mode, name)
            .await
            .map(Changed::LoginOpened),
        Change::OAuthComplete { flow_id, code } => source
            .oauth_complete(flow_id, code)
            .await
            .map(Changed::Account),
        Change::SetPaused { name, paused } => source
            .set_paused(name, paused)
            .await
            .map(|()| Changed::Done),
        Change::Rename { name, new_name } => {
            source.rename(name, new_name).await.map(|()| Changed::Done)
        }
        Change::SetPriority { name, priority } => source
            .set_priority(name, priority)
            .await
            .map(|()| Changed::Done),
        Change::Remove { name } => source.remove(name).await.map(|()| Changed::Done),
        Change::Setting(setting) => source.change_setting(setting).await.map(Changed::Settings),
        Change::CreateClientKey { name } => {
            source.create_client_key(name).await.map(Changed::ClientKey)
        }
    };
    Outcome::Changed(change, result)
}

/// Runs a read command on the source (a [`Command::Change`] runs [`perform`]);
/// `None` for [`Command::Quit`].
pub async fn load<S: Source>(source: S, command: Command) -> Option<Outcome> {
    Some(match command {
        Command::LoadAccounts => Outcome::Accounts(source.accounts().await),
        Command::LoadRecent => Outcome::Recent(source.recent_requests(RECENT_ROWS).await),
        Command::LoadReport(range) => Outcome::Report(range, Box::new(source.report(range).await)),
        Command::Change(change) => perform(source, change).await,
        Command::Quit => return None,
    })
}

/// The tasks the loop owns: reads, which are dropped when it ends, and changes, which it
/// waits for.
struct Tasks<S> {
    source: S,
    loads: JoinSet<Outcome>,
    changes: JoinSet<Outcome>,
}

impl<S: Source> Tasks<S> {
    fn spawn(&mut self, command: Command) {
        let source = self.source.clone();
        let tasks = match command {
            // The loop handles it.
            Command::Quit => return,
            Command::Change(_) => &mut self.changes,
            _ => &mut self.loads,
        };
        tasks.spawn(async move {
            load(source, command)
                .await
                .expect("only Quit has no outcome, and it returned above")
        });
    }
}

/// The loop, on any backend and input. Returns when the person quits, `input` ends or
/// `shutdown` resolves; changes still running get [`CHANGE_GRACE`] to finish.
pub async fn run_with<S, B, I>(
    source: S,
    terminal: &mut Terminal<B>,
    mut input: I,
    theme: Theme,
    shutdown: impl Future<Output = ()>,
) -> Result<Exit, TuiError>
where
    S: Source,
    B: Backend,
    B::Error: Into<TuiError>,
    I: Stream<Item = io::Result<TermEvent>> + Unpin,
{
    let mut app = App::new(
        source.info(),
        source.now(),
        source.health(),
        source.settings(),
    );
    let mut requests = source.subscribe_requests();
    let (history, mut logs) = source.subscribe_logs();
    app.update(Event::LogHistory(history));
    let mut tasks = Tasks {
        source: source.clone(),
        loads: JoinSet::new(),
        changes: JoinSet::new(),
    };
    for command in app.start() {
        tasks.spawn(command);
    }
    let mut tick = tokio::time::interval_at(Instant::now() + TICK, TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut feeds = tokio::time::interval(FRAME);
    feeds.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut shutdown = std::pin::pin!(shutdown);
    let (mut requests_open, mut logs_open) = (true, true);
    let mut dirty = true;
    let mut last_frame: Option<Instant> = None;

    let exit = 'run: loop {
        let now = Instant::now();
        if dirty && last_frame.is_none_or(|at| now >= at + FRAME) {
            terminal
                .draw(|frame| ui::draw(frame, &app, theme))
                .map_err(Into::into)?;
            dirty = false;
            last_frame = Some(now);
        }
        let frame_due = last_frame.map_or(now, |at| at + FRAME);
        let event = tokio::select! {
            () = &mut shutdown => break 'run Exit::Shutdown,
            received = next(&mut input) => match received {
                Some(Ok(event)) => event_of(event),
                Some(Err(error)) => return Err(error.into()),
                None => break 'run Exit::InputClosed,
            },
            _ = feeds.tick(), if requests_open || logs_open => {
                let mut commands = Vec::new();
                let mut taken = false;
                if requests_open {
                    requests_open = take_all(&mut requests, |item| {
                        taken = true;
                        commands.extend(app.update(Event::Request(item)));
                    });
                }
                if logs_open {
                    logs_open = take_all(&mut logs, |item| {
                        taken = true;
                        commands.extend(app.update(Event::Log(item)));
                    });
                }
                dirty |= taken;
                for command in commands {
                    if command == Command::Quit {
                        break 'run Exit::Quit;
                    }
                    tasks.spawn(command);
                }
                None
            }
            Some(joined) = tasks.loads.join_next(), if !tasks.loads.is_empty() => {
                outcome(joined).map(Event::Done)
            }
            Some(joined) = tasks.changes.join_next(), if !tasks.changes.is_empty() => {
                outcome(joined).map(Event::Done)
            }
            _ = tick.tick() => Some(Event::Tick {
                now: source.now(),
                health: source.health(),
                settings: source.settings(),
            }),
            () = tokio::time::sleep_until(frame_due), if dirty => None,
        };
        let Some(event) = event else { continue };
        dirty = true;
        for command in app.update(event) {
            if command == Command::Quit {
                break 'run Exit::Quit;
            }
            tasks.spawn(command);
        }
    };

    // Reads are dropped (aborted) with their set; changes a person asked for get to finish.
    drop(tasks.loads);
    let mut changes = tasks.changes;
    let _ = tokio::time::timeout(CHANGE_GRACE, async {
        while let Some(joined) = changes.join_next().await {
            outcome(joined);
        }
    })
    .await;
    Ok(exit)
}
