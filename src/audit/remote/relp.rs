//! The client side of RELP, the Reliable Event Logging Protocol (librelp's `doc/relp.md`, as
//! rsyslog's imrelp speaks it): framing, a zero-copy parser of what the server sends, and the
//! window of transactions not yet answered. No I/O: the sink's thread reads and writes.
//!
//! A frame is `TXNR SP COMMAND SP DATALEN [SP DATA] LF` (no `SP DATA` when DATALEN is 0). The
//! client opens with `1 open` and its offers; the server answers `1 rsp` with `200 OK` and its
//! own offers. Each event is then one `syslog` command, answered by `TXNR rsp 6 200 OK` once the
//! server has taken the message; any other status is an error. Responses come in the order of
//! the commands. Transaction numbers go up by one per command from 1 in each session; 0 is for
//! hints, of which the server sends `0 serverclose 0` before it closes (rsyslog does on SIGTERM).
//!
//! What rsyslog 8.2302 with librelp 1.11 answered to our `open` (DATALEN 93; one frame, broken
//! here after each LF):
//!
//! ```text
//! 1 rsp 93 200 OK\n
//! relp_version=0\n
//! relp_software=librelp,1.11.0,http://librelp.adiscon.com\n
//! commands=syslog\n
//! ```
//!
//! and to `close`: `N rsp 0\n` (no status at all), then `0 serverclose 0\n`.

use std::collections::VecDeque;
use std::time::Instant;

/// The protocol version offered: librelp's `RELP_CURR_PROTOCOL_VERSION`, what rsyslog speaks
/// (the spec calls 0 experimental and 1 its own; librelp refuses a server that offers more).
pub const VERSION: u32 = 0;
/// Commands sent and not yet answered, at most: librelp's default window.
pub const WINDOW: usize = 128;
/// TXNR is at most 9 digits; after this one it wraps to 1 (0 is for hints).
pub const MAX_TXNR: u32 = 999_999_999;
/// TXNR and DATALEN are 1 to 9 digits.
const MAX_DIGITS: usize = 9;
/// COMMAND is 1 to 32 letters.
const MAX_COMMAND: usize = 32;
/// DATA of one event: RELP's 128 KiB, what a librelp server takes by default (larger frames make
/// it abort the session, or truncate with imrelp's default).
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;
/// DATA of a frame from the server: a status and its text, or the offers answering `open`.
pub const MAX_RESPONSE_BYTES: usize = 4096;
/// A whole frame from the server: the parser refuses anything longer before it is buffered.
pub const MAX_FRAME_BYTES: usize =
    MAX_DIGITS + 1 + MAX_COMMAND + 1 + MAX_DIGITS + 1 + MAX_RESPONSE_BYTES + 1;
/// What framing adds to an event at most: `TXNR SP syslog SP DATALEN SP` and the trailer.
pub const SYSLOG_OVERHEAD: usize = MAX_DIGITS + 1 + 6 + 1 + MAX_DIGITS + 1 + 1;
/// Error texts quoted in logs are cut to this (the spec's HUMANMSG is at most 80 characters).
const MAX_TEXT_CHARS: usize = 80;

/// A frame as received: borrowed from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub txnr: u32,
    pub command: &'a [u8],
    pub data: &'a [u8],
}

