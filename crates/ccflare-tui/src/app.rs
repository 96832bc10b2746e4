//! The UI's state and its one update function: [`App::update`] takes an [`Event`] (a key, a
//! paste, a tick of the clock, a feed item, the outcome of an operation) and changes the state,
//! returning the [`Command`]s to run (load the accounts, a report; change an account or a
//! setting). It does no IO and reads no clock — `now` comes with each tick — so every rule is a
//! plain test: press keys, feed outcomes, look at the state and the commands.
//!
//! Keys become actions through the keymap (`keymap.rs`); what an action does is here.
//! Drawing (`ui/`) only reads the state.

use crate::keymap::{self, Action, Key, Screen};
use crate::source::{
    AccountRow, DatabaseHealth, FeedItem, LiveSettings, OAuthStart, RETENTION_KEY,
    SESSION_TIMEOUT_KEY, STRATEGY_KEY, ServerInfo, SettingChange, SourceError,
};
use ccflare_analytics::{Range, Report};
use ccflare_core::config::Strategy;
use ccflare_core::record::RequestRecord;
use ccflare_core::{AccountStatus, Millis, Secret};
use ccflare_oauth::Mode;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::cell::OnceCell;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

/// Requests the Requests tab keeps; older ones are dropped (and counted).
pub const REQUEST_ROWS: usize = 1_000;
/// Log lines the Logs tab keeps.
pub const LOG_LINES: usize = 2_000;
/// Stored requests the Requests tab starts with.
pub const RECENT_ROWS: u32 = 200;
/// How often a shown report is read again.
pub const REPORT_EVERY_MS: Millis = 10_000;
/// How long a notice stays in the status line.
pub const NOTICE_MS: Millis = 8_000;
/// Rows a page key moves.
pub const PAGE: usize = 10;

/// The six tabs, in the order of their number keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Overview,
    Accounts,
    Requests,
    Analytics,
    Logs,
    Settings,
}

impl Tab {
    pub const ALL: [Tab; 6] = [
        Tab::Overview,
        Tab::Accounts,
        Tab::Requests,
        Tab::Analytics,
        Tab::Logs,
        Tab::Settings,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Overview => "Overview",
            Tab::Accounts => "Accounts",
            Tab::Requests => "Requests",
            Tab::Analytics => "Analytics",
            Tab::Logs => "Logs",
            Tab::Settings => "Settings",
        }
    }

    pub fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }

    fn step(self, by: isize) -> Tab {
        let n = Tab::ALL.len() as isize;
        Tab::ALL[(self.index() as isize + by).rem_euclid(n) as usize]
    }
}

/// Something that happened, for [`App::update`].
#[derive(Debug, Clone)]
pub enum Event {
    Key(KeyEvent),
    /// Text pasted into the terminal (bracketed paste): typed into a dialog's field whole.
    Paste(String),
    /// The terminal changed size (nothing to change but the next frame).
    Resize,
    /// The slow tick: the clock moved, and the cheap figures are read again.
    Tick {
        now: Millis,
        health: DatabaseHealth,
        settings: LiveSettings,
    },
    Request(FeedItem<Arc<RequestRecord>>),
    Log(FeedItem<Arc<str>>),
    /// The log lines from before the UI opened, oldest first.
    LogHistory(Vec<Arc<str>>),
    Done(Outcome),
}

/// What [`App::update`] asks the run loop to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    LoadAccounts,
    LoadRecent,
    LoadReport(Range),
    Change(Change),
    Quit,
}

/// A change a person asked for, run by the [`Source`](crate::Source).
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    AddApiKey {
        key: Secret,
        name: Option<String>,
    },
    OAuthBegin {
        mode: Mode,
        name: String,
    },
    OAuthComplete {
        flow_id: String,
        code: Secret,
    },
    SetPaused {
        name: String,
        paused: bool,
    },
    Rename {
        name: String,
        new_name: String,
    },
    SetPriority {
        name: String,
        priority: i64,
    },
    Remove {
        name: String,
    },
    Setting(SettingChange),
    /// A client key for `/v1` (SPEC §11), with no limits; shown once when made.
    CreateClientKey {
        name: String,
    },
}

impl Change {
    /// What the status line says when it worked.
    pub fn done(&self) -> String {
        match self {
            Change::AddApiKey { .. } => "account added".to_owned(),
            Change::CreateClientKey { name } => format!("client key {name} created"),
            Change::OAuthBegin { name, .. } => format!("login for {name} opened"),
            Change::OAuthComplete { .. } => "login finished".to_owned(),
            Change::SetPaused { name, paused: true } => format!("{name} paused"),
            Change::SetPaused {
                name,
                paused: false,
            } => format!("{name} resumed"),
            Change::Rename { name, new_name } => format!("{name} renamed to {new_name}"),
            Change::SetPriority { name, priority } => format!("{name}: priority {priority}"),
            Change::Remove { name } => format!("{name} removed"),
            Change::Setting(change) => {
                let (key, value) = change.as_option();
                format!("{key} set to {value}")
            }
        }
    }
}

/// The result of a [`Command`].
#[derive(Debug, Clone)]
pub enum Outcome {
    Accounts(Result<Vec<AccountRow>, SourceError>),
    Recent(Result<Vec<RequestRecord>, SourceError>),
    Report(Range, Box<Result<Report, SourceError>>),
    Changed(Change, Result<Changed, SourceError>),
}

