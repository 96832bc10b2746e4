//! The run loop itself (`run_with`) on a test backend whose frames the test can read while
//! it runs, with keys sent through a channel and the [`FakeSource`] as the server: keys reach
//! the source, live requests and log lines reach the screen, a flood does not turn into a
//! flood of frames, and each way out (quit, the shutdown signal, the end of input) ends it.
//! Time is tokio's paused clock, so the one-second tick costs no waiting.

mod common;

use ccflare_core::AccountStatus;
use ccflare_core::record::RequestRecord;
use ccflare_testkit::{GUARD, eventually};
use ccflare_tui::fake::NOW;
use ccflare_tui::{Exit, FakeSource, Theme, run_with};
use common::{key, text_of};
use crossterm::event::Event as TermEvent;
use futures_core::Stream;
use ratatui::Terminal;
use ratatui::backend::{Backend, ClearType, TestBackend, WindowSize};
use ratatui::buffer::Cell;
use ratatui::layout::{Position, Size};
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};

/// A `TestBackend` shared with the test, counting the frames drawn.
#[derive(Clone)]
struct Shared {
    backend: Arc<Mutex<TestBackend>>,
    frames: Arc<Mutex<usize>>,
}

impl Shared {
    fn new(width: u16, height: u16) -> Shared {
        Shared {
            backend: Arc::new(Mutex::new(TestBackend::new(width, height))),
            frames: Arc::new(Mutex::new(0)),
        }
    }

    fn screen(&self) -> String {
        text_of(self.backend.lock().unwrap().buffer())
    }

    fn frames(&self) -> usize {
        *self.frames.lock().unwrap()
    }
}

impl Backend for Shared {
    type Error = Infallible;

    fn draw<'a, I>(&mut self, content: I) -> Result<(), Infallible>
    where
        I: Iterator<Item = (u16, u16, &'a Cell)>,
    {
        self.backend.lock().unwrap().draw(content)
    }
    fn hide_cursor(&mut self) -> Result<(), Infallible> {
        self.backend.lock().unwrap().hide_cursor()
    }
    fn show_cursor(&mut self) -> Result<(), Infallible> {
        self.backend.lock().unwrap().show_cursor()
    }
    fn get_cursor_position(&mut self) -> Result<Position, Infallible> {
        self.backend.lock().unwrap().get_cursor_position()
    }
    fn set_cursor_position<P: Into<Position>>(&mut self, position: P) -> Result<(), Infallible> {
        self.backend.lock().unwrap().set_cursor_position(position)
    }
    fn clear(&mut self) -> Result<(), Infallible> {
        self.backend.lock().unwrap().clear()
    }
    fn clear_region(&mut self, clear_type: ClearType) -> Result<(), Infallible> {
        self.backend.lock().unwrap().clear_region(clear_type)
    }
    fn size(&self) -> Result<Size, Infallible> {
        self.backend.lock().unwrap().size()
    }
    fn window_size(&mut self) -> Result<WindowSize, Infallible> {
        self.backend.lock().unwrap().window_size()
    }
    fn flush(&mut self) -> Result<(), Infallible> {
        // Terminal::draw flushes once per frame.
        *self.frames.lock().unwrap() += 1;
        self.backend.lock().unwrap().flush()
    }
}

/// Terminal input, sent by the test.
struct Input(mpsc::UnboundedReceiver<io::Result<TermEvent>>);

impl Stream for Input {
    type Item = io::Result<TermEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

struct Running {
    keys: mpsc::UnboundedSender<io::Result<TermEvent>>,
    stop: Option<oneshot::Sender<()>>,
    screen: Shared,
    done: tokio::task::JoinHandle<Exit>,
}

impl Running {
    fn start(fake: &FakeSource, width: u16, height: u16) -> Running {
        let (keys, input) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let screen = Shared::new(width, height);
        let source = fake.clone();
        let backend = screen.clone();
        let done = tokio::spawn(async move {
            let mut terminal = Terminal::new(backend).unwrap();
            let shutdown = async {
                let _ = stopped.await;
            };
            run_with(source, &mut terminal, Input(input), Theme::COLOR, shutdown)
                .await
                .expect("the loop runs")
        });
        Running {
            keys,
            stop: Some(stop),
            screen,
            done,
        }
    }