/// The DATA of an `rsp` frame: `CODE SP TEXT [LF BODY]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    pub code: u16,
    pub text: &'a [u8],
    pub body: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("TXNR is not 1 to 9 digits followed by a space")]
    Txnr,
    #[error("COMMAND is not 1 to 32 letters followed by a space")]
    Command,
    #[error("DATALEN is not 1 to 9 digits followed by a space, or 0 followed by LF")]
    DataLen,
    #[error("DATALEN {len} is above the limit of {max} bytes")]
    TooLong { len: usize, max: usize },
    #[error("no LF after DATALEN bytes of data")]
    Trailer,
    #[error("a response is not a 3-digit status, a space and a text")]
    Response,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelpError {
    #[error("malformed RELP frame: {0}")]
    Frame(#[from] FrameError),
    #[error("RELP response to transaction {got}, expected {expected}")]
    UnexpectedTxnr { got: u32, expected: u32 },
    #[error("RELP response to transaction {0}, none was pending")]
    Unsolicited(u32),
    #[error("unexpected RELP command {0:?}")]
    UnexpectedCommand(String),
    #[error("the receiver refused event {sequence}: {code} {text:?}")]
    Refused {
        sequence: u64,
        code: u16,
        text: String,
    },
    #[error("the receiver refused the RELP session: {code} {text:?}")]
    OpenRefused { code: u16, text: String },
    #[error("the receiver's RELP offers {0}")]
    Offers(&'static str),
}

/// What [`scan`] found.
enum Scan<'a> {
    /// The buffer ends within the field.
    Partial,
    /// The field (possibly empty) and the byte after it.
    Field(&'a [u8], u8),
    /// More than the maximum of accepted bytes.
    TooLong,
}

/// A field of bytes `ok` accepts at the start of `buf`, at most `max` of them.
fn scan(buf: &[u8], max: usize, ok: fn(&u8) -> bool) -> Scan<'_> {
    match buf.iter().take(max.saturating_add(1)).position(|b| !ok(b)) {
        Some(n) => match (buf.get(..n), buf.get(n)) {
            (Some(field), Some(&after)) => Scan::Field(field, after),
            _ => Scan::Partial,
        },
        None if buf.len() > max => Scan::TooLong,
        None => Scan::Partial,
    }
}

/// The value of 1 to 9 ASCII digits.
fn number(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > MAX_DIGITS || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0_u32, |n, d| {
        n.checked_mul(10)?
            .checked_add(u32::from(d.checked_sub(b'0')?))
    })
}

/// The frame at the start of `buf` and its length, `Ok(None)` if `buf` holds only part of it.
/// A DATALEN above [`MAX_RESPONSE_BYTES`] is an error as soon as it is read.
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    // `at` runs past each field and the space after it.
    let (txnr, mut at) = match scan(buf, MAX_DIGITS, u8::is_ascii_digit) {
        Scan::Partial => return Ok(None),
        Scan::Field(digits, b' ') => (
            number(digits).ok_or(FrameError::Txnr)?,
            digits.len().saturating_add(1),
        ),
        Scan::Field(..) | Scan::TooLong => return Err(FrameError::Txnr),
    };
    let rest = buf.get(at..).unwrap_or_default();
    let command = match scan(rest, MAX_COMMAND, u8::is_ascii_alphabetic) {
        Scan::Partial => return Ok(None),
        Scan::Field(command, b' ') if !command.is_empty() => command,
        Scan::Field(..) | Scan::TooLong => return Err(FrameError::Command),
    };
    at = at.saturating_add(command.len()).saturating_add(1);
    let rest = buf.get(at..).unwrap_or_default();
    let (len, after) = match scan(rest, MAX_DIGITS, u8::is_ascii_digit) {
        Scan::Partial => return Ok(None),
        Scan::Field(digits, after) => {
            let len = number(digits).ok_or(FrameError::DataLen)?;
            at = at.saturating_add(digits.len()).saturating_add(1);
            (
                usize::try_from(len).map_err(|_| FrameError::DataLen)?,
                after,
            )
        }
        Scan::TooLong => return Err(FrameError::DataLen),
    };
    match (len, after) {
        // No data: DATALEN is followed by the trailer at once.
        (0, b'\n') => {
            return Ok(Some((
                Frame {
                    txnr,
                    command,
                    data: &[],
                },
                at,
            )));
        }
        (1.., b' ') => {}
        _ => return Err(FrameError::DataLen),
    }
    if len > MAX_RESPONSE_BYTES {
        return Err(FrameError::TooLong {
            len,
            max: MAX_RESPONSE_BYTES,
        });
    }
    let end = at.saturating_add(len);
    match (buf.get(at..end), buf.get(end)) {
        (Some(data), Some(b'\n')) => Ok(Some((
            Frame {
                txnr,
                command,
                data,
            },
            end.saturating_add(1),
        ))),
        (Some(_), Some(_)) => Err(FrameError::Trailer),
        _ => Ok(None),
    }
}