/// What a successful change returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Changed {
    Done,
    /// An account was stored under this name.
    Account(String),
    LoginOpened(OAuthStart),
    Settings(LiveSettings),
    /// A client key was made: the key itself, to be shown this once.
    ClientKey(Secret),
}

/// A line in the status bar, for a while.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub text: String,
    pub error: bool,
    pub until: Millis,
}

/// A text field of a dialog. A masked field (an API key, an OAuth code) never shows its text,
/// not even in `Debug`.
#[derive(Clone, PartialEq)]
pub struct Field {
    pub label: &'static str,
    pub text: String,
    pub masked: bool,
}

impl fmt::Debug for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = if self.masked {
            format!("<{} characters>", self.text.chars().count())
        } else {
            self.text.clone()
        };
        f.debug_struct("Field")
            .field("label", &self.label)
            .field("text", &text)
            .finish()
    }
}

impl Field {
    fn new(label: &'static str) -> Field {
        Field {
            label,
            text: String::new(),
            masked: false,
        }
    }

    fn masked(label: &'static str) -> Field {
        Field {
            masked: true,
            ..Field::new(label)
        }
    }

    fn with(label: &'static str, text: impl Into<String>) -> Field {
        Field {
            text: text.into(),
            ..Field::new(label)
        }
    }
}

/// What a dialog is for.
#[derive(Debug, Clone, PartialEq)]
pub enum DialogKind {
    AddApiKey,
    /// The first step of a login: the new account's name.
    LoginName(Mode),
    /// The second step: the URL to open and the pasted `CODE#STATE`.
    LoginCode {
        mode: Mode,
        name: String,
        start: OAuthStart,
    },
    Rename {
        name: String,
    },
    Priority {
        name: String,
    },
    /// Removing asks for the account's name, typed.
    Remove {
        name: String,
    },
    SessionTimeout,
    Retention,
    RequestFilter,
    LogSearch,
    /// A new client key's name.
    CreateClientKey,
    /// The client key just made, shown this once (only its hash is stored).
    ClientKeyCreated {
        name: String,
        key: Secret,
    },
}