    fn press(&self, c: char) {
        self.keys.send(Ok(TermEvent::Key(key(c)))).unwrap();
    }

    async fn shows(&self, text: &str) {
        eventually(GUARD, &format!("the screen shows {text:?}"), || async {
            self.screen.screen().contains(text).then_some(())
        })
        .await;
    }

    async fn exit(self) -> Exit {
        tokio::time::timeout(GUARD, self.done)
            .await
            .expect("the loop ends")
            .expect("the loop does not panic")
    }
}

#[tokio::test(start_paused = true)]
async fn keys_reach_the_source_and_q_waits_for_the_change_then_exits() {
    let fake = FakeSource::seeded();
    let ui = Running::start(&fake, 80, 24);
    ui.shows("2 active, 1 limited, 1 paused").await;
    ui.press('2');
    ui.shows("Accounts (4)").await;
    // The accounts are read every tick; once read twice, the first read's rows are in.
    let loads = fake.account_loads();
    fake.wait_for_account_loads(loads + 1).await;
    ui.press('p');
    ui.press('q');
    assert_eq!(ui.exit().await, Exit::Quit);
    assert_eq!(
        fake.account("work").unwrap().status,
        AccountStatus::Paused,
        "the pause asked for just before quitting happened"
    );
}

#[tokio::test(start_paused = true)]
async fn live_requests_and_log_lines_reach_the_screen() {
    let fake = FakeSource::empty();
    let ui = Running::start(&fake, 120, 40);
    ui.press('3');
    ui.shows("no requests yet").await;
    fake.finish(RequestRecord {
        id: "ccf_live".into(),
        started_at: NOW,
        model: Some("claude-live-model".into()),
        account_name: Some("work".into()),
        status: 200,
        success: true,
        attempts: 1,
        ..RequestRecord::default()
    });
    ui.shows("claude-live-model").await;
    ui.press('5');
    fake.log(
        r#"{"time":1769860800000,"level":"WARN","target":"t","message":"a live line","fields":{}}"#,
    );
    ui.shows("WARN  a live line").await;
    ui.keys.send(Ok(TermEvent::Key(common::ctrl('c')))).unwrap();
    assert_eq!(ui.exit().await, Exit::Quit);
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_requests_is_drawn_in_few_frames() {
    let fake = FakeSource::empty();
    let ui = Running::start(&fake, 80, 24);
    ui.press('3');
    ui.shows("no requests yet").await;
    let before = ui.screen.frames();
    let started = tokio::time::Instant::now();
    for n in 0..5_000 {
        fake.finish(RequestRecord {
            id: format!("ccf_{n}"),
            started_at: NOW,
            model: Some(format!("model-{n}")),
            status: 200,
            success: true,
            ..RequestRecord::default()
        });
        // 5,000 requests a second, on the paused clock: the loop takes what the feed holds
        // once a frame, as it does from a real server's.
        if n % 50 == 49 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    ui.shows("model-4999").await;
    assert!(
        !ui.screen.screen().contains("skipped"),
        "a feed of the real one's size holds a frame's requests at 5,000/s: {}",
        ui.screen.screen()
    );
    let frames = ui.screen.frames() - before;
    let elapsed = started.elapsed().as_millis() as usize;
    assert!(
        frames <= elapsed / 100 + 2,
        "{frames} frames in {elapsed} ms: at most ten a second"
    );
    ui.press('q');
    assert_eq!(ui.exit().await, Exit::Quit);
}

#[tokio::test(start_paused = true)]
async fn the_shutdown_signal_and_the_end_of_input_end_the_loop() {
    let fake = FakeSource::seeded();
    let mut ui = Running::start(&fake, 80, 24);
    ui.shows("Last hour").await;
    ui.stop.take().unwrap().send(()).unwrap();
    assert_eq!(ui.exit().await, Exit::Shutdown);

    let ui = Running::start(&fake, 80, 24);
    ui.shows("Last hour").await;
    let Running { keys, done, .. } = ui;
    drop(keys);
    let exit = tokio::time::timeout(GUARD, done).await.unwrap().unwrap();
    assert_eq!(exit, Exit::InputClosed);
}