/// The DATA of an `rsp`.
pub fn parse_response(data: &[u8]) -> Result<Response<'_>, FrameError> {
    let (code, rest) = data.split_at_checked(3).ok_or(FrameError::Response)?;
    let code = number(code)
        .and_then(|c| u16::try_from(c).ok())
        .ok_or(FrameError::Response)?;
    let rest = rest.strip_prefix(b" ").ok_or(FrameError::Response)?;
    let (text, body) = match rest.iter().position(|b| *b == b'\n') {
        Some(lf) => (
            rest.get(..lf).unwrap_or_default(),
            rest.get(lf.saturating_add(1)..).unwrap_or_default(),
        ),
        None => (rest, &[][..]),
    };
    Ok(Response { code, text, body })
}

/// Checks the offers that answer our `open`: a RELP version we speak and the `syslog` command.
pub fn check_offers(body: &[u8]) -> Result<(), RelpError> {
    let mut version = None;
    let mut syslog = false;
    for line in body.split(|b| *b == b'\n') {
        let mut parts = line.splitn(2, |b| *b == b'=');
        let name = parts.next().unwrap_or_default();
        let values = parts.next().unwrap_or_default();
        match name {
            b"relp_version" => version = Some(number(values)),
            b"commands" => syslog |= values.split(|b| *b == b',').any(|v| v == b"syslog"),
            _ => {}
        }
    }
    match version {
        None => return Err(RelpError::Offers("have no relp_version")),
        Some(None) => return Err(RelpError::Offers("have a relp_version that is no number")),
        Some(Some(v)) if v > VERSION => {
            return Err(RelpError::Offers("have a relp_version newer than ours"));
        }
        Some(Some(_)) => {}
    }
    if !syslog {
        return Err(RelpError::Offers("do not include the syslog command"));
    }
    Ok(())
}

/// `TXNR SP COMMAND SP DATALEN [SP DATA] LF`, appended to `out`.
pub fn frame(out: &mut Vec<u8>, txnr: u32, command: &str, data: &[u8]) {
    out.extend_from_slice(format!("{txnr} {command} {}", data.len()).as_bytes());
    if !data.is_empty() {
        out.push(b' ');
        out.extend_from_slice(data);
    }
    out.push(b'\n');
}

/// The transaction number after `txnr`: 1 after [`MAX_TXNR`].
pub fn next_txnr(txnr: u32) -> u32 {
    if txnr >= MAX_TXNR {
        1
    } else {
        txnr.saturating_add(1)
    }
}

/// What we offer: protocol version, who we are, and that we send `syslog` commands.
fn offers() -> String {
    let repository = env!("CARGO_PKG_REPOSITORY");
    let url = if repository.is_empty() {
        String::new()
    } else {
        format!(",{repository}")
    };
    format!(
        "relp_version={VERSION}\nrelp_software=zonegate,{}{url}\ncommands=syslog",
        env!("CARGO_PKG_VERSION")
    )
}

fn quote(text: &[u8]) -> String {
    String::from_utf8_lossy(text)
        .chars()
        .take(MAX_TEXT_CHARS)
        .collect()
}

/// A `syslog` command sent and not yet answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    pub txnr: u32,
    /// The event's queue position in the sink's backlog.
    pub position: u64,
    pub sequence: u64,
    pub sent: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `open` sent with this TXNR, waiting for its answer.
    Opening(u32),
    Open,
    /// `close` sent with this TXNR.
    Closing(u32),
}

/// What [`Session::receive`] learned.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The queue position after the last event acknowledged: everything before it is delivered.
    pub delivered_upto: Option<u64>,
    pub acknowledged: usize,
    /// The server accepted our `open`.
    pub opened: bool,
    /// The server answered our `close`.
    pub closed: bool,
    /// The server said it closes the session.
    pub server_close: bool,
}

/// One RELP session: transaction numbers, the commands awaiting an answer, the receive buffer.
#[derive(Debug)]
pub struct Session {
    next: u32,
    state: State,
    pending: VecDeque<Pending>,
    /// Received bytes not yet parsed: at most one partial frame.
    rx: Vec<u8>,
}

