//! Model check of the session state machine with shuttle: each test runs a few threads over one
//! session many times, under shuttle's random and PCT schedulers, and checks an invariant that
//! holds only if every transition is one locked step. Run with
//! `cargo test -p bayeux-core --features model-check --lib model_check`.
//!
//! The router and the listeners are modelled by a set behind a shuttle mutex, updated from the
//! same callbacks the engine passes ([`Session::attach`], [`Session::detach`],
//! [`Session::close`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shuttle::sync::Mutex as ModelMutex;
use shuttle::thread;

use super::*;

const ITERATIONS: usize = 3_000;

fn timing() -> Timing {
    Timing {
        timeout_ms: 1_000,
        interval_ms: 0,
        max_interval_ms: 100,
        max_client_timeout_ms: 10_000,
    }
}

fn session(transport: TransportKind, now: Instant) -> Arc<Session> {
    Arc::new(Session::new(
        Owner::default(),
        transport,
        None,
        4,
        OverflowPolicy::DropOldest,
        &timing(),
        Some(now),
    ))
}

fn p(s: &str) -> ChannelPattern {
    ChannelPattern::parse(s).unwrap()
}

/// Runs `f` under both schedulers.
fn explore(f: impl Fn() + Send + Sync + 'static) {
    let f = Arc::new(f);
    let g = f.clone();
    shuttle::check_random(move || g(), ITERATIONS);
    shuttle::check_pct(move || f(), ITERATIONS, 3);
}

type Routed = Arc<ModelMutex<BTreeSet<String>>>;

fn route(routed: &Routed, p: &ChannelPattern) {
    assert!(
        routed.lock().unwrap().insert(p.to_string()),
        "routed twice: {p}"
    );
}

fn unroute(routed: &Routed, p: &ChannelPattern) {
    assert!(
        routed.lock().unwrap().remove(p.as_str()),
        "unrouted twice: {p}"
    );
}

/// Subscribes, unsubscribes and a disconnect race: afterwards the model router holds exactly
/// the session's subscriptions, and nothing at all once it is closed.
#[test]
fn subscriptions_racing_a_close_leave_nothing_routed() {
    explore(|| {
        let s = session(TransportKind::LongPolling, Instant::now());
        let routed: Routed = Arc::default();
        let subscriber = {
            let (s, routed) = (s.clone(), routed.clone());
            thread::spawn(move || {
                let _ = s.attach(&[p("/a"), p("/b/*")], 8, 1024, |x| route(&routed, x));
                let _ = s.attach(&[p("/c")], 8, 1024, |x| route(&routed, x));
            })
        };
        let unsubscriber = {
            let (s, routed) = (s.clone(), routed.clone());
            thread::spawn(move || {
                s.detach(&p("/a"), || unroute(&routed, &p("/a")));
            })
        };
        let closed = s.close(RemoveReason::Disconnected, None, |x| unroute(&routed, x));
        subscriber.join().unwrap();
        unsubscriber.join().unwrap();
        assert!(closed);
        assert!(
            routed.lock().unwrap().is_empty(),
            "a closed session is still routed"
        );
        assert!(s.subscriptions().is_empty());
        assert_eq!(
            s.attach(&[p("/d")], 8, 1024, |_| panic!("attached after close")),
            Err(AttachError::Closed)
        );
    });
}

/// A subscribe and an unsubscribe of the same channel race on a live session: the router
/// agrees with the session whichever wins.
#[test]
fn subscribe_and_unsubscribe_of_one_channel_keep_router_and_session_in_step() {
    explore(|| {
        let s = session(TransportKind::WebSocket, Instant::now());
        let routed: Routed = Arc::default();
        let a = {
            let (s, routed) = (s.clone(), routed.clone());
            thread::spawn(move || {
                let _ = s.attach(&[p("/a")], 8, 1024, |x| route(&routed, x));
            })
        };
        let b = {
            let (s, routed) = (s.clone(), routed.clone());
            thread::spawn(move || {
                s.detach(&p("/a"), || unroute(&routed, &p("/a")));
                let _ = s.attach(&[p("/a")], 8, 1024, |x| route(&routed, x));
            })
        };
        s.detach(&p("/a"), || unroute(&routed, &p("/a")));
        a.join().unwrap();
        b.join().unwrap();
        let subs: BTreeSet<String> = s.subscriptions().iter().map(|x| x.to_string()).collect();
        assert_eq!(*routed.lock().unwrap(), subs);
    });
}

