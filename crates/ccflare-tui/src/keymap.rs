//! The keymap, as data: every key the UI answers, in which context, and the action it asks
//! for. Key handling looks keys up here ([`lookup`]); the `?` help screen and `docs/tui.md`
//! are generated from the same table ([`help_lines`], [`markdown`]), so they cannot drift
//! from what the keys do.
//!
//! Contexts are layered: the screen's state decides which are active at once ([`layers`]),
//! most specific first, and the first binding of the key in that order wins. A dialog or the
//! help screen is modal: only its own keys and [`Context::Always`] apply, and other printable
//! keys are typed into the dialog's field.

use crate::app::Tab;
use ccflare_oauth::Mode;
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// Where a binding applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// Everywhere, dialogs included.
    Always,
    /// Everywhere but in a dialog or the help screen.
    Global,
    /// Moving in the list of the current tab (accounts, requests, log lines, settings).
    List,
    Accounts,
    Requests,
    /// The Requests tab with a request's details open.
    Detail,
    Analytics,
    Logs,
    Settings,
    /// A dialog with text fields.
    Dialog,
    /// Choosing one of a few values (the strategy).
    Picker,
    Help,
}

impl Context {
    pub const ALL: [Context; 12] = [
        Context::Always,
        Context::Global,
        Context::List,
        Context::Accounts,
        Context::Requests,
        Context::Detail,
        Context::Analytics,
        Context::Logs,
        Context::Settings,
        Context::Dialog,
        Context::Picker,
        Context::Help,
    ];

    /// The heading of its section in the help screen and `docs/tui.md`.
    pub fn title(self) -> &'static str {
        match self {
            Context::Always => "Everywhere",
            Context::Global => "Outside dialogs",
            Context::List => "Lists (Accounts, Requests, Logs, Settings)",
            Context::Accounts => "Accounts (2)",
            Context::Requests => "Requests (3)",
            Context::Detail => "Request details (Requests, Enter)",
            Context::Analytics => "Analytics (4)",
            Context::Logs => "Logs (5)",
            Context::Settings => "Strategy & settings (6)",
            Context::Dialog => "Dialogs",
            Context::Picker => "Choosing a value",
            Context::Help => "This help",
        }
    }
}

/// What a key asks for. Text typed into a dialog's field is not an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    Help,
    CloseHelp,
    NextTab,
    PrevTab,
    GoTab(Tab),
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    AddApiKey,
    CreateClientKey,
    Login(Mode),
    TogglePause,
    Rename,
    SetPriority,
    Remove,
    OpenDetail,
    CloseDetail,
    ToggleFollow,
    ErrorsOnly,
    CycleAccount,
    CycleModel,
    TextFilter,
    ClearFilters,
    PrevRange,
    NextRange,
    CycleLevel,
    PauseLogs,
    Search,
    Edit,
    Submit,
    Cancel,
    NextField,
}

impl Action {
    /// Every action (a test checks each one has a key).
    pub const ALL: [Action; 42] = [
        Action::Quit,
        Action::Help,
        Action::CloseHelp,
        Action::NextTab,
        Action::PrevTab,
        Action::GoTab(Tab::Overview),
        Action::GoTab(Tab::Accounts),
        Action::GoTab(Tab::Requests),
        Action::GoTab(Tab::Analytics),
        Action::GoTab(Tab::Logs),
        Action::GoTab(Tab::Settings),
        Action::Up,
        Action::Down,
        Action::PageUp,
        Action::PageDown,
        Action::Top,
        Action::Bottom,
        Action::AddApiKey,
        Action::CreateClientKey,
        Action::Login(Mode::Max),
        Action::Login(Mode::Console),
        Action::TogglePause,
        Action::Rename,
        Action::SetPriority,
        Action::Remove,
        Action::OpenDetail,
        Action::CloseDetail,
        Action::ToggleFollow,
        Action::ErrorsOnly,
        Action::CycleAccount,
        Action::CycleModel,
        Action::TextFilter,
        Action::ClearFilters,
        Action::PrevRange,
        Action::NextRange,
        Action::CycleLevel,
        Action::PauseLogs,
        Action::Search,
        Action::Edit,
        Action::Submit,
        Action::Cancel,
        Action::NextField,
    ];
}