impl Session {
    /// A session whose `open` is in `out`.
    pub fn open(out: &mut Vec<u8>) -> Session {
        Session::open_at(out, 1)
    }

    fn open_at(out: &mut Vec<u8>, first: u32) -> Session {
        let mut session = Session {
            next: first,
            state: State::Open,
            pending: VecDeque::new(),
            rx: Vec::new(),
        };
        let txnr = session.take_txnr();
        frame(out, txnr, "open", offers().as_bytes());
        session.state = State::Opening(txnr);
        session
    }

    fn take_txnr(&mut self) -> u32 {
        let txnr = self.next;
        self.next = next_txnr(txnr);
        txnr
    }

    /// How many `syslog` commands may be sent now: the window's room, none before the open is
    /// answered or after `close`. The last TXNR before the wrap is kept for `close`: librelp's
    /// server cannot go past it (it expects 1000000000, which does not fit in 9 digits), so a
    /// session that used up its numbers is closed and a new one opened rather than wrapped.
    pub fn room(&self) -> usize {
        if self.state != State::Open {
            return 0;
        }
        let numbers = usize::try_from(MAX_TXNR.saturating_sub(self.next)).unwrap_or(usize::MAX);
        WINDOW.saturating_sub(self.pending.len()).min(numbers)
    }

    /// All transaction numbers used: close this session once everything is answered.
    pub fn exhausted(&self) -> bool {
        self.state == State::Open && self.next >= MAX_TXNR
    }

    pub fn pending(&self) -> &VecDeque<Pending> {
        &self.pending
    }

    /// Appends a `syslog` command for one event to `out`; false (and nothing appended) when
    /// [`Session::room`] is 0.
    pub fn syslog(
        &mut self,
        out: &mut Vec<u8>,
        message: &[u8],
        position: u64,
        sequence: u64,
        now: Instant,
    ) -> bool {
        if self.room() == 0 {
            return false;
        }
        let txnr = self.take_txnr();
        frame(out, txnr, "syslog", message);
        self.pending.push_back(Pending {
            txnr,
            position,
            sequence,
            sent: now,
        });
        true
    }

    /// Appends `close` to `out`; nothing may be sent after it.
    pub fn close(&mut self, out: &mut Vec<u8>) {
        let txnr = self.take_txnr();
        frame(out, txnr, "close", b"");
        self.state = State::Closing(txnr);
    }

    /// Takes bytes from the server and handles every whole frame in them, adding what they did
    /// to `progress`. An error breaks the session: what is still pending was not delivered, but
    /// `progress` keeps what the frames before the bad one acknowledged (those events must not
    /// be sent again).
    pub fn receive(&mut self, bytes: &[u8], progress: &mut Progress) -> Result<(), RelpError> {
        let mut rx = std::mem::take(&mut self.rx);
        rx.extend_from_slice(bytes);
        let mut used = 0_usize;
        loop {
            match parse_frame(rx.get(used..).unwrap_or_default())? {
                None => break,
                Some((frame, len)) => {
                    used = used.saturating_add(len);
                    self.handle(frame, progress)?;
                }
            }
        }
        rx.drain(..used.min(rx.len()));
        // Unreachable as the parser refuses long frames early; a bound all the same.
        if rx.len() > MAX_FRAME_BYTES {
            return Err(RelpError::Frame(FrameError::TooLong {
                len: rx.len(),
                max: MAX_FRAME_BYTES,
            }));
        }
        self.rx = rx;
        Ok(())
    }

    fn handle(&mut self, frame: Frame<'_>, progress: &mut Progress) -> Result<(), RelpError> {
        match (frame.txnr, frame.command) {
            (txnr, b"rsp") => self.response(txnr, frame.data, progress),
            (0, b"serverclose") => {
                progress.server_close = true;
                Ok(())
            }
            // Another hint: none is defined, and a hint needs no answer.
            (0, _) => Ok(()),
            (_, command) => Err(RelpError::UnexpectedCommand(quote(command))),
        }
    }