/// The sweeper's expiry and a late connect race: exactly one wins. Either the connect sees the
/// session closed (and the client gets `402`), or the sweeper sees the renewed expiry and keeps
/// the session; never a successful connect whose session is then removed.
#[test]
fn expiry_and_a_late_connect_never_both_succeed() {
    explore(|| {
        let t0 = Instant::now();
        let s = session(TransportKind::LongPolling, t0);
        let late = t0 + Duration::from_millis(150);
        let connect = {
            let s = s.clone();
            thread::spawn(move || s.begin_connect(late, false, None, &timing()).is_ok())
        };
        let expired = s.close(RemoveReason::Expired, Some(late), |_| {});
        let connected = connect.join().unwrap();
        assert!(
            connected != expired,
            "connected {connected}, expired {expired}"
        );
        assert_eq!(s.is_closed(), expired);
    });
}

/// A held connect keeps its session from expiring for as long as it is held; when the hold
/// ends the expiry clock restarts from its end.
#[test]
fn a_held_connect_is_never_expired() {
    explore(|| {
        let t0 = Instant::now();
        let s = session(TransportKind::LongPolling, t0);
        assert!(matches!(
            s.begin_connect(t0, true, None, &timing()),
            Ok(ConnectStart::Answer { .. })
        ));
        let Ok(ConnectStart::Hold { generation }) = s.begin_connect(t0, true, None, &timing())
        else {
            panic!("the second connect is held");
        };
        let far = t0 + Duration::from_secs(3600);
        let sweeper = {
            let s = s.clone();
            thread::spawn(move || s.close(RemoveReason::Expired, Some(far), |_| {}))
        };
        let end = s.end_hold(generation, far, true, &timing());
        let expired = sweeper.join().unwrap();
        // The sweeper either ran while the connect was held (and kept the session), or after
        // it ended at `far` (the session then lives until `far + max_interval`).
        assert!(!expired);
        assert!(end.closed.is_none());
        assert!(!s.is_closed());
    });
}

/// Messages offered while a connect is answered are either in that answer or still queued:
/// none is lost, none is delivered twice.
#[test]
fn offers_racing_a_connect_answer_are_neither_lost_nor_doubled() {
    explore(|| {
        let t0 = Instant::now();
        let s = session(TransportKind::LongPolling, t0);
        let publisher = {
            let s = s.clone();
            thread::spawn(move || {
                for i in 0..3u8 {
                    assert_eq!(
                        s.offer(&Framed::from_object(&[i]), false, &mut 0),
                        Offer::Queued
                    );
                }
            })
        };
        let mut got: Vec<u8> = Vec::new();
        if let Ok(ConnectStart::Answer { messages, .. }) =
            s.begin_connect(t0, false, None, &timing())
        {
            got.extend(messages.iter().map(|b| b.object()[0]));
        }
        publisher.join().unwrap();
        if let Ok(ConnectStart::Answer { messages, .. }) =
            s.begin_connect(t0, false, None, &timing())
        {
            got.extend(messages.iter().map(|b| b.object()[0]));
        }
        assert_eq!(got, [0, 1, 2]);
    });
}

/// What reached the socket, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    /// A publisher wrote the whole frame.
    Direct(u8),
    /// A publisher wrote part of it; the task must write the rest next.
    Start(u8),
    Rest(u8),
    /// The task wrote a queued message.
    Task(u8),
}

/// A socket that takes messages whole, in part (every third) or not at all (every fifth).
struct ModelSocket {
    wire: ModelMutex<Vec<Wire>>,
    rest: ModelMutex<Option<u8>>,
}