/// A key with its modifiers. Shift is part of the character (`O`, not Shift-o), so it is
/// never a modifier of a character key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub code: KeyCode,
    pub modifiers: KeyModifiers,
}

const fn ch(c: char) -> Key {
    Key {
        code: KeyCode::Char(c),
        modifiers: KeyModifiers::NONE,
    }
}

const fn ctrl(c: char) -> Key {
    Key {
        code: KeyCode::Char(c),
        modifiers: KeyModifiers::CONTROL,
    }
}

const fn code(code: KeyCode) -> Key {
    Key {
        code,
        modifiers: KeyModifiers::NONE,
    }
}

impl Key {
    /// The key a terminal event stands for: Shift folded into characters and Shift-Tab,
    /// releases ignored.
    pub fn of(event: &KeyEvent) -> Option<Key> {
        if event.kind == KeyEventKind::Release {
            return None;
        }
        let mut modifiers = event.modifiers;
        if matches!(event.code, KeyCode::Char(_) | KeyCode::BackTab) {
            modifiers.remove(KeyModifiers::SHIFT);
        }
        Some(Key {
            code: event.code,
            modifiers,
        })
    }

    /// The event a terminal sends for this key (tests press keys with it).
    pub fn event(self) -> KeyEvent {
        KeyEvent::new(self.code, self.modifiers)
    }

    /// How the help screen names the key: `q`, `Ctrl-C`, `Shift-Tab`, `↑`, `PgDn`.
    pub fn label(self) -> String {
        let name = match self.code {
            KeyCode::Char(' ') => "Space".to_owned(),
            KeyCode::Char(c) => c.to_string(),
            KeyCode::Enter => "Enter".to_owned(),
            KeyCode::Esc => "Esc".to_owned(),
            KeyCode::Tab => "Tab".to_owned(),
            KeyCode::BackTab => "Shift-Tab".to_owned(),
            KeyCode::Up => "↑".to_owned(),
            KeyCode::Down => "↓".to_owned(),
            KeyCode::Left => "←".to_owned(),
            KeyCode::Right => "→".to_owned(),
            KeyCode::PageUp => "PgUp".to_owned(),
            KeyCode::PageDown => "PgDn".to_owned(),
            KeyCode::Home => "Home".to_owned(),
            KeyCode::End => "End".to_owned(),
            KeyCode::Delete => "Del".to_owned(),
            KeyCode::Backspace => "Backspace".to_owned(),
            other => format!("{other:?}"),
        };
        if self.modifiers.contains(KeyModifiers::CONTROL) {
            format!("Ctrl-{}", name.to_uppercase())
        } else {
            name
        }
    }
}

/// One line of the keymap: these keys, in this context, ask for this action.
#[derive(Debug, Clone, Copy)]
pub struct Binding {
    pub context: Context,
    pub keys: &'static [Key],
    pub action: Action,
    /// The word in the footer's key hints; empty keeps it out of the footer.
    pub hint: &'static str,
    pub help: &'static str,
}

const fn bind(
    context: Context,
    keys: &'static [Key],
    action: Action,
    hint: &'static str,
    help: &'static str,
) -> Binding {
    Binding {
        context,
        keys,
        action,
        hint,
        help,
    }
}

use Context as C;