impl DialogKind {
    pub fn title(&self) -> String {
        match self {
            DialogKind::AddApiKey => "Add an API key".to_owned(),
            DialogKind::LoginName(Mode::Max)
            | DialogKind::LoginCode {
                mode: Mode::Max, ..
            } => "Add a Claude Pro/Max login".to_owned(),
            DialogKind::LoginName(Mode::Console)
            | DialogKind::LoginCode {
                mode: Mode::Console,
                ..
            } => "Add a Console login".to_owned(),
            DialogKind::Rename { name } => format!("Rename {name}"),
            DialogKind::Priority { name } => format!("Priority of {name}"),
            DialogKind::Remove { name } => format!("Remove {name}"),
            DialogKind::SessionTimeout => "Session timeout".to_owned(),
            DialogKind::Retention => "Retention".to_owned(),
            DialogKind::RequestFilter => "Filter requests".to_owned(),
            DialogKind::LogSearch => "Search the logs".to_owned(),
            DialogKind::CreateClientKey => "New client key".to_owned(),
            DialogKind::ClientKeyCreated { name, .. } => format!("Client key {name}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dialog {
    pub kind: DialogKind,
    pub fields: Vec<Field>,
    pub focus: usize,
    /// An operation for this dialog is running; keys other than Esc wait.
    pub busy: bool,
    /// Why the last try failed; the dialog stays open for another.
    pub error: Option<String>,
}

impl Dialog {
    fn new(kind: DialogKind, fields: Vec<Field>) -> Dialog {
        Dialog {
            kind,
            fields,
            focus: 0,
            busy: false,
            error: None,
        }
    }

    fn text(&self, index: usize) -> &str {
        self.fields.get(index).map_or("", |f| f.text.trim())
    }
}

/// Choosing the strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct Picker {
    pub options: Vec<Strategy>,
    pub selected: usize,
    pub busy: bool,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Modal {
    Dialog(Dialog),
    Picker(Picker),
}

/// One report range's latest figures.
#[derive(Debug, Clone, Default)]
pub struct Slot {
    pub report: Option<Report>,
    pub loaded_at: Option<Millis>,
    pub pending: bool,
    pub error: Option<String>,
}

/// The latest report of each range.
#[derive(Debug, Clone, Default)]
pub struct Reports {
    slots: [Slot; 5],
}

impl Reports {
    fn index(range: Range) -> usize {
        Range::ALL.iter().position(|r| *r == range).unwrap_or(0)
    }

    pub fn slot(&self, range: Range) -> &Slot {
        &self.slots[Reports::index(range)]
    }

    fn slot_mut(&mut self, range: Range) -> &mut Slot {
        &mut self.slots[Reports::index(range)]
    }

    pub fn get(&self, range: Range) -> Option<&Report> {
        self.slot(range).report.as_ref()
    }
}

/// The Requests tab: the newest finished requests, a bounded ring.
#[derive(Debug, Clone)]
pub struct Requests {
    /// Newest first.
    pub rows: VecDeque<Arc<RequestRecord>>,
    /// Rows pushed out of the ring by newer ones.
    pub dropped: u64,
    /// Rows the live feed dropped because the UI fell behind.
    pub missed: u64,
    /// The selection stays on the newest row.
    pub follow: bool,
    /// The selected request when not following.
    pub selected: Option<String>,
    pub errors_only: bool,
    pub account: Option<String>,
    pub model: Option<String>,
    pub text: String,
    pub detail: bool,
    pub loaded: bool,
}

impl Default for Requests {
    fn default() -> Self {
        Requests {
            rows: VecDeque::new(),
            dropped: 0,
            missed: 0,
            follow: true,
            selected: None,
            errors_only: false,
            account: None,
            model: None,
            text: String::new(),
            detail: false,
            loaded: false,
        }
    }
}

impl Requests {
    fn matches(&self, record: &RequestRecord) -> bool {
        if self.errors_only && record.success {
            return false;
        }
        if let Some(account) = &self.account
            && record.account_name.as_deref() != Some(account.as_str())
        {
            return false;
        }
        if let Some(model) = &self.model
            && record.model.as_deref() != Some(model.as_str())
        {
            return false;
        }
        if !self.text.is_empty() {
            let needle = self.text.to_lowercase();
            let haystack = [
                Some(record.id.as_str()),
                record.model.as_deref(),
                record.account_name.as_deref(),
                record.error_type.as_deref(),
                record.error_message.as_deref(),
                Some(record.path.as_str()),
            ];
            let status = record.status.to_string();
            if !haystack
                .iter()
                .flatten()
                .chain(std::iter::once(&status.as_str()))
                .any(|text| text.to_lowercase().contains(&needle))
            {
                return false;
            }
        }
        true
    }

    /// The rows the filters let through, newest first.
    pub fn visible(&self) -> Vec<&Arc<RequestRecord>> {
        self.rows.iter().filter(|r| self.matches(r)).collect()
    }

    /// Where the selection is among the visible rows.
    pub fn selected_index(&self, visible: &[&Arc<RequestRecord>]) -> Option<usize> {
        if visible.is_empty() {
            return None;
        }
        if self.follow {
            return Some(0);
        }
        Some(
            self.selected
                .as_ref()
                .and_then(|id| visible.iter().position(|r| &r.id == id))
                .unwrap_or(0),
        )
    }

    /// The selected request.
    pub fn selected_record(&self) -> Option<Arc<RequestRecord>> {
        let visible = self.visible();
        let index = self.selected_index(&visible)?;
        visible.get(index).map(|r| Arc::clone(r))
    }

    fn push(&mut self, record: Arc<RequestRecord>) {
        if self.rows.len() == REQUEST_ROWS {
            self.rows.pop_back();
            self.dropped += 1;
        }
        self.rows.push_front(record);
    }

    fn active_filters(&self) -> bool {
        self.errors_only || self.account.is_some() || self.model.is_some() || !self.text.is_empty()
    }

    fn move_selection(&mut self, to: impl FnOnce(usize, usize) -> usize) {
        let visible = self.visible();
        let Some(current) = self.selected_index(&visible) else {
            return;
        };
        let target = to(current, visible.len()).min(visible.len() - 1);
        let id = visible[target].id.clone();
        self.selected = Some(id);
        self.follow = false;
    }
}

/// A log line's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl Level {
    fn parse(text: &str) -> Level {
        match text.to_ascii_uppercase().as_str() {
            "ERROR" => Level::Error,
            "WARN" | "WARNING" => Level::Warn,
            "DEBUG" => Level::Debug,
            "TRACE" => Level::Trace,
            _ => Level::Info,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        }
    }
}

/// Which levels the Logs tab shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelFilter {
    All,
    Warnings,
    Errors,
}

impl LevelFilter {
    fn next(self) -> LevelFilter {
        match self {
            LevelFilter::All => LevelFilter::Warnings,
            LevelFilter::Warnings => LevelFilter::Errors,
            LevelFilter::Errors => LevelFilter::All,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LevelFilter::All => "all levels",
            LevelFilter::Warnings => "warnings and errors",
            LevelFilter::Errors => "errors",
        }
    }

    fn passes(self, level: Level) -> bool {
        match self {
            LevelFilter::All => true,
            LevelFilter::Warnings => level <= Level::Warn,
            LevelFilter::Errors => level == Level::Error,
        }
    }
}

/// One log line, read from the feed's JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub seq: u64,
    pub time: Option<Millis>,
    pub level: Level,
    pub target: String,
    pub message: String,
    /// `key=value` pairs.
    pub fields: String,
}

impl LogLine {
    /// Reads one line of the log feed (`{"time","level","target","message","fields"}`); a
    /// line that is not that JSON is shown as it is.
    pub fn parse(seq: u64, line: &str) -> LogLine {
        let Ok(serde_json::Value::Object(json)) = serde_json::from_str(line) else {
            return LogLine {
                seq,
                time: None,
                level: Level::Info,
                target: String::new(),
                message: line.to_owned(),
                fields: String::new(),
            };
        };
        let text = |key: &str| json.get(key).and_then(|v| v.as_str()).unwrap_or_default();
        let fields = match json.get("fields") {
            Some(serde_json::Value::Object(fields)) => fields
                .iter()
                .map(|(key, value)| match value {
                    serde_json::Value::String(text) => format!("{key}={text}"),
                    other => format!("{key}={other}"),
                })
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        };
        LogLine {
            seq,
            time: json.get("time").and_then(|v| v.as_i64()),
            level: Level::parse(text("level")),
            target: text("target").to_owned(),
            message: text("message").to_owned(),
            fields,
        }
    }
}