impl DirectWrite for ModelSocket {
    fn try_write(&self, message: &Framed) -> DirectOutcome {
        let id = message.object()[0];
        match id % 5 {
            4 => DirectOutcome::NotWritten,
            1 => {
                self.wire.lock().unwrap().push(Wire::Start(id));
                *self.rest.lock().unwrap() = Some(id);
                DirectOutcome::Started
            }
            _ => {
                self.wire.lock().unwrap().push(Wire::Direct(id));
                DirectOutcome::Written
            }
        }
    }
}

/// Publishers writing to an idle WebSocket's socket themselves race the socket's task, which
/// takes queued messages and finishes partial writes (the steps `ws::run_on` takes, in its
/// order): nothing is written twice or lost, a partial frame is always finished before anything
/// else is written, and each publisher's messages reach the socket in order.
#[test]
fn direct_writes_racing_the_task_keep_frames_whole_and_in_order() {
    explore(|| {
        let t0 = Instant::now();
        let s = Arc::new(Session::new(
            Owner::default(),
            TransportKind::WebSocket,
            None,
            64,
            OverflowPolicy::DropOldest,
            &timing(),
            Some(t0),
        ));
        let socket = Arc::new(ModelSocket {
            wire: ModelMutex::new(Vec::new()),
            rest: ModelMutex::new(None),
        });
        let writer: Arc<dyn DirectWrite> = socket.clone();
        s.set_direct_writer(writer.clone());
        let publishers: Vec<_> = [0u8, 12]
            .into_iter()
            .map(|base| {
                let s = s.clone();
                thread::spawn(move || {
                    for i in base..base + 3 {
                        let mut budget = 1;
                        assert_eq!(
                            s.offer(&Framed::from_object(&[i]), false, &mut budget),
                            Offer::Queued
                        );
                    }
                })
            })
            .collect();
        // The socket's task, one turn of its loop at a time: finish a partial frame, write
        // what it took, then wait (idle) until the session has messages (polled twice: before
        // and after a wake-up), taking them.
        let mut cx = Context::from_waker(Waker::noop());
        let mut idle_told = false;
        let mut out: Vec<Framed> = Vec::new();
        let mut turn = |out: &mut Vec<Framed>, idle_told: &mut bool| {
            if std::mem::take(idle_told) {
                s.writer_busy(&writer);
            }
            if let Some(id) = socket.rest.lock().unwrap().take() {
                socket.wire.lock().unwrap().push(Wire::Rest(id));
            }
            for m in out.drain(..) {
                socket.wire.lock().unwrap().push(Wire::Task(m.object()[0]));
            }
            *idle_told = true;
            for _ in 0..2 {
                if socket.rest.lock().unwrap().is_some() {
                    return true;
                }
                if s.poll_messages_idle(&mut cx, &writer).is_ready() {
                    s.take_messages_into(out);
                    return true;
                }
                thread::yield_now();
            }
            false
        };
        for _ in 0..4 {
            turn(&mut out, &mut idle_told);
        }
        for p in publishers {
            p.join().unwrap();
        }
        // Whatever is left is taken now.
        while turn(&mut out, &mut idle_told) || !out.is_empty() {}
        let wire = socket.wire.lock().unwrap().clone();
        let mut ids = Vec::new();
        for (i, w) in wire.iter().enumerate() {
            match *w {
                Wire::Direct(id) | Wire::Task(id) => ids.push(id),
                Wire::Start(id) => {
                    assert_eq!(wire.get(i + 1), Some(&Wire::Rest(id)), "{wire:?}");
                    ids.push(id);
                }
                Wire::Rest(id) => assert_eq!(wire[i - 1], Wire::Start(id), "{wire:?}"),
            }
        }
        let first: Vec<u8> = ids.iter().copied().filter(|&i| i < 12).collect();
        let second: Vec<u8> = ids.iter().copied().filter(|&i| i >= 12).collect();
        assert_eq!(first, [0, 1, 2], "{wire:?}");
        assert_eq!(second, [12, 13, 14], "{wire:?}");
    });
}