/// Every key binding.
pub const KEYMAP: &[Binding] = &[
    bind(
        C::Always,
        &[ctrl('c')],
        Action::Quit,
        "",
        "quit (stops the server)",
    ),
    bind(
        C::Global,
        &[ch('q')],
        Action::Quit,
        "quit",
        "quit (stops the server)",
    ),
    bind(C::Global, &[ch('?')], Action::Help, "help", "show the keys"),
    bind(
        C::Global,
        &[code(KeyCode::Tab)],
        Action::NextTab,
        "",
        "next tab",
    ),
    bind(
        C::Global,
        &[code(KeyCode::BackTab)],
        Action::PrevTab,
        "",
        "previous tab",
    ),
    bind(
        C::Global,
        &[ch('1')],
        Action::GoTab(Tab::Overview),
        "",
        "Overview",
    ),
    bind(
        C::Global,
        &[ch('2')],
        Action::GoTab(Tab::Accounts),
        "",
        "Accounts",
    ),
    bind(
        C::Global,
        &[ch('3')],
        Action::GoTab(Tab::Requests),
        "",
        "Requests",
    ),
    bind(
        C::Global,
        &[ch('4')],
        Action::GoTab(Tab::Analytics),
        "",
        "Analytics",
    ),
    bind(C::Global, &[ch('5')], Action::GoTab(Tab::Logs), "", "Logs"),
    bind(
        C::Global,
        &[ch('6')],
        Action::GoTab(Tab::Settings),
        "",
        "Strategy & settings",
    ),
    bind(C::List, &[code(KeyCode::Up), ch('k')], Action::Up, "", "up"),
    bind(
        C::List,
        &[code(KeyCode::Down), ch('j')],
        Action::Down,
        "",
        "down",
    ),
    bind(
        C::List,
        &[code(KeyCode::PageUp)],
        Action::PageUp,
        "",
        "a page up",
    ),
    bind(
        C::List,
        &[code(KeyCode::PageDown)],
        Action::PageDown,
        "",
        "a page down",
    ),
    bind(
        C::List,
        &[code(KeyCode::Home), ch('g')],
        Action::Top,
        "",
        "to the top",
    ),
    bind(
        C::List,
        &[code(KeyCode::End), ch('G')],
        Action::Bottom,
        "",
        "to the bottom",
    ),
    bind(
        C::Accounts,
        &[ch('a')],
        Action::AddApiKey,
        "add key",
        "add an API key",
    ),
    bind(
        C::Accounts,
        &[ch('n')],
        Action::CreateClientKey,
        // Not in the hint line, which 80 columns fill already: `?` and docs/tui.md list it.
        "",
        "create a client key for /v1 (shown once)",
    ),
    bind(
        C::Accounts,
        &[ch('o')],
        Action::Login(Mode::Max),
        "login",
        "add a Claude Pro/Max login (OAuth)",
    ),
    bind(
        C::Accounts,
        &[ch('O')],
        Action::Login(Mode::Console),
        "console",
        "add a Console login (mints an API key)",
    ),
    bind(
        C::Accounts,
        &[ch('p')],
        Action::TogglePause,
        "pause",
        "pause or resume",
    ),
    bind(C::Accounts, &[ch('r')], Action::Rename, "rename", "rename"),
    bind(
        C::Accounts,
        &[ch('P')],
        Action::SetPriority,
        "priority",
        "set priority",
    ),
    bind(
        C::Accounts,
        &[ch('d'), code(KeyCode::Delete)],
        Action::Remove,
        "remove",
        "remove (asks for the name)",
    ),
    bind(
        C::Requests,
        &[code(KeyCode::Enter)],
        Action::OpenDetail,
        "details",
        "details of the request",
    ),
    bind(
        C::Requests,
        &[ch('f')],
        Action::ToggleFollow,
        "follow",
        "follow the newest request on or off",
    ),
    bind(
        C::Requests,
        &[ch('e')],
        Action::ErrorsOnly,
        "errors",
        "errors only",
    ),
    bind(
        C::Requests,
        &[ch('a')],
        Action::CycleAccount,
        "account",
        "next account filter",
    ),
    bind(
        C::Requests,
        &[ch('m')],
        Action::CycleModel,
        "model",
        "next model filter",
    ),
    bind(
        C::Requests,
        &[ch('/')],
        Action::TextFilter,
        "filter",
        "filter by text",
    ),
    bind(
        C::Requests,
        &[ch('c')],
        Action::ClearFilters,
        "clear",
        "clear the filters",
    ),
    bind(
        C::Detail,
        &[code(KeyCode::Esc), code(KeyCode::Enter)],
        Action::CloseDetail,
        "close",
        "close the details",
    ),
    bind(
        C::Analytics,
        &[code(KeyCode::Left), ch('h')],
        Action::PrevRange,
        "range",
        "shorter range",
    ),
    bind(
        C::Analytics,
        &[code(KeyCode::Right), ch('l')],
        Action::NextRange,
        "range",
        "longer range",
    ),
    bind(
        C::Logs,
        &[ch('l')],
        Action::CycleLevel,
        "level",
        "level filter: all, warnings, errors",
    ),
    bind(
        C::Logs,
        &[ch('p'), ch(' ')],
        Action::PauseLogs,
        "pause",
        "pause or resume",
    ),
    bind(C::Logs, &[ch('/')], Action::Search, "search", "search"),
    bind(
        C::Logs,
        &[ch('c')],
        Action::ClearFilters,
        "clear",
        "clear the search and level filter",
    ),
    bind(
        C::Settings,
        &[code(KeyCode::Enter)],
        Action::Edit,
        "change",
        "change the setting",
    ),
    bind(
        C::Dialog,
        &[code(KeyCode::Enter)],
        Action::Submit,
        "submit",
        "submit",
    ),
    bind(
        C::Dialog,
        &[code(KeyCode::Esc)],
        Action::Cancel,
        "cancel",
        "cancel",
    ),
    bind(
        C::Dialog,
        &[code(KeyCode::Tab)],
        Action::NextField,
        "next field",
        "next field",
    ),
    bind(
        C::Picker,
        &[code(KeyCode::Up), ch('k')],
        Action::Up,
        "",
        "previous value",
    ),
    bind(
        C::Picker,
        &[code(KeyCode::Down), ch('j')],
        Action::Down,
        "",
        "next value",
    ),
    bind(
        C::Picker,
        &[code(KeyCode::Enter)],
        Action::Submit,
        "apply",
        "apply",
    ),
    bind(
        C::Picker,
        &[code(KeyCode::Esc)],
        Action::Cancel,
        "cancel",
        "cancel",
    ),
    bind(
        C::Help,
        &[code(KeyCode::Esc), ch('?'), ch('q')],
        Action::CloseHelp,
        "close",
        "close this help",
    ),
];