/// One line of the Logs tab as it came, read the first time it is shown or filtered: at 1,000
/// requests a second the feed brings a line per request, and reading each as JSON cost the UI
/// more than drawing the Requests tab.
#[derive(Debug, Clone)]
pub struct LogEntry {
    seq: u64,
    raw: Arc<str>,
    read: OnceCell<LogLine>,
}

impl LogEntry {
    pub fn line(&self) -> &LogLine {
        self.read
            .get_or_init(|| LogLine::parse(self.seq, &self.raw))
    }
}

/// The Logs tab.
#[derive(Debug, Clone)]
pub struct Logs {
    pub lines: VecDeque<LogEntry>,
    next_seq: u64,
    pub dropped: u64,
    pub missed: u64,
    pub level: LevelFilter,
    /// While paused, the last line shown: newer ones are kept but not shown.
    pub paused_at: Option<u64>,
    pub search: String,
    /// Lines scrolled up from the newest; 0 follows the newest.
    pub scroll: usize,
}

impl Default for Logs {
    fn default() -> Self {
        Logs {
            lines: VecDeque::new(),
            next_seq: 0,
            dropped: 0,
            missed: 0,
            level: LevelFilter::All,
            paused_at: None,
            search: String::new(),
            scroll: 0,
        }
    }
}

impl Logs {
    fn push(&mut self, line: Arc<str>) {
        if self.lines.len() == LOG_LINES {
            self.lines.pop_front();
            self.dropped += 1;
        }
        self.lines.push_back(LogEntry {
            seq: self.next_seq,
            raw: line,
            read: OnceCell::new(),
        });
        self.next_seq += 1;
    }

    /// The lines shown, oldest first.
    pub fn visible(&self) -> Vec<&LogLine> {
        let needle = self.search.to_lowercase();
        self.lines
            .iter()
            .filter(|entry| self.paused_at.is_none_or(|at| entry.seq <= at))
            .map(LogEntry::line)
            .filter(|l| self.level.passes(l.level))
            .filter(|l| {
                needle.is_empty()
                    || l.message.to_lowercase().contains(&needle)
                    || l.fields.to_lowercase().contains(&needle)
                    || l.target.to_lowercase().contains(&needle)
            })
            .collect()
    }

    /// Lines that arrived while paused.
    pub fn held(&self) -> u64 {
        match self.paused_at {
            Some(at) => self.next_seq.saturating_sub(at + 1),
            None => 0,
        }
    }
}

/// Everything the screen shows.
#[derive(Debug, Clone)]
pub struct App {
    pub info: ServerInfo,
    pub now: Millis,
    pub tab: Tab,
    pub help: bool,
    pub modal: Option<Modal>,
    pub notice: Option<Notice>,
    pub health: DatabaseHealth,
    pub settings: LiveSettings,
    pub setting_selected: usize,
    pub accounts: Vec<AccountRow>,
    pub accounts_loaded: bool,
    pub accounts_error: Option<String>,
    pub account_selected: usize,
    pub reports: Reports,
    /// The Analytics tab's range.
    pub range: Range,
    pub requests: Requests,
    pub logs: Logs,
    pub quitting: bool,
    accounts_pending: bool,
    /// A change landed while the accounts were loading: load them once more.
    accounts_stale: bool,
}

/// The settings the Settings tab lists, in order.
pub const SETTING_KEYS: [&str; 3] = [STRATEGY_KEY, SESSION_TIMEOUT_KEY, RETENTION_KEY];

impl App {
    pub fn new(
        info: ServerInfo,
        now: Millis,
        health: DatabaseHealth,
        settings: LiveSettings,
    ) -> App {
        App {
            info,
            now,
            tab: Tab::Overview,
            help: false,
            modal: None,
            notice: None,
            health,
            settings,
            setting_selected: 0,
            accounts: Vec::new(),
            accounts_loaded: false,
            accounts_error: None,
            account_selected: 0,
            reports: Reports::default(),
            range: Range::Day,
            requests: Requests::default(),
            logs: Logs::default(),
            quitting: false,
            accounts_pending: false,
            accounts_stale: false,
        }
    }

    /// What to load when the UI opens.
    pub fn start(&mut self) -> Vec<Command> {
        let mut commands = vec![Command::LoadRecent];
        commands.extend(self.load_accounts());
        commands.extend(self.due_reports());
        commands
    }

    /// The screen the keys are looked up for.
    pub fn screen(&self) -> Screen {
        if self.help {
            Screen::Help
        } else {
            self.screen_under_help()
        }
    }

    /// The screen the help screen describes: the one beneath it.
    pub fn screen_under_help(&self) -> Screen {
        match &self.modal {
            Some(Modal::Dialog(_)) => Screen::Dialog,
            Some(Modal::Picker(_)) => Screen::Picker,
            None => Screen::Tab {
                tab: self.tab,
                detail: self.tab == Tab::Requests && self.requests.detail,
            },
        }
    }

    pub fn selected_account(&self) -> Option<&AccountRow> {
        self.accounts.get(self.account_selected)
    }

