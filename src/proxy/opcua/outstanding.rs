//! What the server owes the client on one OPC UA connection, and by when.
//!
//! The proxy forwards a client's Hello, OpenSecureChannel and service requests; a server that
//! answers none of them would leave the client waiting for its own timeout, or for the proxy's
//! idle timeout, which is minutes. So each one gets a deadline (`limits.response_timeout`) and
//! the session answers for the server once it passes. Publish requests get none: a server
//! holds them, by design, until it has notifications or a keep-alive is due (publishing
//! interval x max keep-alive count, often tens of seconds). A silent server is still caught by
//! the deadlines of other requests, or by the idle timeout.
//!
//! Once the proxy has answered a request with a ServiceFault, the server's late response to it
//! must not reach the client: it would be a second response to one request, which clients
//! treat as a protocol error (asyncua closes the connection). Those request ids are kept until
//! the late response has passed, at most [`MAX_ABANDONED`] of them.

use tokio::time::Instant;

use crate::proto::opcua::{ChunkType, Service};

/// Requests answered with Bad_Timeout whose late responses are still to be dropped, at most, per
/// connection. A server that has left this many unanswered is not coming back on this
/// connection; the session closes it rather than forget one and pass its response on.
pub const MAX_ABANDONED: usize = 256;

/// What the client awaits before a secure channel carries requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// The Acknowledge to the client's Hello.
    Acknowledge,
    /// The response to an OpenSecureChannel: its request id when the channel is plaintext
    /// (secured OPN chunks are encrypted, sequence header included).
    Open { request_id: Option<u32> },
}

/// A service request forwarded to the server and not answered yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// From the sequence header; the response carries it back.
    pub request_id: u32,
    /// From the RequestHeader; a ServiceFault in the server's place must carry it.
    pub request_handle: u32,
    pub service: Service,
    /// Of the request's chunk: a ServiceFault goes out on the same channel and token.
    pub secure_channel_id: u32,
    pub token_id: u32,
    pub deadline: Instant,
}

/// What to do with a chunk of the server's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// Pass it to the client.
    Forward,
    /// A late response to a request the proxy already answered: drop it.
    Drop,
}

/// What passed its deadline.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expired {
    pub handshake: Option<Handshake>,
    /// Oldest deadline first.
    pub requests: Vec<Pending>,
}

/// The deadlines of one connection.
#[derive(Debug, Default)]
pub struct Outstanding {
    handshake: Option<(Handshake, Instant)>,
    /// In the order they were forwarded. At most `limits.in_flight_per_connection`: the
    /// session stops reading the client at that many.
    requests: Vec<Pending>,
    /// Request ids answered with Bad_Timeout whose late response has not come.
    abandoned: Vec<u32>,
}

impl Outstanding {
    /// The server owes `what` by `deadline`. A client that sends a second OpenSecureChannel
    /// before the first is answered does not push the first one's deadline back.
    pub fn await_handshake(&mut self, what: Handshake, deadline: Instant) {
        if self.handshake.is_none() {
            self.handshake = Some((what, deadline));
        }
    }

    /// The server is connected and has the client's Hello: it owes the Acknowledge by
    /// `deadline`. An OpenSecureChannel the client sent along with its Hello was taken before
    /// the server was connected; its response, which follows the Acknowledge, is owed by
    /// `deadline` instead.
    pub fn connected(&mut self, deadline: Instant) {
        let what = self
            .handshake
            .map_or(Handshake::Acknowledge, |(what, _)| what);
        self.handshake = Some((what, deadline));
    }

    /// The server sent an Acknowledge.
    pub fn acknowledged(&mut self) {
        if matches!(self.handshake, Some((Handshake::Acknowledge, _))) {
            self.handshake = None;
        }
    }

    /// The server sent an OpenSecureChannel response.
    pub fn opened(&mut self) {
        if matches!(self.handshake, Some((Handshake::Open { .. }, _))) {
            self.handshake = None;
        }
    }

    /// A request went to the server.
    pub fn sent(&mut self, request: Pending) {
        self.requests.push(request);
    }

    /// Requests forwarded and not answered (not counting those answered by the proxy).
    pub fn in_flight(&self) -> usize {
        self.requests.len()
    }