/// Keys of the text fields in dialogs, which are not actions but editing; listed in the help
/// and the docs with the keymap.
pub const EDITING_KEYS: &[(&str, &str)] = &[
    (
        "any character",
        "typed into the field (a paste arrives whole)",
    ),
    ("Backspace", "delete the last character"),
    ("Ctrl-U", "clear the field"),
];

/// Which contexts are active on a screen, most specific first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    Tab { tab: Tab, detail: bool },
    Dialog,
    Picker,
    Help,
}

/// The contexts of a screen, most specific first.
pub fn layers(screen: Screen) -> &'static [Context] {
    match screen {
        Screen::Help => &[C::Always, C::Help],
        Screen::Dialog => &[C::Always, C::Dialog],
        Screen::Picker => &[C::Always, C::Picker],
        Screen::Tab { tab, detail } => match tab {
            Tab::Overview => &[C::Always, C::Global],
            Tab::Accounts => &[C::Always, C::Accounts, C::List, C::Global],
            Tab::Requests if detail => &[C::Always, C::Detail, C::List, C::Global],
            Tab::Requests => &[C::Always, C::Requests, C::List, C::Global],
            Tab::Analytics => &[C::Always, C::Analytics, C::Global],
            Tab::Logs => &[C::Always, C::Logs, C::List, C::Global],
            Tab::Settings => &[C::Always, C::Settings, C::List, C::Global],
        },
    }
}