    pub fn update(&mut self, event: Event) -> Vec<Command> {
        match event {
            Event::Key(key) => self.key(key),
            Event::Paste(text) => {
                self.paste(&text);
                Vec::new()
            }
            Event::Resize => Vec::new(),
            Event::Tick {
                now,
                health,
                settings,
            } => {
                self.now = now;
                self.health = health;
                self.settings = settings;
                if self.notice.as_ref().is_some_and(|n| n.until <= now) {
                    self.notice = None;
                }
                let mut commands = self.load_accounts();
                commands.extend(self.due_reports());
                commands
            }
            Event::Request(FeedItem::Item(record)) => {
                self.requests.push(record);
                Vec::new()
            }
            Event::Request(FeedItem::Lagged(missed)) => {
                self.requests.missed += missed;
                Vec::new()
            }
            Event::Log(FeedItem::Item(line)) => {
                self.logs.push(line);
                Vec::new()
            }
            Event::Log(FeedItem::Lagged(missed)) => {
                self.logs.missed += missed;
                Vec::new()
            }
            Event::LogHistory(lines) => {
                for line in lines {
                    self.logs.push(line);
                }
                Vec::new()
            }
            Event::Done(outcome) => self.done(outcome),
        }
    }

    fn notify(&mut self, text: impl Into<String>, error: bool) {
        self.notice = Some(Notice {
            text: text.into(),
            error,
            until: self.now + NOTICE_MS,
        });
    }

    fn load_accounts(&mut self) -> Vec<Command> {
        if self.accounts_pending {
            return Vec::new();
        }
        self.accounts_pending = true;
        vec![Command::LoadAccounts]
    }

    /// The reports the current tab shows that are missing or older than [`REPORT_EVERY_MS`].
    fn due_reports(&mut self) -> Vec<Command> {
        let wanted: &[Range] = match self.tab {
            Tab::Overview => &[Range::Hour, Range::Day],
            Tab::Analytics => &[self.range],
            _ => &[],
        };
        let now = self.now;
        let mut commands = Vec::new();
        for range in wanted {
            let slot = self.reports.slot_mut(*range);
            let stale = slot
                .loaded_at
                .is_none_or(|at| now.saturating_sub(at) >= REPORT_EVERY_MS);
            if stale && !slot.pending {
                slot.pending = true;
                commands.push(Command::LoadReport(*range));
            }
        }
        commands
    }

    fn done(&mut self, outcome: Outcome) -> Vec<Command> {
        match outcome {
            Outcome::Accounts(result) => {
                self.accounts_pending = false;
                match result {
                    Ok(accounts) => {
                        self.accounts = accounts;
                        self.accounts_loaded = true;
                        self.accounts_error = None;
                        self.account_selected = self
                            .account_selected
                            .min(self.accounts.len().saturating_sub(1));
                    }
                    Err(error) => self.accounts_error = Some(error.to_string()),
                }
                if std::mem::take(&mut self.accounts_stale) {
                    return self.load_accounts();
                }
                Vec::new()
            }
            Outcome::Recent(result) => {
                self.requests.loaded = true;
                match result {
                    Ok(records) => {
                        // The live feed may already have brought some of them.
                        let known: std::collections::HashSet<String> =
                            self.requests.rows.iter().map(|r| r.id.clone()).collect();
                        for record in records {
                            if self.requests.rows.len() >= REQUEST_ROWS {
                                break;
                            }
                            if !known.contains(&record.id) {
                                self.requests.rows.push_back(Arc::new(record));
                            }
                        }
                    }
                    Err(error) => self.notify(format!("requests: {error}"), true),
                }
                Vec::new()
            }
            Outcome::Report(range, result) => {
                let now = self.now;
                let slot = self.reports.slot_mut(range);
                slot.pending = false;
                slot.loaded_at = Some(now);
                match *result {
                    Ok(report) => {
                        slot.report = Some(report);
                        slot.error = None;
                    }
                    Err(error) => slot.error = Some(error.to_string()),
                }
                Vec::new()
            }
            Outcome::Changed(change, result) => self.changed(change, result),
        }
    }

    fn changed(&mut self, change: Change, result: Result<Changed, SourceError>) -> Vec<Command> {
        let mut commands = Vec::new();
        let touches_accounts = !matches!(change, Change::Setting(_) | Change::OAuthBegin { .. });
        match result {
            Ok(Changed::LoginOpened(start)) => {
                let waiting = matches!(
                    &self.modal,
                    Some(Modal::Dialog(Dialog {
                        kind: DialogKind::LoginName(_),
                        busy: true,
                        ..
                    }))
                );
                if let (true, Change::OAuthBegin { mode, name }) = (waiting, &change) {
                    self.modal = Some(Modal::Dialog(Dialog::new(
                        DialogKind::LoginCode {
                            mode: *mode,
                            name: name.clone(),
                            start,
                        },
                        vec![Field::masked("code")],
                    )));
                }
                return commands;
            }
            Ok(Changed::ClientKey(key)) => {
                if let Change::CreateClientKey { name } = &change {
                    self.modal = Some(Modal::Dialog(Dialog::new(
                        DialogKind::ClientKeyCreated {
                            name: name.clone(),
                            key,
                        },
                        Vec::new(),
                    )));
                }
                self.notify(change.done(), false);
                return commands;
            }
            Ok(changed) => {
                if self.modal_busy() {
                    self.modal = None;
                }
                if let Changed::Settings(settings) = &changed {
                    self.settings = settings.clone();
                }
                let text = match (&change, &changed) {
                    (Change::AddApiKey { .. }, Changed::Account(name)) => {
                        format!("account {name} added")
                    }
                    (Change::OAuthComplete { .. }, Changed::Account(name)) => {
                        format!("account {name} logged in")
                    }
                    _ => change.done(),
                };
                self.notify(text, false);
                if let Change::Rename { name, new_name } = &change
                    && self.requests.account.as_ref() == Some(name)
                {
                    self.requests.account = Some(new_name.clone());
                }
            }
            Err(error) => {
                let mut message = error.to_string();
                if error == SourceError::LoginExpired {
                    message = "the login expired: press Esc and start a new one".to_owned();
                }
                match &mut self.modal {
                    Some(Modal::Dialog(dialog)) if dialog.busy => {
                        dialog.busy = false;
                        dialog.error = Some(message);
                    }
                    Some(Modal::Picker(picker)) if picker.busy => {
                        picker.busy = false;
                        picker.error = Some(message);
                    }
                    _ => self.notify(message, true),
                }
                return commands;
            }
        }
        if touches_accounts {
            if self.accounts_pending {
                self.accounts_stale = true;
            } else {
                commands.extend(self.load_accounts());
            }
        }
        commands
    }