    /// The earliest deadline, if the server owes anything.
    pub fn next_due(&self) -> Option<Instant> {
        let requests = self.requests.iter().map(|p| p.deadline).min();
        match (self.handshake.map(|(_, due)| due), requests) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A chunk of the server's message for `request_id`. Its first chunk answers the request:
    /// a server that has begun to answer is not silent. Every chunk of a late response to a
    /// request the proxy answered is dropped; the request id is forgotten at its final (or
    /// abort) chunk. Anything else (a Publish response) passes.
    pub fn response(&mut self, request_id: u32, chunk_type: ChunkType) -> Response {
        if let Some(i) = self
            .requests
            .iter()
            .position(|p| p.request_id == request_id)
        {
            self.requests.remove(i);
            return Response::Forward;
        }
        match self.abandoned.iter().position(|&id| id == request_id) {
            Some(i) => {
                if chunk_type != ChunkType::Intermediate {
                    self.abandoned.swap_remove(i);
                }
                Response::Drop
            }
            None => Response::Forward,
        }
    }

    /// Takes what is due by `now`; the session answers for the server.
    pub fn expire(&mut self, now: Instant) -> Expired {
        let handshake = match self.handshake {
            Some((what, due)) if due <= now => {
                self.handshake = None;
                Some(what)
            }
            _ => None,
        };
        let mut requests = Vec::new();
        self.requests.retain(|p| {
            let due = p.deadline <= now;
            if due {
                requests.push(*p);
            }
            !due
        });
        // A reload may have shortened response_timeout: forwarding order is not deadline order.
        requests.sort_by_key(|p| p.deadline);
        Expired {
            handshake,
            requests,
        }
    }

    /// The proxy answered `request_id` for the server: its late response is to be dropped.
    /// False when [`MAX_ABANDONED`] are already waiting (then the connection must close).
    pub fn abandon(&mut self, request_id: u32) -> bool {
        if self.abandoned.len() >= MAX_ABANDONED {
            return false;
        }
        self.abandoned.push(request_id);
        true
    }
}

/// Whether the server must answer `service` within `limits.response_timeout`. Not Publish: a
/// server holds Publish requests until it has notifications to send or a keep-alive is due
/// (Part 4 5.13.5). Republish is answered at once, from the retransmission queue or with
/// Bad_MessageNotAvailable (5.13.6), so it has a deadline like every other request.
pub fn has_deadline(service: Service) -> bool {
    service != Service::Publish
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn pending(request_id: u32, deadline: Instant) -> Pending {
        Pending {
            request_id,
            request_handle: request_id + 100,
            service: Service::Read,
            secure_channel_id: 7,
            token_id: 1,
            deadline,
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn the_hello_and_the_open_are_owed_until_answered() {
        let t = Instant::now();
        let mut o = Outstanding::default();
        assert_eq!(o.next_due(), None);
        o.await_handshake(Handshake::Acknowledge, t + secs(1));
        assert_eq!(o.next_due(), Some(t + secs(1)));
        // An OPN response does not answer a Hello.
        o.opened();
        assert_eq!(o.next_due(), Some(t + secs(1)));
        assert_eq!(o.expire(t), Expired::default(), "not due yet");
        o.acknowledged();
        assert_eq!(o.next_due(), None);

        let open = Handshake::Open {
            request_id: Some(1),
        };
        o.await_handshake(open, t + secs(2));
        // A second OPN before the first's answer keeps the first deadline.
        o.await_handshake(Handshake::Open { request_id: None }, t + secs(9));
        assert_eq!(o.next_due(), Some(t + secs(2)));
        o.acknowledged();
        assert_eq!(o.next_due(), Some(t + secs(2)), "an ACK answers no OPN");
        let expired = o.expire(t + secs(2));
        assert_eq!(expired.handshake, Some(open));
        assert!(expired.requests.is_empty());
        assert_eq!(o.next_due(), None, "taken once");
        assert_eq!(o.expire(t + secs(3)), Expired::default());
    }

    #[test]
    fn an_open_sent_with_the_hello_is_owed_from_the_connection_on() {
        let t = Instant::now();
        let mut o = Outstanding::default();
        o.connected(t + secs(5));
        assert_eq!(o.next_due(), Some(t + secs(5)));
        o.acknowledged();
        assert_eq!(o.next_due(), None);

        // The OPN came in the Hello's read, before the server was connected.
        let mut o = Outstanding::default();
        let open = Handshake::Open {
            request_id: Some(1),
        };
        o.await_handshake(open, t + secs(1));
        o.connected(t + secs(4));
        assert_eq!(o.next_due(), Some(t + secs(4)));
        o.acknowledged();
        assert_eq!(o.next_due(), Some(t + secs(4)), "the OPN is still owed");
        assert_eq!(o.expire(t + secs(4)).handshake, Some(open));
    }

    #[test]
    fn requests_answered_in_time_leave_no_deadline() {
        let t = Instant::now();
        let mut o = Outstanding::default();
        o.sent(pending(5, t + secs(3)));
        o.sent(pending(6, t + secs(1)));
        o.sent(pending(7, t + secs(2)));
        assert_eq!(o.in_flight(), 3);
        assert_eq!(o.next_due(), Some(t + secs(1)));
        assert_eq!(o.response(6, ChunkType::Final), Response::Forward);
        assert_eq!(o.in_flight(), 2);
        assert_eq!(o.next_due(), Some(t + secs(2)));
        // The first chunk of a long response answers its request; the rest passes too.
        assert_eq!(o.response(7, ChunkType::Intermediate), Response::Forward);
        assert_eq!(o.response(7, ChunkType::Intermediate), Response::Forward);
        assert_eq!(o.response(7, ChunkType::Final), Response::Forward);
        assert_eq!(o.next_due(), Some(t + secs(3)));
        // A response to what was never timed (a Publish) passes and changes nothing.
        assert_eq!(o.response(99, ChunkType::Final), Response::Forward);
        assert_eq!(o.in_flight(), 1);
        assert_eq!(o.expire(t + secs(2)), Expired::default());
    }

    #[test]
    fn a_late_response_to_an_abandoned_request_is_dropped_whole_and_only_once() {
        let t = Instant::now();
        let mut o = Outstanding::default();
        o.sent(pending(8, t + secs(2)));
        o.sent(pending(5, t + secs(1)));
        o.sent(pending(9, t + secs(4)));
        let expired = o.expire(t + secs(2));
        assert_eq!(expired.handshake, None);
        // Both due, oldest deadline first; 9 is still owed.
        assert_eq!(
            expired.requests,
            vec![pending(5, t + secs(1)), pending(8, t + secs(2))]
        );
        assert_eq!(o.in_flight(), 1);
        assert_eq!(o.next_due(), Some(t + secs(4)));
        assert!(o.abandon(5));
        assert!(o.abandon(8));
        // 5's late response in three chunks: all dropped, then 5 is forgotten.
        assert_eq!(o.response(5, ChunkType::Intermediate), Response::Drop);
        assert_eq!(o.response(5, ChunkType::Intermediate), Response::Drop);
        assert_eq!(o.response(5, ChunkType::Final), Response::Drop);
        assert_eq!(o.response(5, ChunkType::Final), Response::Forward);
        // An aborted late response ends as well.
        assert_eq!(o.response(8, ChunkType::Abort), Response::Drop);
        assert_eq!(o.response(8, ChunkType::Final), Response::Forward);
        // 9, answered in time, is unaffected.
        assert_eq!(o.response(9, ChunkType::Final), Response::Forward);
        assert_eq!(o.in_flight(), 0);
        assert_eq!(o.next_due(), None);
    }

    #[test]
    fn abandoned_requests_are_bounded() {
        let mut o = Outstanding::default();
        for id in 0..u32::try_from(MAX_ABANDONED).unwrap() {
            assert!(o.abandon(id), "{id}");
        }
        assert!(!o.abandon(1_000_000), "one over the bound");
        // A late response that passes makes room again.
        assert_eq!(o.response(3, ChunkType::Final), Response::Drop);
        assert!(o.abandon(1_000_000));
    }

    #[test]
    fn publish_is_the_only_service_without_a_deadline() {
        assert!(!has_deadline(Service::Publish));
        for service in Service::ALL.into_iter().chain([Service::Unknown]) {
            if service != Service::Publish {
                assert!(has_deadline(service), "{service}");
            }
        }
        assert!(has_deadline(Service::Republish));
    }
}