/// Every screen, for the tests and the docs.
pub fn screens() -> Vec<Screen> {
    let mut all = vec![Screen::Dialog, Screen::Picker, Screen::Help];
    for tab in Tab::ALL {
        all.push(Screen::Tab { tab, detail: false });
    }
    all.push(Screen::Tab {
        tab: Tab::Requests,
        detail: true,
    });
    all
}

/// The action `key` asks for on `screen`, if any.
pub fn lookup(screen: Screen, key: Key) -> Option<Action> {
    layers(screen).iter().find_map(|context| {
        KEYMAP
            .iter()
            .find(|b| b.context == *context && b.keys.contains(&key))
            .map(|b| b.action)
    })
}

/// The keys of a binding as the help shows them: `↑ k`.
pub fn keys_label(binding: &Binding) -> String {
    binding
        .keys
        .iter()
        .map(|k| k.label())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The help screen for `screen`: one section per active context, each line the keys and
/// what they do.
pub fn help_lines(screen: Screen) -> Vec<(Option<&'static str>, String, &'static str)> {
    let mut lines = Vec::new();
    for context in layers(screen) {
        let bindings: Vec<&Binding> = KEYMAP.iter().filter(|b| b.context == *context).collect();
        if bindings.is_empty() {
            continue;
        }
        lines.push((Some(context.title()), String::new(), ""));
        for binding in bindings {
            lines.push((None, keys_label(binding), binding.help));
        }
        if *context == C::Dialog {
            for (keys, help) in EDITING_KEYS {
                lines.push((None, (*keys).to_owned(), *help));
            }
        }
    }
    lines
}

/// The footer's key hints for `screen`: the screen's own keys first, then the global ones;
/// bindings that share a hint (`←/→ range`) are shown once.
pub fn hints(screen: Screen) -> Vec<(String, &'static str)> {
    let mut out: Vec<(String, &'static str)> = Vec::new();
    for context in layers(screen) {
        for binding in KEYMAP
            .iter()
            .filter(|b| b.context == *context && !b.hint.is_empty())
        {
            let key = binding.keys[0].label();
            match out.iter_mut().find(|(_, hint)| *hint == binding.hint) {
                Some(entry) if !entry.0.split('/').any(|k| k == key) => {
                    entry.0.push('/');
                    entry.0.push_str(&key);
                }
                Some(_) => {}
                None => out.push((key, binding.hint)),
            }
        }
    }
    out
}

/// The key reference of `docs/tui.md`: one table per context.
pub fn markdown() -> String {
    let mut out = String::new();
    for context in Context::ALL {
        let bindings: Vec<&Binding> = KEYMAP.iter().filter(|b| b.context == context).collect();
        if bindings.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "### {}\n\n| keys | action |\n|---|---|\n",
            context.title()
        ));
        for binding in bindings {
            let keys = binding
                .keys
                .iter()
                .map(|k| format!("`{}`", k.label()))
                .collect::<Vec<_>>()
                .join(" ");
            out.push_str(&format!("| {keys} | {} |\n", binding.help));
        }
        if context == C::Dialog {
            for (keys, help) in EDITING_KEYS {
                out.push_str(&format!("| {keys} | {help} |\n"));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails to compile when an action is added: every variant is named here, a reminder
    /// that `Action::ALL` (right above the enum's end) must hold it too.
    fn named(action: Action) -> Action {
        match action {
            Action::Quit
            | Action::Help
            | Action::CloseHelp
            | Action::NextTab
            | Action::PrevTab
            | Action::GoTab(_)
            | Action::Up
            | Action::Down
            | Action::PageUp
            | Action::PageDown
            | Action::Top
            | Action::Bottom
            | Action::AddApiKey
            | Action::CreateClientKey
            | Action::Login(_)
            | Action::TogglePause
            | Action::Rename
            | Action::SetPriority
            | Action::Remove
            | Action::OpenDetail
            | Action::CloseDetail
            | Action::ToggleFollow
            | Action::ErrorsOnly
            | Action::CycleAccount
            | Action::CycleModel
            | Action::TextFilter
            | Action::ClearFilters
            | Action::PrevRange
            | Action::NextRange
            | Action::CycleLevel
            | Action::PauseLogs
            | Action::Search
            | Action::Edit
            | Action::Submit
            | Action::Cancel
            | Action::NextField => action,
        }
    }

    #[test]
    fn every_action_has_a_key_that_reaches_it() {
        for action in Action::ALL {
            let action = named(action);
            let reached = screens().into_iter().any(|screen| {
                KEYMAP
                    .iter()
                    .filter(|b| b.action == action)
                    .flat_map(|b| b.keys)
                    .any(|key| lookup(screen, *key) == Some(action))
            });
            assert!(reached, "no screen reaches {action:?} with any key");
        }
        // And every binding is reached on some screen by each of its keys (none is shadowed
        // by a more specific context everywhere it is active).
        for binding in KEYMAP {
            for key in binding.keys {
                let reached = screens()
                    .into_iter()
                    .filter(|s| layers(*s).contains(&binding.context))
                    .any(|s| lookup(s, *key) == Some(binding.action));
                assert!(
                    reached,
                    "{} in {:?} never reaches {:?}",
                    key.label(),
                    binding.context,
                    binding.action
                );
            }
        }
    }

    #[test]
    fn no_key_is_bound_twice_on_one_screen() {
        for screen in screens() {
            let mut seen: Vec<(Key, Context)> = Vec::new();
            for context in layers(screen) {
                for binding in KEYMAP.iter().filter(|b| b.context == *context) {
                    for key in binding.keys {
                        if let Some((_, other)) = seen.iter().find(|(k, _)| k == key) {
                            panic!(
                                "{} is bound in {other:?} and in {context:?}, both active on \
                                 {screen:?}",
                                key.label()
                            );
                        }
                        seen.push((*key, *context));
                    }
                }
            }
        }
    }

    #[test]
    fn every_context_is_on_some_screen() {
        for context in Context::ALL {
            assert!(
                screens().iter().any(|s| layers(*s).contains(&context)),
                "{context:?} is on no screen"
            );
        }
    }

    #[test]
    fn the_help_lists_every_key_of_its_screen() {
        for screen in screens() {
            let help = help_lines(screen);
            for context in layers(screen) {
                for binding in KEYMAP.iter().filter(|b| b.context == *context) {
                    assert!(
                        help.iter()
                            .any(|(_, keys, text)| *keys == keys_label(binding)
                                && *text == binding.help),
                        "the help of {screen:?} lacks {} ({})",
                        keys_label(binding),
                        binding.help
                    );
                }
            }
        }
    }

    #[test]
    fn terminal_events_become_keys() {
        use crossterm::event::KeyEventState;
        let shifted = KeyEvent::new(KeyCode::Char('O'), KeyModifiers::SHIFT);
        assert_eq!(Key::of(&shifted), Some(ch('O')));
        let back = KeyEvent::new(KeyCode::BackTab, KeyModifiers::SHIFT);
        assert_eq!(Key::of(&back), Some(code(KeyCode::BackTab)));
        let release = KeyEvent {
            kind: KeyEventKind::Release,
            state: KeyEventState::NONE,
            ..KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE)
        };
        assert_eq!(Key::of(&release), None);
        assert_eq!(ctrl('c').label(), "Ctrl-C");
        assert_eq!(
            lookup(Screen::Dialog, ch('q')),
            None,
            "q is typed in a dialog"
        );
        assert_eq!(lookup(Screen::Dialog, ctrl('c')), Some(Action::Quit));
        assert_eq!(lookup(Screen::Help, ch('q')), Some(Action::CloseHelp));
    }
}