    fn modal_busy(&self) -> bool {
        match &self.modal {
            Some(Modal::Dialog(dialog)) => dialog.busy,
            Some(Modal::Picker(picker)) => picker.busy,
            None => false,
        }
    }

    fn paste(&mut self, text: &str) {
        if let Some(Modal::Dialog(dialog)) = &mut self.modal
            && !dialog.busy
            && let Some(field) = dialog.fields.get_mut(dialog.focus)
        {
            // A pasted key or code is one line; a trailing newline is the terminal's.
            field.text.extend(text.chars().filter(|c| !c.is_control()));
        }
    }

    fn key(&mut self, event: KeyEvent) -> Vec<Command> {
        let Some(key) = Key::of(&event) else {
            return Vec::new();
        };
        match keymap::lookup(self.screen(), key) {
            Some(action) => self.act(action),
            None => {
                self.edit(key);
                Vec::new()
            }
        }
    }

    /// Editing keys of a dialog's field.
    fn edit(&mut self, key: Key) {
        let Some(Modal::Dialog(dialog)) = &mut self.modal else {
            return;
        };
        if dialog.busy {
            return;
        }
        let Some(field) = dialog.fields.get_mut(dialog.focus) else {
            return;
        };
        match (key.code, key.modifiers) {
            (KeyCode::Char('u'), KeyModifiers::CONTROL) => field.text.clear(),
            (KeyCode::Char(c), KeyModifiers::NONE) => field.text.push(c),
            (KeyCode::Backspace, _) => {
                field.text.pop();
            }
            _ => {}
        }
    }

    /// Does what an action asks on the current screen.
    pub fn act(&mut self, action: Action) -> Vec<Command> {
        match action {
            Action::Quit => {
                self.quitting = true;
                return vec![Command::Quit];
            }
            Action::Help => self.help = true,
            Action::CloseHelp => self.help = false,
            Action::NextTab => return self.go(self.tab.step(1)),
            Action::PrevTab => return self.go(self.tab.step(-1)),
            Action::GoTab(tab) => return self.go(tab),
            Action::Up => self.move_by(-1),
            Action::Down => self.move_by(1),
            Action::PageUp => self.move_by(-(PAGE as isize)),
            Action::PageDown => self.move_by(PAGE as isize),
            Action::Top => self.move_to_end(true),
            Action::Bottom => self.move_to_end(false),
            Action::AddApiKey => {
                self.modal = Some(Modal::Dialog(Dialog::new(
                    DialogKind::AddApiKey,
                    vec![Field::masked("API key"), Field::new("name (optional)")],
                )));
            }
            Action::CreateClientKey => {
                self.modal = Some(Modal::Dialog(Dialog::new(
                    DialogKind::CreateClientKey,
                    vec![Field::new("name")],
                )));
            }
            Action::Login(mode) => {
                self.modal = Some(Modal::Dialog(Dialog::new(
                    DialogKind::LoginName(mode),
                    vec![Field::new("account name")],
                )));
            }
            Action::TogglePause => {
                if let Some(account) = self.selected_account() {
                    let change = Change::SetPaused {
                        name: account.name.clone(),
                        paused: account.status != AccountStatus::Paused,
                    };
                    return vec![Command::Change(change)];
                }
            }
            Action::Rename => {
                if let Some(account) = self.selected_account() {
                    let name = account.name.clone();
                    self.modal = Some(Modal::Dialog(Dialog::new(
                        DialogKind::Rename { name: name.clone() },
                        vec![Field::with("new name", name)],
                    )));
                }
            }
            Action::SetPriority => {
                if let Some(account) = self.selected_account() {
                    let (name, priority) = (account.name.clone(), account.priority);
                    self.modal = Some(Modal::Dialog(Dialog::new(
                        DialogKind::Priority { name },
                        vec![Field::with("priority", priority.to_string())],
                    )));
                }
            }
            Action::Remove => {
                if let Some(account) = self.selected_account() {
                    let name = account.name.clone();
                    self.modal = Some(Modal::Dialog(Dialog::new(
                        DialogKind::Remove { name },
                        vec![Field::new("type the account's name")],
                    )));
                }
            }
            Action::OpenDetail => {
                if self.requests.selected_record().is_some() {
                    self.requests.detail = true;
                }
            }
            Action::CloseDetail => self.requests.detail = false,
            Action::ToggleFollow => {
                let requests = &mut self.requests;
                if requests.follow {
                    // Stop on the row shown at the top now.
                    requests.selected = requests.selected_record().map(|r| r.id.clone());
                    requests.follow = false;
                } else {
                    requests.follow = true;
                }
            }
            Action::ErrorsOnly => self.requests.errors_only = !self.requests.errors_only,
            Action::CycleAccount => {
                let names = self.account_names();
                self.requests.account = cycle(&names, self.requests.account.as_deref());
            }
            Action::CycleModel => {
                let models = self.model_names();
                self.requests.model = cycle(&models, self.requests.model.as_deref());
            }
            Action::TextFilter => {
                self.modal = Some(Modal::Dialog(Dialog::new(
                    DialogKind::RequestFilter,
                    vec![Field::with("text", self.requests.text.clone())],
                )));
            }
            Action::ClearFilters => match self.tab {
                Tab::Logs => {
                    self.logs.search.clear();
                    self.logs.level = LevelFilter::All;
                }
                _ => {
                    let requests = &mut self.requests;
                    requests.errors_only = false;
                    requests.account = None;
                    requests.model = None;
                    requests.text.clear();
                }
            },
            Action::PrevRange | Action::NextRange => {
                let at = Range::ALL
                    .iter()
                    .position(|r| *r == self.range)
                    .unwrap_or(0);
                let at = if action == Action::NextRange {
                    (at + 1).min(Range::ALL.len() - 1)
                } else {
                    at.saturating_sub(1)
                };
                self.range = Range::ALL[at];
                return self.due_reports();
            }
            Action::CycleLevel => self.logs.level = self.logs.level.next(),
            Action::PauseLogs => {
                self.logs.paused_at = match self.logs.paused_at {
                    Some(_) => None,
                    None => Some(self.logs.next_seq.saturating_sub(1)),
                };
            }
            Action::Search => {
                self.modal = Some(Modal::Dialog(Dialog::new(
                    DialogKind::LogSearch,
                    vec![Field::with("text", self.logs.search.clone())],
                )));
            }
            Action::Edit => return self.edit_setting(),
            Action::Submit => return self.submit(),
            Action::Cancel => self.modal = None,
            Action::NextField => {
                if let Some(Modal::Dialog(dialog)) = &mut self.modal
                    && !dialog.fields.is_empty()
                {
                    dialog.focus = (dialog.focus + 1) % dialog.fields.len();
                }
            }
        }
        Vec::new()
    }

