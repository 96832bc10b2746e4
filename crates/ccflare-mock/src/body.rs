//! Response bodies: a whole buffer, or a scripted stream of chunks with delays between them.
//!
//! The scripted body is a real stream polled by hyper frame by frame, so a client that goes
//! away is noticed: hyper drops the body when a write fails or the peer closes, and a body
//! dropped before its last frame counts as an aborted stream. A script can also end with an
//! error, which makes hyper cut the connection without finishing the chunked encoding, or
//! stall: send nothing more, and never end.

use std::fmt;
use std::iter::Peekable;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::state::State;

/// The error a scripted body yields to cut its connection on purpose.
#[derive(Debug)]
pub(crate) struct DroppedOnPurpose;

impl fmt::Display for DroppedOnPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("mock upstream dropped the connection mid-body on purpose")
    }
}

impl std::error::Error for DroppedOnPurpose {}

/// One write of a scripted body, sent after waiting `delay`.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    pub delay: Duration,
    pub bytes: Bytes,
}

/// How a scripted body ends once its chunks are out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Finish the body normally.
    Clean,
    /// Fail the body so hyper drops the connection (no terminating chunk).
    Drop,
    /// Send nothing more and never end: the connection stays open until the client leaves.
    Stall,
}

pub(crate) type Chunks = Box<dyn Iterator<Item = Chunk> + Send>;

pub(crate) struct ScriptedBody {
    /// Produced lazily, so a multi-megabyte stream is never held in memory at once.
    chunks: Peekable<Chunks>,
    ending: Ending,
    /// When known, hyper frames the body with `content-length` instead of chunked encoding.
    declared_len: Option<u64>,
    timer: Option<Pin<Box<Sleep>>>,
    /// For `Ending::Drop`: whether hyper has had one chance to flush what was written.
    flush_chance_given: bool,
    /// Set once the last frame has been handed to hyper (or the planned error yielded).
    finished: bool,
    state: Arc<State>,
}

impl ScriptedBody {
    pub(crate) fn new(
        chunks: Chunks,
        ending: Ending,
        declared_len: Option<u64>,
        state: Arc<State>,
    ) -> ScriptedBody {
        ScriptedBody {
            chunks: chunks.peekable(),
            ending,
            declared_len,
            timer: None,
            flush_chance_given: false,
            finished: false,
            state,
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, DroppedOnPurpose>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        if let Some(delay) = self.chunks.peek().map(|chunk| chunk.delay) {
            if !delay.is_zero() {
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
                ready!(timer.as_mut().poll(cx));
                self.timer = None;
            }
            let Some(chunk) = self.chunks.next() else {
                return Poll::Ready(None);
            };
            // Marking the end here lets hyper write the last chunk and the terminator together,
            // and keeps an early-finished body from being counted as abandoned.
            if self.ending == Ending::Clean && self.chunks.peek().is_none() {
                self.finished = true;
            }
            return Poll::Ready(Some(Ok(chunk.bytes)));
        }
        match self.ending {
            Ending::Clean => {
                self.finished = true;
                Poll::Ready(None)
            }
            Ending::Drop if !self.flush_chance_given => {
                // hyper flushes its write buffer when the body is pending, but discards it when
                // the body fails; one pending round makes the partial body actually go out.
                self.flush_chance_given = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Ending::Drop => {
                self.finished = true;
                Poll::Ready(Some(Err(DroppedOnPurpose)))
            }
            // Nothing will wake this body: hyper drops it when the client closes the
            // connection, which counts as an abandoned stream.
            Ending::Stall => Poll::Pending,
        }
    }
}

impl Drop for ScriptedBody {
    fn drop(&mut self) {
        if !self.finished {
            self.state.note_aborted_stream();
        }
    }
}

impl fmt::Debug for ScriptedBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedBody")
            .field("ending", &self.ending)
            .field("declared_len", &self.declared_len)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// The body type of every mock response.
#[derive(Debug)]
pub(crate) enum ResponseBody {
    Full(Option<Bytes>),
    Scripted(ScriptedBody),
}

impl ResponseBody {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        let bytes = bytes.into();
        ResponseBody::Full((!bytes.is_empty()).then_some(bytes))
    }

    /// The bytes of a whole-buffer body; `None` for a scripted one.
    pub(crate) fn full_bytes(&self) -> Option<Bytes> {
        match self {
            ResponseBody::Full(bytes) => Some(bytes.clone().unwrap_or_default()),
            ResponseBody::Scripted(_) => None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = DroppedOnPurpose;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, DroppedOnPurpose>>> {
        match self.get_mut() {
            ResponseBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Scripted(body) => body
                .poll_next(cx)
                .map(|item| item.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(bytes) => bytes.is_none(),
            ResponseBody::Scripted(body) => body.finished,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ResponseBody::Scripted(body) => match body.declared_len {
                Some(len) => SizeHint::with_exact(len),
                None => SizeHint::default(),
            },
        }
    }
}