    fn response(
        &mut self,
        txnr: u32,
        data: &[u8],
        progress: &mut Progress,
    ) -> Result<(), RelpError> {
        if let State::Opening(open) = self.state {
            if txnr != open {
                return Err(RelpError::UnexpectedTxnr {
                    got: txnr,
                    expected: open,
                });
            }
            let rsp = parse_response(data)?;
            if rsp.code != 200 {
                return Err(RelpError::OpenRefused {
                    code: rsp.code,
                    text: quote(rsp.text),
                });
            }
            check_offers(rsp.body)?;
            self.state = State::Open;
            progress.opened = true;
            return Ok(());
        }
        // Answers come in command order: this one is for the oldest pending command, or for
        // `close` once none is pending.
        if let Some(oldest) = self.pending.front().copied() {
            if txnr != oldest.txnr {
                return Err(RelpError::UnexpectedTxnr {
                    got: txnr,
                    expected: oldest.txnr,
                });
            }
            let rsp = parse_response(data)?;
            if rsp.code != 200 {
                return Err(RelpError::Refused {
                    sequence: oldest.sequence,
                    code: rsp.code,
                    text: quote(rsp.text),
                });
            }
            self.pending.pop_front();
            progress.delivered_upto = Some(oldest.position.saturating_add(1));
            progress.acknowledged = progress.acknowledged.saturating_add(1);
            return Ok(());
        }
        match self.state {
            // rsyslog answers `close` with no DATA at all: any answer will do.
            State::Closing(close) if txnr == close => {
                progress.closed = true;
                Ok(())
            }
            State::Closing(close) => Err(RelpError::UnexpectedTxnr {
                got: txnr,
                expected: close,
            }),
            _ => Err(RelpError::Unsolicited(txnr)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )]

    use super::*;

    impl Session {
        /// [`Session::receive`] with a fresh [`Progress`].
        fn take(&mut self, bytes: &[u8]) -> Result<Progress, RelpError> {
            let mut progress = Progress::default();
            self.receive(bytes, &mut progress).map(|()| progress)
        }
    }

    fn parsed(buf: &[u8]) -> (Frame<'_>, usize) {
        parse_frame(buf).unwrap().unwrap()
    }

    #[test]
    fn frames_as_rsyslog_sends_them() {
        // TXNR "2", SP, COMMAND "rsp", SP, DATALEN "6", SP, DATA "200 OK", TRAILER LF; then the
        // start of the next frame, which stays in the buffer.
        let buf = b"2 rsp 6 200 OK\n3 rs";
        let (frame, len) = parsed(buf);
        assert_eq!(
            frame,
            Frame {
                txnr: 2,
                command: b"rsp",
                data: b"200 OK"
            }
        );
        assert_eq!(len, 15);
        assert_eq!(parse_frame(&buf[len..]), Ok(None));
        let rsp = parse_response(frame.data).unwrap();
        assert_eq!((rsp.code, rsp.text, rsp.body), (200, &b"OK"[..], &b""[..]));

        // The hint before rsyslog closes: TXNR 0, COMMAND "serverclose", DATALEN 0 and, as there
        // is no data, LF right after it.
        let (frame, len) = parsed(b"0 serverclose 0\n");
        assert_eq!(
            (frame.txnr, frame.command, frame.data),
            (0, &b"serverclose"[..], &b""[..])
        );
        assert_eq!(len, 16);

        // The answer to `close`: DATALEN 0, no status at all.
        let (frame, _) = parsed(b"4 rsp 0\n");
        assert_eq!(
            (frame.txnr, frame.command, frame.data),
            (4, &b"rsp"[..], &b""[..])
        );

        // The answer to `open` (rsyslog 8.2302, librelp 1.11): DATALEN 93, DATA = status line
        // "200 OK" LF, then the offers one per line, the last without LF (the LF after it is the
        // trailer).
        let open = b"1 rsp 93 200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0,\
http://librelp.adiscon.com\ncommands=syslog\n";
        let (frame, len) = parsed(open);
        assert_eq!(len, open.len());
        let rsp = parse_response(frame.data).unwrap();
        assert_eq!((rsp.code, rsp.text), (200, &b"OK"[..]));
        assert!(rsp.body.starts_with(b"relp_version=0\n"));
        assert!(rsp.body.ends_with(b"\ncommands=syslog"));
        assert_eq!(check_offers(rsp.body), Ok(()));
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let whole = b"12 rsp 6 200 OK\n";
        for cut in 0..whole.len() {
            assert_eq!(parse_frame(&whole[..cut]), Ok(None), "{cut} bytes");
        }
        assert_eq!(parsed(whole).1, whole.len());
    }

    #[test]
    fn malformed_frames_are_refused() {
        for (buf, err) in [
            // TXNR: not a digit.
            (&b"x rsp 6 200 OK\n"[..], FrameError::Txnr),
            // TXNR: empty (SP first).
            (b" rsp 6 200 OK\n", FrameError::Txnr),
            // TXNR: 10 digits, one more than RELP allows (refused before the SP arrives).
            (b"1234567890", FrameError::Txnr),
            // TXNR: a letter within the digits.
            (b"1a rsp 6 200 OK\n", FrameError::Txnr),
            // COMMAND: empty (two spaces).
            (b"1  6 200 OK\n", FrameError::Command),
            // COMMAND: a digit in it.
            (b"1 rs2 6 200 OK\n", FrameError::Command),
            // COMMAND: 33 letters.
            (
                b"1 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 0\n",
                FrameError::Command,
            ),
            // DATALEN: empty, LF right after COMMAND's SP.
            (b"1 rsp \n", FrameError::DataLen),
            // DATALEN: not a digit.
            (b"1 rsp x 200 OK\n", FrameError::DataLen),
            // DATALEN: 10 digits.
            (b"1 rsp 1234567890", FrameError::DataLen),
            // DATALEN 0 followed by SP instead of the trailer.
            (b"1 rsp 0 \n", FrameError::DataLen),
            // DATALEN 6 followed by LF: data announced, none given.
            (b"1 rsp 6\n200 OK\n", FrameError::DataLen),
            // Length mismatch: DATALEN 4 for "200 OK", so "OK" is where the trailer should be.
            (b"1 rsp 4 200 OK\n", FrameError::Trailer),
            // Length mismatch: DATALEN 8 for "200 OK" LF, the next frame's "2" is taken as data
            // and its SP stands where the trailer should be.
            (b"1 rsp 8 200 OK\n2 rsp 6 200 OK\n", FrameError::Trailer),
            // Missing trailer: the data is followed by the next frame's TXNR.
            (b"1 rsp 6 200 OK2 rsp 6 200 OK\n", FrameError::Trailer),
            // Oversize: DATALEN above the response limit, refused before the data is buffered.
            (
                b"1 rsp 4097 ",
                FrameError::TooLong {
                    len: 4097,
                    max: MAX_RESPONSE_BYTES,
                },
            ),
            (
                b"1 rsp 999999999 ",
                FrameError::TooLong {
                    len: 999_999_999,
                    max: MAX_RESPONSE_BYTES,
                },
            ),
        ] {
            assert_eq!(
                parse_frame(buf),
                Err(err),
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
        // The largest response DATA is fine.
        let mut big = b"1 rsp 4096 200 ".to_vec();
        big.resize(big.len() + MAX_RESPONSE_BYTES - 4, b'x');
        big.push(b'\n');
        assert_eq!(parsed(&big).0.data.len(), MAX_RESPONSE_BYTES);
        assert!(big.len() <= MAX_FRAME_BYTES);
    }

    #[test]
    fn responses() {
        // Status 500, SP, a text.
        let rsp = parse_response(b"500 command disabled").unwrap();
        assert_eq!((rsp.code, rsp.text), (500, &b"command disabled"[..]));
        for bad in [
            // No status at all (what rsyslog answers to `close`).
            &b""[..],
            // Status without the SP after it.
            b"200",
            b"200OK",
            // Two digits.
            b"20 OK",
            // Not digits.
            b"2x0 OK",
        ] {
            assert_eq!(
                parse_response(bad),
                Err(FrameError::Response),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn offers_need_our_version_and_syslog() {
        assert_eq!(check_offers(b"relp_version=0\ncommands=syslog"), Ok(()));
        // Order and other offers do not matter; `syslog` among other commands.
        assert_eq!(
            check_offers(b"commands=eventlog,syslog\nfoo\nrelp_version=0\n"),
            Ok(())
        );
        for bad in [
            &b"commands=syslog"[..],
            b"relp_version=\ncommands=syslog",
            b"relp_version=x\ncommands=syslog",
            b"relp_version=0x\ncommands=syslog",
            b"relp_version=1\ncommands=syslog",
            b"relp_version=0",
            b"relp_version=0\ncommands=sysl",
            b"relp_version=0\ncommands=",
        ] {
            assert!(
                matches!(check_offers(bad), Err(RelpError::Offers(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn what_we_send() {
        let mut out = Vec::new();
        let mut s = Session::open(&mut out);
        let offers = format!(
            "relp_version=0\nrelp_software=zonegate,{}\ncommands=syslog",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(
            out,
            format!("1 open {} {offers}\n", offers.len()).as_bytes()
        );
        s.take(b"1 rsp 37 200 OK\nrelp_version=0\ncommands=syslog\n")
            .unwrap();
        out.clear();
        let now = Instant::now();
        assert!(s.syslog(&mut out, b"<110>1 - - x", 7, 1, now));
        assert!(s.syslog(&mut out, b"", 8, 2, now));
        s.close(&mut out);
        assert_eq!(out, b"2 syslog 12 <110>1 - - x\n3 syslog 0\n4 close 0\n");
    }

    fn opened() -> Session {
        let mut s = Session::open(&mut Vec::new());
        let p = s
            .take(b"1 rsp 37 200 OK\nrelp_version=0\ncommands=syslog\n")
            .unwrap();
        assert!(p.opened);
        s
    }

    #[test]
    fn acknowledgements_deliver_in_order() {
        let mut s = opened();
        let now = Instant::now();
        let mut out = Vec::new();
        for (i, seq) in (10..13).enumerate() {
            assert!(s.syslog(&mut out, b"m", 100 + i as u64, seq, now));
        }
        // Two answers, split across reads anywhere: the first delivers the event at position 100.
        assert_eq!(
            s.take(b"2 rsp 6 200 OK\n3 rsp 6 2").unwrap().delivered_upto,
            Some(101)
        );
        let p = s.take(b"00 OK\n").unwrap();
        assert_eq!((p.delivered_upto, p.acknowledged), (Some(102), 1));
        assert_eq!(s.pending().len(), 1);
        // An answer to another transaction than the oldest pending one breaks the session.
        assert_eq!(
            s.take(b"5 rsp 6 200 OK\n"),
            Err(RelpError::UnexpectedTxnr {
                got: 5,
                expected: 4
            })
        );
    }

    #[test]
    fn refusals_and_surprises_break_the_session() {
        let now = Instant::now();
        let mut s = opened();
        assert!(s.syslog(&mut Vec::new(), b"m", 0, 42, now));
        assert_eq!(
            s.take(b"2 rsp 20 500 command disabled\n"),
            Err(RelpError::Refused {
                sequence: 42,
                code: 500,
                text: "command disabled".into()
            })
        );
        // An acknowledgement before the refusal, in the same read, still counts.
        let mut s = opened();
        assert!(s.syslog(&mut Vec::new(), b"m", 0, 41, now));
        assert!(s.syslog(&mut Vec::new(), b"m", 1, 42, now));
        let mut progress = Progress::default();
        assert!(matches!(
            s.receive(
                b"2 rsp 6 200 OK\n3 rsp 20 500 command disabled\n",
                &mut progress
            ),
            Err(RelpError::Refused { sequence: 42, .. })
        ));
        assert_eq!(progress.delivered_upto, Some(1));
        let mut s = opened();
        assert!(s.syslog(&mut Vec::new(), b"m", 0, 42, now));
        // A 200 without SP and text is malformed.
        assert_eq!(
            s.take(b"2 rsp 3 200\n"),
            Err(RelpError::Frame(FrameError::Response))
        );
        // An answer when nothing is pending.
        let mut s = opened();
        assert_eq!(s.take(b"2 rsp 6 200 OK\n"), Err(RelpError::Unsolicited(2)));
        // A command other than rsp from the server.
        let mut s = opened();
        assert_eq!(
            s.take(b"2 syslog 2 hi\n"),
            Err(RelpError::UnexpectedCommand("syslog".into()))
        );
        // An unknown hint is ignored; serverclose is reported.
        let mut s = opened();
        let p = s.take(b"0 nudge 0\n0 serverclose 0\n").unwrap();
        assert!(p.server_close);
    }

    #[test]
    fn open_refusals() {
        let mut s = Session::open(&mut Vec::new());
        assert_eq!(s.room(), 0, "nothing before the open is answered");
        assert_eq!(
            s.take(b"1 rsp 26 500 error 10015 on connect\n"),
            Err(RelpError::OpenRefused {
                code: 500,
                text: "error 10015 on connect".into()
            })
        );
        let mut s = Session::open(&mut Vec::new());
        assert!(matches!(
            s.take(b"1 rsp 21 200 OK\nrelp_version=0\n"),
            Err(RelpError::Offers(_))
        ));
        let mut s = Session::open(&mut Vec::new());
        assert_eq!(
            s.take(b"2 rsp 6 200 OK\n"),
            Err(RelpError::UnexpectedTxnr {
                got: 2,
                expected: 1
            })
        );
    }

    #[test]
    fn window_and_close() {
        let mut s = opened();
        let now = Instant::now();
        let mut out = Vec::new();
        assert_eq!(s.room(), WINDOW);
        for i in 0..WINDOW as u64 {
            assert!(s.syslog(&mut out, b"m", i, i + 1, now));
        }
        assert_eq!(s.room(), 0);
        assert!(!s.syslog(&mut out, b"m", 999, 999, now));
        let mut answers = Vec::new();
        for txnr in 2..2 + WINDOW as u32 {
            frame(&mut answers, txnr, "rsp", b"200 OK");
        }
        let p = s.take(&answers).unwrap();
        assert_eq!(
            (p.delivered_upto, p.acknowledged),
            (Some(WINDOW as u64), WINDOW)
        );
        assert_eq!(s.room(), WINDOW);
        // `close` (TXNR 130), answered as rsyslog does: DATALEN 0, then serverclose.
        s.close(&mut out);
        assert_eq!(s.room(), 0);
        let p = s.take(b"130 rsp 0\n0 serverclose 0\n").unwrap();
        assert!(p.closed && p.server_close);
    }

    #[test]
    fn transaction_numbers_end_with_the_session() {
        assert_eq!(next_txnr(1), 2);
        assert_eq!(next_txnr(MAX_TXNR - 1), MAX_TXNR);
        assert_eq!(next_txnr(MAX_TXNR), 1);
        // A session 3 numbers before the end: open takes one, one syslog, and the last is kept
        // for close.
        let mut out = Vec::new();
        let mut s = Session::open_at(&mut out, MAX_TXNR - 2);
        let mut ok = Vec::new();
        frame(
            &mut ok,
            MAX_TXNR - 2,
            "rsp",
            b"200 OK\nrelp_version=0\ncommands=syslog",
        );
        assert!(s.take(&ok).unwrap().opened);
        assert_eq!(s.room(), 1);
        assert!(!s.exhausted());
        out.clear();
        assert!(s.syslog(&mut out, b"m", 0, 1, Instant::now()));
        assert_eq!(out, b"999999998 syslog 1 m\n");
        assert_eq!(s.room(), 0);
        assert!(s.exhausted());
        out.clear();
        s.close(&mut out);
        assert_eq!(out, b"999999999 close 0\n");
    }

    #[test]
    fn garbage_never_grows_the_buffer() {
        let mut s = opened();
        // A frame whose DATALEN is too large is refused as soon as its header is in.
        assert!(s.take(b"2 rsp 5000 ").is_err());
        // Endless digits: refused at the tenth.
        let mut s = opened();
        assert!(s.take(&[b'7'; 64]).is_err());
    }
}