    fn go(&mut self, tab: Tab) -> Vec<Command> {
        self.tab = tab;
        self.due_reports()
    }

    /// Account names for the account filter: the pool's, then any only seen on requests.
    fn account_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.accounts.iter().map(|a| a.name.clone()).collect();
        for record in &self.requests.rows {
            if let Some(name) = &record.account_name
                && !names.contains(name)
            {
                names.push(name.clone());
            }
        }
        names
    }

    fn model_names(&self) -> Vec<String> {
        let mut models: Vec<String> = self
            .requests
            .rows
            .iter()
            .filter_map(|r| r.model.clone())
            .collect();
        models.sort();
        models.dedup();
        models
    }

    fn move_by(&mut self, by: isize) {
        if let Some(Modal::Picker(picker)) = &mut self.modal {
            if !picker.busy {
                picker.selected = step(picker.selected, by, picker.options.len());
            }
            return;
        }
        match self.tab {
            Tab::Accounts => {
                self.account_selected = step(self.account_selected, by, self.accounts.len());
            }
            Tab::Requests => self.requests.move_selection(|at, len| step(at, by, len)),
            Tab::Logs => {
                // Up scrolls back in time.
                let len = self.logs.visible().len();
                let scroll = self.logs.scroll as isize - by;
                self.logs.scroll = scroll.clamp(0, len.saturating_sub(1) as isize) as usize;
            }
            Tab::Settings => {
                self.setting_selected = step(self.setting_selected, by, SETTING_KEYS.len());
            }
            Tab::Overview | Tab::Analytics => {}
        }
    }

    fn move_to_end(&mut self, top: bool) {
        match self.tab {
            Tab::Accounts => {
                self.account_selected = if top {
                    0
                } else {
                    self.accounts.len().saturating_sub(1)
                };
            }
            Tab::Requests => {
                if top {
                    self.requests.move_selection(|_, _| 0);
                } else {
                    self.requests.move_selection(|_, len| len - 1);
                }
            }
            Tab::Logs => {
                self.logs.scroll = if top {
                    self.logs.visible().len().saturating_sub(1)
                } else {
                    0
                };
            }
            Tab::Settings => {
                self.setting_selected = if top { 0 } else { SETTING_KEYS.len() - 1 };
            }
            Tab::Overview | Tab::Analytics => {}
        }
    }

    fn edit_setting(&mut self) -> Vec<Command> {
        let key = SETTING_KEYS[self.setting_selected.min(SETTING_KEYS.len() - 1)];
        if self.settings.is_pinned(key) {
            self.notify(
                format!(
                    "{key} is set by a flag or the environment, which outrank changes made \
                     here; change it there"
                ),
                true,
            );
            return Vec::new();
        }
        self.modal = Some(match key {
            STRATEGY_KEY => Modal::Picker(Picker {
                options: Strategy::ALL.to_vec(),
                selected: Strategy::ALL
                    .iter()
                    .position(|s| *s == self.settings.strategy)
                    .unwrap_or(0),
                busy: false,
                error: None,
            }),
            SESSION_TIMEOUT_KEY => Modal::Dialog(Dialog::new(
                DialogKind::SessionTimeout,
                vec![Field::with(
                    "seconds",
                    self.settings.session_timeout_s.to_string(),
                )],
            )),
            _ => Modal::Dialog(Dialog::new(
                DialogKind::Retention,
                vec![Field::with(
                    "days (0 keeps everything)",
                    self.settings.retention_days.to_string(),
                )],
            )),
        });
        Vec::new()
    }

    fn submit(&mut self) -> Vec<Command> {
        match &mut self.modal {
            Some(Modal::Picker(picker)) => {
                if picker.busy {
                    return Vec::new();
                }
                let Some(strategy) = picker.options.get(picker.selected).copied() else {
                    return Vec::new();
                };
                picker.busy = true;
                picker.error = None;
                vec![Command::Change(Change::Setting(SettingChange::Strategy(
                    strategy,
                )))]
            }
            Some(Modal::Dialog(dialog)) => {
                if dialog.busy {
                    return Vec::new();
                }
                match dialog_change(dialog) {
                    Ok(Some(change)) => {
                        dialog.busy = true;
                        dialog.error = None;
                        vec![Command::Change(change)]
                    }
                    Ok(None) => {
                        // A filter: applied here, no operation.
                        let text = dialog.text(0).to_owned();
                        match dialog.kind {
                            DialogKind::LogSearch => {
                                self.logs.search = text;
                                self.logs.scroll = 0;
                            }
                            DialogKind::RequestFilter => self.requests.text = text,
                            // Read: it closes, and the key is gone from the screen.
                            _ => {}
                        }
                        self.modal = None;
                        Vec::new()
                    }
                    Err(message) => {
                        dialog.error = Some(message);
                        Vec::new()
                    }
                }
            }
            None => Vec::new(),
        }
    }

    /// Whether the Requests tab has a filter on (its title says so).
    pub fn request_filters_on(&self) -> bool {
        self.requests.active_filters()
    }
}

/// The change a dialog's fields ask for; `Ok(None)` for the filter dialogs, which change
/// nothing outside the UI; `Err` says what to fix before anything is sent.
fn dialog_change(dialog: &Dialog) -> Result<Option<Change>, String> {
    let first = dialog.text(0);
    let change = match &dialog.kind {
        DialogKind::AddApiKey => {
            if first.is_empty() {
                return Err("paste an API key (sk-ant-…)".to_owned());
            }
            let name = dialog.text(1);
            Change::AddApiKey {
                key: Secret::new(first),
                name: (!name.is_empty()).then(|| name.to_owned()),
            }
        }
        DialogKind::LoginName(mode) => {
            if first.is_empty() {
                return Err("type a name for the new account".to_owned());
            }
            Change::OAuthBegin {
                mode: *mode,
                name: first.to_owned(),
            }
        }
        DialogKind::LoginCode { start, .. } => {
            if first.is_empty() {
                return Err("paste the code the page shows (CODE#STATE)".to_owned());
            }
            Change::OAuthComplete {
                flow_id: start.flow_id.clone(),
                code: Secret::new(first),
            }
        }
        DialogKind::Rename { name } => {
            if first.is_empty() {
                return Err("type the new name".to_owned());
            }
            Change::Rename {
                name: name.clone(),
                new_name: first.to_owned(),
            }
        }
        DialogKind::Priority { name } => Change::SetPriority {
            name: name.clone(),
            priority: first
                .parse()
                .map_err(|_| format!("priority: expected a whole number, got {first:?}"))?,
        },
        DialogKind::Remove { name } => {
            // Exactly the name, as typed: removing is not undone.
            if dialog.fields.first().map(|f| f.text.as_str()) != Some(name.as_str()) {
                return Err(format!("type {name} exactly to remove it"));
            }
            Change::Remove { name: name.clone() }
        }
        DialogKind::SessionTimeout => Change::Setting(SettingChange::SessionTimeout {
            seconds: first
                .parse()
                .map_err(|_| format!("expected a number of seconds, got {first:?}"))?,
        }),
        DialogKind::Retention => Change::Setting(SettingChange::RetentionDays {
            days: first
                .parse()
                .map_err(|_| format!("expected a number of days, got {first:?}"))?,
        }),
        DialogKind::CreateClientKey => {
            if first.is_empty() {
                return Err("type a name for the key (who will use it)".to_owned());
            }
            Change::CreateClientKey {
                name: first.to_owned(),
            }
        }
        DialogKind::RequestFilter | DialogKind::LogSearch | DialogKind::ClientKeyCreated { .. } => {
            return Ok(None);
        }
    };
    Ok(Some(change))
}

/// `at` moved by `by`, kept inside `0..len`.
fn step(at: usize, by: isize, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    (at as isize + by).clamp(0, len as isize - 1) as usize
}

/// The value after `current` in `none, values[0], values[1], …, none`.
fn cycle(values: &[String], current: Option<&str>) -> Option<String> {
    match current {
        None => values.first().cloned(),
        Some(current) => {
            let at = values.iter().position(|v| v == current)?;
            values.get(at + 1).cloned()
        }
    }
}
